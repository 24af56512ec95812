"""No lost or wedged jobs: each failure is made for real (a killed API, a Redis that
lost its queue, a worker that lost its lease, a broken ffmpeg, a deadline)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from ytvideo_emulator import SpeechEmulator
from ytvideo_services import APP_DIR, PostgresServer, RedisServer, Stack, wait_for

SMALL = {"title": "Robust", "script": "Nothing is lost.", "resolution": "192x108", "duration": 1.0}


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def sweeping(tmp_path: Path, postgres: PostgresServer, own_redis: RedisServer) -> Iterator[Stack]:
    """An API on its own Redis whose workers publish again what waited 2 s."""
    env = {
        "DATABASE_URL": postgres.url,
        "REDIS_URL": own_redis.url,
        "VIDEO_DEFAULT_FPS": "10",
        "JOB_QUEUE_SWEEP_SECONDS": "2",
        "JOB_REQUEUE_INTERVAL_SECONDS": "0.5",
    }
    service = Stack(f"sweep{os.getpid()}", tmp_path / "stack", env)
    try:
        service.start_api()
        yield service
    finally:
        service.stop()


def test_a_job_whose_api_died_between_insert_and_enqueue_is_swept_and_done(
    sweeping: Stack, own_redis: RedisServer, postgres: PostgresServer
) -> None:
    own_redis.stop()  # the publish now retries, so the insert is seen before it fails
    before = {r[0] for r in postgres.query("SELECT id::text FROM video_jobs")}
    answer: dict = {}
    post = threading.Thread(
        target=lambda: answer.setdefault("r", _post_quietly(sweeping)), daemon=True
    )
    post.start()
    job_id = wait_for(
        "the job row",
        lambda: next(
            (r[0] for r in postgres.query("SELECT id::text FROM video_jobs") if r[0] not in before),
            None,
        ),
        30,
        sweeping.logs,
    )
    sweeping.api.kill()  # SIGKILL: the API never learns the publish failed
    own_redis.start()
    assert postgres.query("SELECT status FROM video_jobs WHERE id = %s", (job_id,)) == [("queued",)]
    sweeping.start_api()
    sweeping.start_worker()
    job = sweeping.wait_finished(job_id, timeout=120)
    assert job["status"] == "completed", f"{job}\n{sweeping.logs()}"
    assert "publishing its message again" in sweeping.logs()


def _post_quietly(stack: Stack):
    try:
        return stack.client.post("/api/videos/generate", json=SMALL)
    except Exception as exc:  # the API is killed mid-request  # noqa: BLE001
        return exc


def test_jobs_queued_when_redis_lost_its_queue_are_done(
    sweeping: Stack, own_redis: RedisServer
) -> None:
    ids = [sweeping.generate(**SMALL).json()["id"] for _ in range(3)]
    own_redis.stop()  # no persistence here: the three messages are gone
    own_redis.start()
    sweeping.start_worker()
    for job_id in ids:
        job = sweeping.wait_finished(job_id, timeout=120)
        assert job["status"] == "completed", f"{job}\n{sweeping.logs()}"


def test_a_worker_with_a_broken_ffmpeg_refuses_to_consume(sweeping: Stack, tmp_path: Path) -> None:
    broken = tmp_path / "ffmpeg"
    broken.write_text("#!/bin/sh\necho 'ffmpeg: cannot load libavcodec' >&2\nexit 1\n")
    broken.chmod(0o755)
    job_id = sweeping.generate(**SMALL).json()["id"]
    done = subprocess.run(
        [sys.executable, "-m", "ytvideo", "worker"],
        cwd=APP_DIR,
        env=sweeping.env | {"FFMPEG_BINARY": str(broken)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 3, done.stdout + done.stderr
    assert "not consuming, the render tools are broken" in done.stderr
    assert sweeping.client.get(f"/api/videos/{job_id}").json()["status"] == "queued"


def test_a_worker_that_lost_its_lease_stops_and_leaves_the_new_owners_file(
    cloud_stack: Stack, speech_api: SpeechEmulator, postgres: PostgresServer
) -> None:
    speech_api.state.hold = threading.Event()  # narration hangs until released
    first = cloud_stack.start_worker()
    response = cloud_stack.generate(**SMALL)
    job_id = response.json()["id"]
    assert speech_api.state.received.wait(120), cloud_stack.logs()
    assert first.process is not None
    os.killpg(first.process.pid, signal.SIGSTOP)  # a stalled worker: no heartbeat
    try:
        speech_api.state.hold.set()
        cloud_stack.start_worker()  # its reaper takes the stale job over
        job = cloud_stack.wait_finished(job_id)
        assert job["status"] == "completed", f"{job}\n{cloud_stack.logs()}"
        assert job["attempts"] == 2
        final = Path(job["output_path"])
        owner = final.stat()
    finally:
        os.killpg(first.process.pid, signal.SIGCONT)
    wait_for(
        "the first worker stopped",
        lambda: f"job {job_id}: stopped, the job's lease was lost" in first.output(),
        60,
        cloud_stack.logs,
    )
    after = final.stat()
    assert (after.st_ino, after.st_mtime_ns) == (owner.st_ino, owner.st_mtime_ns)
    assert list(final.parent.glob(f".{job_id}.*partial*")) == []
    assert cloud_stack.client.get(f"/api/videos/{job_id}").json()["attempts"] == 2


def test_a_job_past_its_deadline_is_stopped_and_failed(
    tmp_path: Path, postgres: PostgresServer, own_redis: RedisServer
) -> None:
    env = {
        "DATABASE_URL": postgres.url,
        "REDIS_URL": own_redis.url,
        "VIDEO_DEFAULT_FPS": "30",
        "JOB_DEADLINE_SECONDS": "3",
    }
    service = Stack(f"deadline{os.getpid()}", tmp_path / "stack", env)
    try:
        service.start_api()
        service.start_worker()
        answer = service.generate(**SMALL | {"resolution": "1280x720", "duration": 120})
        job = service.wait_finished(answer.json()["id"], timeout=120)
    finally:
        service.stop()
    assert job["status"] == "failed", job
    assert job["failure"]["stage"] == "deadline"
    assert "JOB_DEADLINE_SECONDS" in job["failure"]["reason"]
    assert list((tmp_path / "stack/media").glob("*.mp4")) == []


def test_media_past_retention_are_deleted_and_the_file_is_gone(
    stack: Stack, postgres: PostgresServer
) -> None:
    job_id = stack.generate(**SMALL | {"images": [_png()]}).json()["id"]
    job = stack.wait_finished(job_id)
    assert job["status"] == "completed", job
    video = Path(job["output_path"])
    assert video.is_file()
    postgres.query(
        "UPDATE video_jobs SET finished_at = now() - interval '31 days' WHERE id = %s", (job_id,)
    )
    # The session stack's worker sweeps and checks retention every second.
    wait_for("the retention sweep", lambda: not video.exists(), 30, stack.logs)
    assert postgres.query("SELECT count(*) FROM video_job_images WHERE job_id = %s", (job_id,)) == [
        (0,)
    ]
    assert stack.client.get(f"/api/videos/{job_id}").json()["media_deleted_at"]
    assert stack.client.get(f"/api/videos/{job_id}/file").status_code == 410


def _png() -> str:
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (128, 72), (200, 40, 40)).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()
