"""The job store's claim and lease rules, against the real PostgreSQL."""

from __future__ import annotations

import uuid

import pytest
from ytvideo.db import Database, DatabaseError, NewJob
from ytvideo_services import PostgresServer, free_port


@pytest.fixture
def db(postgres: PostgresServer) -> Database:
    database = Database(postgres.url)
    database.ensure_schema()
    database.ensure_schema()  # idempotent
    return database


def new_job(db: Database, images: list[bytes] | None = None) -> uuid.UUID:
    job = NewJob(uuid.uuid4(), "T", "S.", 128, 72, 1.0, 10, "db-test")
    db.insert_job(job, images or [])
    return job.id


def test_a_second_delivery_does_not_render_twice(db: Database) -> None:
    job_id = new_job(db, [b"one", b"two"])
    claimed = db.claim_job(job_id, "w1", stale_seconds=60, max_attempts=3)
    assert claimed is not None
    assert claimed.attempt == 1
    assert claimed.images == [b"one", b"two"]
    assert db.claim_job(job_id, "w2", stale_seconds=60, max_attempts=3) is None


def test_a_stale_job_is_taken_over_and_the_old_lease_is_void(
    db: Database, postgres: PostgresServer
) -> None:
    job_id = new_job(db)
    old = db.claim_job(job_id, "w1", stale_seconds=60, max_attempts=3)
    postgres.query(
        "UPDATE video_jobs SET heartbeat_at = now() - interval '5 minutes' WHERE id = %s",
        (str(job_id),),
    )
    (retry, failed) = db.stale_jobs(stale_seconds=60, max_attempts=3)
    assert (job_id, "db-test") in retry
    assert job_id not in failed
    new = db.claim_job(job_id, "w2", stale_seconds=60, max_attempts=3)
    assert new is not None
    assert new.attempt == 2
    assert not db.heartbeat(job_id, old.lease)
    assert not db.fail_job(job_id, old.lease, stage="render", reason="late")
    assert db.heartbeat(job_id, new.lease)
    assert db.complete_job(
        job_id,
        new.lease,
        output_path="/x.mp4",
        encoder="libx264",
        device="cpu",
        narration_provider="espeak-ng",
        cost_dollars=0.01,
        cost_breakdown={"total_dollars": 0.01},
    )
    assert db.get_job(job_id)["status"] == "completed"


def test_counters_move_with_the_status_change(db: Database) -> None:
    before = db.video_metrics(3600).counters
    job_id = new_job(db)
    claimed = db.claim_job(job_id, "w1", stale_seconds=60, max_attempts=3)
    assert db.fail_job(job_id, claimed.lease, stage="encode", reason="ffmpeg said no")
    after = db.video_metrics(3600).counters
    key = ("video_processing_failures_total", "encode")
    assert after.get(key, 0) == before.get(key, 0) + 1
    row = db.get_job(job_id)
    assert (row["failure_stage"], row["failure_reason"]) == ("encode", "ffmpeg said no")


def test_an_unreachable_database_is_a_clear_error() -> None:
    dead = Database(f"postgresql://u@127.0.0.1:{free_port()}/x", connect_timeout=1)
    with pytest.raises(DatabaseError, match="cannot connect to PostgreSQL"):
        dead.ping()


def test_the_oldest_queued_and_running_jobs_give_their_age(db: Database) -> None:
    queued, running = new_job(db), new_job(db)
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE video_jobs SET created_at = now() - interval '10 minutes' WHERE id = %s",
            (str(queued),),
        )
    assert db.claim_job(running, "w1", stale_seconds=60, max_attempts=3)
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE video_jobs SET started_at = now() - interval '2 minutes' WHERE id = %s",
            (str(running),),
        )
    age = db.video_metrics(3600).oldest_age
    assert 600 <= age["queued"] < 660, age
    assert 120 <= age["running"] < 180, age
    for job_id in (queued, running):
        with db.connection() as conn, conn.cursor() as cur:
            cur.execute("DELETE FROM video_jobs WHERE id = %s", (str(job_id),))
