"""The job store in PostgreSQL: jobs, their images, and monotonic counters.

A job is ``queued`` until a worker claims it (``running``, with a lease token
and a heartbeat), then ``completed`` or ``failed``. A claim is one UPDATE, so a
message delivered twice renders once, and a job whose heartbeat has gone stale
(the worker died) may be claimed again. Counters for /metrics are updated in
the same transaction as the status change, so they never lose or double count.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg2
import psycopg2.extras
from psycopg2.extensions import connection as Connection

_SCHEMA_LOCK = 0x79747669  # pg_advisory_xact_lock key: "ytvi"

SCHEMA = """
CREATE TABLE IF NOT EXISTS video_jobs (
    id uuid PRIMARY KEY,
    title text NOT NULL,
    script text NOT NULL,
    width integer NOT NULL,
    height integer NOT NULL,
    duration_seconds double precision NOT NULL,
    fps integer NOT NULL,
    queue text NOT NULL,
    image_count integer NOT NULL DEFAULT 0,
    status text NOT NULL
        CHECK (status IN ('queued', 'running', 'completed', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    lease uuid,
    worker text,
    failure_stage text,
    failure_reason text,
    output_path text,
    encoder text,
    device text,
    narration_provider text,
    cost_dollars double precision,
    cost_breakdown jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    heartbeat_at timestamptz,
    requeued_at timestamptz,
    finished_at timestamptz
);
CREATE INDEX IF NOT EXISTS video_jobs_running_heartbeat
    ON video_jobs (heartbeat_at) WHERE status = 'running';
CREATE INDEX IF NOT EXISTS video_jobs_completed_finished
    ON video_jobs (finished_at) WHERE status = 'completed';
CREATE TABLE IF NOT EXISTS video_job_images (
    job_id uuid NOT NULL REFERENCES video_jobs (id) ON DELETE CASCADE,
    position integer NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (job_id, position)
);
CREATE TABLE IF NOT EXISTS video_counters (
    name text NOT NULL,
    label text NOT NULL DEFAULT '',
    value bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (name, label)
);
"""

_BUMP = """
INSERT INTO video_counters (name, label, value) VALUES (%s, %s, 1)
ON CONFLICT (name, label) DO UPDATE SET value = video_counters.value + 1
"""

_PUBLIC_COLUMNS = (
    "id, title, width, height, duration_seconds, fps, image_count, status, attempts, "
    "failure_stage, failure_reason, output_path, encoder, device, narration_provider, "
    "cost_dollars, cost_breakdown, created_at, started_at, finished_at"
)


class DatabaseError(RuntimeError):
    """PostgreSQL could not be reached or refused a statement."""


@dataclass(frozen=True)
class NewJob:
    id: uuid.UUID
    title: str
    script: str
    width: int
    height: int
    duration_seconds: float
    fps: int
    queue: str


@dataclass(frozen=True)
class ClaimedJob:
    id: uuid.UUID
    lease: uuid.UUID
    attempt: int
    title: str
    script: str
    width: int
    height: int
    duration_seconds: float
    fps: int
    images: list[bytes]


@dataclass(frozen=True)
class VideoMetrics:
    counters: dict[tuple[str, str], int]
    recent_costs: list[tuple[str, float]]
    in_flight: dict[str, int]
    # Seconds since the oldest queued job was created and the oldest running one started.
    oldest_age: dict[str, float] = field(default_factory=dict)


class Database:
    """Short-lived connections to one PostgreSQL database.

    A connection per operation keeps the service honest about outages: the
    first statement after PostgreSQL comes back simply succeeds.
    """

    def __init__(self, url: str, connect_timeout: float = 3.0) -> None:
        self.url = url
        self.connect_timeout = max(1, int(connect_timeout))

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        try:
            conn = psycopg2.connect(
                self.url,
                connect_timeout=self.connect_timeout,
                application_name="ytvideo",
            )
        except psycopg2.Error as exc:
            raise DatabaseError(f"cannot connect to PostgreSQL: {_one_line(exc)}") from exc
        try:
            with conn:  # commits on success, rolls back on error
                yield conn
        except psycopg2.Error as exc:
            raise DatabaseError(f"PostgreSQL statement failed: {_one_line(exc)}") from exc
        finally:
            conn.close()

    def ping(self) -> None:
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")

    def ensure_schema(self) -> None:
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            cur.execute(SCHEMA)

    def insert_job(self, job: NewJob, images: list[bytes]) -> None:
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO video_jobs (id, title, script, width, height, duration_seconds,"
                " fps, queue, image_count, status)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 'queued')",
                (
                    str(job.id),
                    job.title,
                    job.script,
                    job.width,
                    job.height,
                    job.duration_seconds,
                    job.fps,
                    job.queue,
                    len(images),
                ),
            )
            for position, data in enumerate(images):
                cur.execute(
                    "INSERT INTO video_job_images (job_id, position, data) VALUES (%s, %s, %s)",
                    (str(job.id), position, psycopg2.Binary(data)),
                )

    def delete_job(self, job_id: uuid.UUID) -> None:
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute("DELETE FROM video_jobs WHERE id = %s", (str(job_id),))

    def get_job(self, job_id: uuid.UUID) -> dict[str, Any] | None:
        with (
            self.connection() as conn,
            conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur,
        ):
            cur.execute(
                "SELECT " + _PUBLIC_COLUMNS + " FROM video_jobs WHERE id = %s",  # noqa: S608  constant columns
                (str(job_id),),
            )
            row = cur.fetchone()
        return dict(row) if row else None

    def count_jobs(self) -> int:
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM video_jobs")
            return int(cur.fetchone()[0])

    def claim_job(
        self, job_id: uuid.UUID, worker: str, stale_seconds: float, max_attempts: int
    ) -> ClaimedJob | None:
        """Take a queued job, or a running one whose worker stopped beating and
        that has attempts left (the reaper fails the others)."""
        lease = uuid.uuid4()
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute(
                "UPDATE video_jobs SET status = 'running', attempts = attempts + 1,"
                " lease = %s, worker = %s, started_at = now(), heartbeat_at = now(),"
                " requeued_at = NULL"
                " WHERE id = %s AND (status = 'queued' OR (status = 'running'"
                " AND heartbeat_at < now() - make_interval(secs => %s) AND attempts < %s))"
                " RETURNING attempts, title, script, width, height, duration_seconds, fps",
                (str(lease), worker, str(job_id), stale_seconds, max_attempts),
            )
            row = cur.fetchone()
            if row is None:
                return None
            cur.execute(
                "SELECT data FROM video_job_images WHERE job_id = %s ORDER BY position",
                (str(job_id),),
            )
            images = [bytes(r[0]) for r in cur.fetchall()]
        attempt, title, script, width, height, duration, fps = row
        return ClaimedJob(
            job_id, lease, attempt, title, script, width, height, duration, fps, images
        )

    def heartbeat(self, job_id: uuid.UUID, lease: uuid.UUID) -> bool:
        """Refresh the lease; False when another worker has taken the job over."""
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute(
                "UPDATE video_jobs SET heartbeat_at = now()"
                " WHERE id = %s AND lease = %s AND status = 'running'",
                (str(job_id), str(lease)),
            )
            return cur.rowcount == 1

    def complete_job(
        self,
        job_id: uuid.UUID,
        lease: uuid.UUID,
        *,
        output_path: str,
        encoder: str,
        device: str,
        narration_provider: str,
        cost_dollars: float,
        cost_breakdown: dict[str, Any],
    ) -> bool:
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute(
                "UPDATE video_jobs SET status = 'completed', finished_at = now(), lease = NULL,"
                " output_path = %s, encoder = %s, device = %s, narration_provider = %s,"
                " cost_dollars = %s, cost_breakdown = %s,"
                " failure_stage = NULL, failure_reason = NULL"
                " WHERE id = %s AND lease = %s AND status = 'running'",
                (
                    output_path,
                    encoder,
                    device,
                    narration_provider,
                    cost_dollars,
                    psycopg2.extras.Json(cost_breakdown),
                    str(job_id),
                    str(lease),
                ),
            )
            if cur.rowcount != 1:
                return False
            cur.execute(_BUMP, ("videos_processed_total", ""))
            return True

    def fail_job(
        self,
        job_id: uuid.UUID,
        lease: uuid.UUID,
        *,
        stage: str,
        reason: str,
        cost_breakdown: dict[str, Any] | None = None,
    ) -> bool:
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute(
                "UPDATE video_jobs SET status = 'failed', finished_at = now(), lease = NULL,"
                " failure_stage = %s, failure_reason = %s, cost_breakdown = %s"
                " WHERE id = %s AND lease = %s AND status = 'running'",
                (
                    stage,
                    reason[:4000],
                    psycopg2.extras.Json(cost_breakdown) if cost_breakdown else None,
                    str(job_id),
                    str(lease),
                ),
            )
            if cur.rowcount != 1:
                return False
            cur.execute(_BUMP, ("video_processing_failures_total", stage))
            return True

    def stale_jobs(
        self, stale_seconds: float, max_attempts: int
    ) -> tuple[list[tuple[uuid.UUID, str]], list[uuid.UUID]]:
        """Find running jobs whose worker stopped beating.

        Jobs with attempts left are returned with their queue for a new message (the claim does
        the takeover, so nothing changes here until a worker picks one up);
        those out of attempts are marked failed with stage ``worker_lost``.
        """
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute(
                "UPDATE video_jobs SET status = 'failed', finished_at = now(), lease = NULL,"
                " failure_stage = 'worker_lost',"
                " failure_reason = 'the worker stopped while rendering (' || attempts"
                " || ' attempts, last on ' || coalesce(worker, 'unknown') || ');'"
                " || ' giving up after JOB_MAX_ATTEMPTS'"
                " WHERE status = 'running' AND heartbeat_at < now() - make_interval(secs => %s)"
                " AND attempts >= %s RETURNING id",
                (stale_seconds, max_attempts),
            )
            failed = [uuid.UUID(str(r[0])) for r in cur.fetchall()]
            for _ in failed:
                cur.execute(_BUMP, ("video_processing_failures_total", "worker_lost"))
            cur.execute(
                "UPDATE video_jobs SET requeued_at = now()"
                " WHERE status = 'running' AND heartbeat_at < now() - make_interval(secs => %s)"
                " AND (requeued_at IS NULL OR requeued_at < now() - make_interval(secs => %s))"
                " RETURNING id, queue",
                (stale_seconds, stale_seconds),
            )
            retry = [(uuid.UUID(str(job_id)), queue) for job_id, queue in cur.fetchall()]
        return retry, failed

    def video_metrics(self, window_seconds: int) -> VideoMetrics:
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute("SELECT name, label, value FROM video_counters")
            counters = {(name, label): int(value) for name, label, value in cur.fetchall()}
            cur.execute(
                "SELECT id, cost_dollars FROM video_jobs WHERE status = 'completed'"
                " AND finished_at > now() - make_interval(secs => %s)"
                " ORDER BY finished_at DESC LIMIT 200",
                (window_seconds,),
            )
            costs = [(str(job_id), float(cost or 0.0)) for job_id, cost in cur.fetchall()]
            cur.execute(
                "SELECT status, count(*),"
                " extract(epoch FROM now() - min(CASE status WHEN 'running'"
                " THEN COALESCE(started_at, created_at) ELSE created_at END))"
                " FROM video_jobs WHERE status IN ('queued', 'running') GROUP BY status"
            )
            in_flight = {"queued": 0, "running": 0}
            oldest_age = {"queued": 0.0, "running": 0.0}
            for status, n, age in cur.fetchall():
                in_flight[status] = int(n)
                oldest_age[status] = max(float(age or 0.0), 0.0)
        return VideoMetrics(counters, costs, in_flight, oldest_age)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
