"""The job store in PostgreSQL: jobs, their images, and monotonic counters.

A job is ``queued`` until a worker claims it (``running``, with a lease token
and a heartbeat), then ``completed`` or ``failed``. A claim is one UPDATE, so a
message delivered twice renders once, and a job whose heartbeat has gone stale
(the worker died) may be claimed again. Counters for /metrics are updated in
the same transaction as the status change, so they never lose or double count.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg2
import psycopg2.extras
from psycopg2.extensions import connection as Connection

# Upper bounds of the cost histogram's buckets, in dollars (the cap is 3).
COST_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0)

_BUMP = """
INSERT INTO video_counters (name, label, value) VALUES (%s, %s, 1)
ON CONFLICT (name, label) DO UPDATE SET value = video_counters.value + 1
"""

_PUBLIC_COLUMNS = (
    "id, title, width, height, duration_seconds, fps, image_count, status, attempts, "
    "failure_stage, failure_reason, output_path, encoder, device, narration_provider, "
    "cost_dollars, cost_breakdown, estimated_cost_dollars, user_id, media_deleted_at, created_at, "
    "started_at, finished_at"
)


_USER = (
    "SELECT id, username, rate_limit_per_minute, extract(epoch FROM password_changed_at),"
    " password_hash FROM users WHERE NOT disabled AND "
)
_USER_BY_NAME = _USER + "username = %s"
_USER_BY_ID = _USER + "id = %s"


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
    user_id: int | None = None
    estimated_cost_dollars: float | None = None
    youtube_privacy: str | None = None  # upload to the user's channel when completed


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
    upload: bool = False  # a YouTube upload waits for the video


@dataclass(frozen=True)
class ClaimedUpload:
    job_id: uuid.UUID
    lease: uuid.UUID
    attempt: int
    privacy: str
    title: str
    script: str
    output_path: str
    user_id: int | None
    refresh_token_encrypted: str | None  # None: the user has no linked channel


_UPLOAD_COLUMNS = "job_id, privacy, status, attempts, not_before, youtube_video_id, error"


@dataclass(frozen=True)
class VideoMetrics:
    counters: dict[tuple[str, str], int]
    recent_costs: list[tuple[str, float]]
    in_flight: dict[str, int]
    # Seconds since the oldest queued job was created and the oldest running one started.
    oldest_age: dict[str, float] = field(default_factory=dict)


class Database:
    """Pooled connections to one PostgreSQL database.

    A connection goes back to the pool only when it is open and idle (its
    transaction ended); one idle for more than a second is pinged before use,
    and a dead one (PostgreSQL restarted) is dropped for a fresh connection,
    so the first statement after an outage succeeds like any other.
    """

    IDLE_PING_SECONDS = 1.0

    def __init__(self, url: str, connect_timeout: float = 3.0, max_idle: int = 8) -> None:
        self.url = url
        self.connect_timeout = max(1, int(connect_timeout))
        self.max_idle = max_idle
        self._idle: list[tuple[Connection, float]] = []
        self._lock = threading.Lock()

    def _connect(self) -> Connection:
        try:
            return psycopg2.connect(
                self.url,
                connect_timeout=self.connect_timeout,
                application_name="ytvideo",
            )
        except psycopg2.Error as exc:
            raise DatabaseError(f"cannot connect to PostgreSQL: {_one_line(exc)}") from exc

    def _checkout(self) -> Connection:
        while True:
            with self._lock:
                if not self._idle:
                    break
                conn, since = self._idle.pop()
            if time.monotonic() - since < self.IDLE_PING_SECONDS:
                return conn
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
                conn.rollback()
                return conn
            except psycopg2.Error:
                conn.close()
        return self._connect()

    def _checkin(self, conn: Connection) -> None:
        idle = psycopg2.extensions.TRANSACTION_STATUS_IDLE
        if not conn.closed and conn.get_transaction_status() == idle:
            with self._lock:
                if len(self._idle) < self.max_idle:
                    self._idle.append((conn, time.monotonic()))
                    return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            conn.close()

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        conn = self._checkout()
        try:
            with conn:  # commits on success, rolls back on error
                yield conn
        except psycopg2.Error as exc:
            raise DatabaseError(f"PostgreSQL statement failed: {_one_line(exc)}") from exc
        finally:
            self._checkin(conn)

    def ping(self) -> None:
        """A new connection and SELECT 1 (not a pooled one: the health checks ask
        whether PostgreSQL takes connections now)."""
        conn = self._connect()
        try:
            with conn, conn.cursor() as cur:
                cur.execute("SELECT 1")
        except psycopg2.Error as exc:
            raise DatabaseError(f"PostgreSQL statement failed: {_one_line(exc)}") from exc
        finally:
            conn.close()

    def ensure_schema(self) -> None:
        """Apply the pending compatible migrations (migrate.py)."""
        from .migrate import apply  # noqa: PLC0415  migrate imports this module

        apply(self)

    def insert_job(self, job: NewJob, images: list[bytes]) -> None:
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO video_jobs (id, title, script, width, height, duration_seconds,"
                " fps, queue, image_count, status, user_id, estimated_cost_dollars)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 'queued', %s, %s)",
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
                    job.user_id,
                    job.estimated_cost_dollars,
                ),
            )
            for position, data in enumerate(images):
                cur.execute(
                    "INSERT INTO video_job_images (job_id, position, data) VALUES (%s, %s, %s)",
                    (str(job.id), position, psycopg2.Binary(data)),
                )
            if job.youtube_privacy is not None:
                cur.execute(
                    "INSERT INTO youtube_uploads (job_id, privacy) VALUES (%s, %s)",
                    (str(job.id), job.youtube_privacy),
                )

    def delete_job(self, job_id: uuid.UUID) -> None:
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute("DELETE FROM video_jobs WHERE id = %s", (str(job_id),))

    def get_job(self, job_id: uuid.UUID, user_id: int | None = None) -> dict[str, Any] | None:
        """The job, or None; with ``user_id``, only that user's."""
        owner = " AND user_id = %s" if user_id is not None else ""
        params = (str(job_id), user_id) if user_id is not None else (str(job_id),)
        with (
            self.connection() as conn,
            conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur,
        ):
            cur.execute(
                "SELECT " + _PUBLIC_COLUMNS + " FROM video_jobs WHERE id = %s" + owner,  # noqa: S608  constant columns
                params,
            )
            row = cur.fetchone()
            rows = _with_uploads(cur, [dict(row)] if row else [])
        return rows[0] if rows else None

    def list_jobs(self, user_id: int, limit: int = 50) -> list[dict[str, Any]]:
        """The user's newest jobs first."""
        with (
            self.connection() as conn,
            conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur,
        ):
            cur.execute(
                "SELECT " + _PUBLIC_COLUMNS + " FROM video_jobs WHERE user_id = %s"  # noqa: S608  constant columns
                " ORDER BY created_at DESC LIMIT %s",
                (user_id, limit),
            )
            return _with_uploads(cur, [dict(r) for r in cur.fetchall()])

    def cancel_job(self, job_id: uuid.UUID, user_id: int) -> tuple[bool, str | None]:
        """Cancel the user's queued or running job: (cancelled now, its status; None: no
        such job). A running job's lease is cleared, so its worker's heartbeat fails and it
        stops without writing its video."""
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute(
                "UPDATE video_jobs SET status = 'cancelled', finished_at = now(), lease = NULL"
                " WHERE id = %s AND user_id = %s AND status IN ('queued', 'running')"
                " RETURNING status",
                (str(job_id), user_id),
            )
            if cur.fetchone():
                cur.execute(_BUMP, ("video_processing_failures_total", "cancelled"))
                return True, "cancelled"
            cur.execute(
                "SELECT status FROM video_jobs WHERE id = %s AND user_id = %s",
                (str(job_id), user_id),
            )
            row = cur.fetchone()
            return False, (row[0] if row else None)

    # --- users -----------------------------------------------------------------

    def ensure_user(self, username: str, password: str, rate_limit: int | None = None) -> str:
        """Create the user, or set its password when it no longer matches (and its rate
        limit, when given): what was done (created, updated, unchanged). For the admin
        account from the environment and ``python -m ytvideo user``."""
        from .auth import hash_password, verify_password  # noqa: PLC0415  the API's only

        with self.connection() as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT id, password_hash, rate_limit_per_minute FROM users"
                " WHERE username = %s FOR UPDATE",
                (username,),
            )
            row = cur.fetchone()
            if row is None:
                cur.execute(
                    "INSERT INTO users (username, password_hash, rate_limit_per_minute)"
                    " VALUES (%s, %s, %s) ON CONFLICT (username) DO NOTHING",
                    (username, hash_password(password), rate_limit),
                )
                return "created" if cur.rowcount == 1 else "unchanged"
            limit_changed = rate_limit is not None and rate_limit != row[2]
            if limit_changed:
                cur.execute(
                    "UPDATE users SET rate_limit_per_minute = %s WHERE id = %s",
                    (rate_limit, row[0]),
                )
            if verify_password(password, row[1]):
                return "updated" if limit_changed else "unchanged"
            cur.execute(
                "UPDATE users SET password_hash = %s, password_changed_at = now() WHERE id = %s",
                (hash_password(password), row[0]),
            )
            return "updated"

    def find_user(self, *, username: str | None = None, user_id: int | None = None):
        """(User, password hash) of an enabled user, or None."""
        from .auth import User  # noqa: PLC0415

        by_name = username is not None
        query = _USER_BY_NAME if by_name else _USER_BY_ID
        value = username if by_name else user_id
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute(query, (value,))
            row = cur.fetchone()
        if row is None:
            return None
        return User(int(row[0]), row[1], row[2], float(row[3])), row[4]

    def count_jobs(self) -> int:
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM video_jobs")
            return int(cur.fetchone()[0])

    def claim_job(
        self,
        job_id: uuid.UUID,
        worker: str,
        stale_seconds: float,
        max_attempts: int,
        deadline_seconds: float = 1800.0,
    ) -> ClaimedJob | None:
        """Take a queued job, or a running one whose worker stopped beating and
        that has attempts left (the reaper fails the others). The attempt must end
        within ``deadline_seconds``."""
        lease = uuid.uuid4()
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute(
                "UPDATE video_jobs SET status = 'running', attempts = attempts + 1,"
                " lease = %s, worker = %s, started_at = now(), heartbeat_at = now(),"
                " requeued_at = NULL, deadline_at = now() + make_interval(secs => %s)"
                " WHERE id = %s AND (status = 'queued' OR (status = 'running'"
                " AND heartbeat_at < now() - make_interval(secs => %s) AND attempts < %s))"
                " RETURNING attempts, title, script, width, height, duration_seconds, fps",
                (str(lease), worker, deadline_seconds, str(job_id), stale_seconds, max_attempts),
            )
            row = cur.fetchone()
            if row is None:
                return None
            cur.execute(
                "SELECT data FROM video_job_images WHERE job_id = %s ORDER BY position",
                (str(job_id),),
            )
            images = [bytes(r[0]) for r in cur.fetchall()]
            cur.execute("SELECT 1 FROM youtube_uploads WHERE job_id = %s", (str(job_id),))
            upload = cur.fetchone() is not None
        attempt, title, script, width, height, duration, fps = row
        return ClaimedJob(
            job_id, lease, attempt, title, script, width, height, duration, fps, images, upload
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
            # The cost histogram: cumulative buckets, and the sum in micro-dollars.
            for le in COST_BUCKETS:
                if cost_dollars <= le:
                    cur.execute(_BUMP, ("video_cost_bucket", f"{le:g}"))
            cur.execute(_BUMP, ("video_cost_bucket", "+Inf"))
            cur.execute(
                "INSERT INTO video_counters (name, label, value)"
                " VALUES ('video_cost_micros', '', %s)"
                " ON CONFLICT (name, label) DO UPDATE SET value = video_counters.value + %s",
                (round(cost_dollars * 1e6), round(cost_dollars * 1e6)),
            )
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

    def expire_media(self, older_than_days: float, limit: int = 500) -> list[str]:
        """Jobs finished more than ``older_than_days`` ago lose their uploaded images now;
        their video paths are returned (marked deleted) for the caller to remove."""
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute(
                "UPDATE video_jobs SET media_deleted_at = now() WHERE id IN ("
                " SELECT id FROM video_jobs WHERE status IN ('completed', 'failed', 'cancelled')"
                " AND media_deleted_at IS NULL"
                " AND finished_at < now() - make_interval(secs => %s) LIMIT %s)"
                " RETURNING id, output_path",
                (older_than_days * 86400, limit),
            )
            rows = cur.fetchall()
            if rows:
                cur.execute(
                    "DELETE FROM video_job_images WHERE job_id = ANY(%s::uuid[])",
                    ([str(r[0]) for r in rows],),
                )
        return [path for _, path in rows if path]

    def unqueued_jobs(self, older_than_seconds: float) -> list[tuple[uuid.UUID, str]]:
        """Queued jobs that may have no message: queued longer than ``older_than_seconds``
        and not sent again for as long (the API died between the insert and the publish,
        or Redis lost its queue). Marked as sent again; a duplicate message is harmless,
        the claim takes a job once."""
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute(
                "UPDATE video_jobs SET requeued_at = now()"
                " WHERE status = 'queued' AND created_at < now() - make_interval(secs => %s)"
                " AND (requeued_at IS NULL OR requeued_at < now() - make_interval(secs => %s))"
                " RETURNING id, queue",
                (older_than_seconds, older_than_seconds),
            )
            return [(uuid.UUID(str(job_id)), queue) for job_id, queue in cur.fetchall()]

    # --- YouTube ---------------------------------------------------------------

    def link_channel(self, user_id: int, refresh_token_encrypted: str) -> datetime:
        """Store (or replace) the user's channel; returns when it was linked."""
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO youtube_channels (user_id, refresh_token_encrypted) VALUES (%s, %s)"
                " ON CONFLICT (user_id) DO UPDATE SET refresh_token_encrypted ="
                " excluded.refresh_token_encrypted, linked_at = now() RETURNING linked_at",
                (user_id, refresh_token_encrypted),
            )
            return cur.fetchone()[0]

    def channel(self, user_id: int) -> tuple[str, datetime] | None:
        """The user's encrypted refresh token and when it was linked, or None."""
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT refresh_token_encrypted, linked_at FROM youtube_channels"
                " WHERE user_id = %s",
                (user_id,),
            )
            row = cur.fetchone()
            return (row[0], row[1]) if row else None

    def unlink_channel(self, user_id: int) -> int:
        """Forget the user's channel; their uploads not yet done fail. Returns how many."""
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute("DELETE FROM youtube_channels WHERE user_id = %s", (user_id,))
            cur.execute(
                "UPDATE youtube_uploads u SET status = 'failed', lease = NULL, updated_at = now(),"
                " error = 'the YouTube channel was unlinked before the upload'"
                " FROM video_jobs j WHERE j.id = u.job_id AND j.user_id = %s"
                " AND u.status IN ('waiting', 'uploading')",
                (user_id,),
            )
            return cur.rowcount

    def claim_upload(self, job_id: uuid.UUID, stale_seconds: float) -> ClaimedUpload | None:
        """Take the job's upload when its video is completed and still on disk, the
        upload is due (not_before passed) or its uploader stopped ``stale_seconds`` ago."""
        lease = uuid.uuid4()
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute(
                "UPDATE youtube_uploads u SET status = 'uploading', lease = %s,"
                " attempts = u.attempts + 1, started_at = now(), updated_at = now()"
                " FROM video_jobs j WHERE u.job_id = %s AND j.id = u.job_id"
                " AND j.status = 'completed' AND j.media_deleted_at IS NULL"
                " AND ((u.status = 'waiting' AND u.not_before <= now())"
                " OR (u.status = 'uploading' AND u.started_at < now() - make_interval(secs => %s)))"
                " RETURNING u.attempts, u.privacy, j.title, j.script, j.output_path, j.user_id",
                (str(lease), str(job_id), stale_seconds),
            )
            row = cur.fetchone()
            if row is None:
                return None
            attempt, privacy, title, script, output_path, user_id = row
            cur.execute(
                "SELECT refresh_token_encrypted FROM youtube_channels WHERE user_id = %s",
                (user_id,),
            )
            token = cur.fetchone()
        return ClaimedUpload(
            job_id,
            lease,
            attempt,
            privacy,
            title,
            script,
            output_path,
            user_id,
            token[0] if token else None,
        )

    def _end_upload(self, job_id: uuid.UUID, lease: uuid.UUID, sql: str, params: tuple) -> bool:
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute(
                f"UPDATE youtube_uploads SET lease = NULL, updated_at = now(), {sql}"  # noqa: S608  constant SQL
                " WHERE job_id = %s AND lease = %s AND status = 'uploading' RETURNING status",
                (*params, str(job_id), str(lease)),
            )
            row = cur.fetchone()
            if row:
                cur.execute(_BUMP, ("youtube_uploads_total", row[0]))
            return row is not None

    def finish_upload(self, job_id: uuid.UUID, lease: uuid.UUID, video_id: str) -> bool:
        return self._end_upload(
            job_id,
            lease,
            "status = 'uploaded', youtube_video_id = %s, published_at = now(), error = NULL",
            (video_id,),
        )

    def reschedule_upload(
        self, job_id: uuid.UUID, lease: uuid.UUID, not_before: datetime, error: str
    ) -> bool:
        """Back to waiting until ``not_before`` (a quota that resets, a backoff)."""
        return self._end_upload(
            job_id, lease, "status = 'waiting', not_before = %s, error = %s", (not_before, error)
        )

    def fail_upload(self, job_id: uuid.UUID, lease: uuid.UUID, error: str) -> bool:
        return self._end_upload(job_id, lease, "status = 'failed', error = %s", (error,))

    def due_uploads(
        self, older_than_seconds: float, stale_seconds: float
    ) -> list[tuple[uuid.UUID, str]]:
        """Uploads to publish again: due and untouched for ``older_than_seconds`` (their
        message was lost, or their quota wait is over), or held by an uploader silent
        for ``stale_seconds``. Uploads of jobs that ended without a video fail here."""
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute(
                "UPDATE youtube_uploads u SET status = 'failed', lease = NULL,"
                " updated_at = now(), error = 'the video job ended ' || j.status"
                " || CASE WHEN j.media_deleted_at IS NULL THEN ''"
                " ELSE ' and its video was deleted' END"
                " FROM video_jobs j WHERE j.id = u.job_id AND u.status = 'waiting'"
                " AND (j.status IN ('failed', 'cancelled') OR j.media_deleted_at IS NOT NULL)",
            )
            cur.execute(
                "UPDATE youtube_uploads u SET updated_at = now() FROM video_jobs j"
                " WHERE j.id = u.job_id AND j.status = 'completed' AND (("
                " u.status = 'waiting' AND u.not_before <= now()"
                " AND u.updated_at < now() - make_interval(secs => %s))"
                " OR (u.status = 'uploading' AND u.started_at < now() - make_interval(secs => %s)"
                " AND u.updated_at < now() - make_interval(secs => %s)))"
                " RETURNING u.job_id, j.queue",
                (older_than_seconds, stale_seconds, older_than_seconds),
            )
            return [(uuid.UUID(str(job_id)), queue) for job_id, queue in cur.fetchall()]

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


def _with_uploads(cur: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each job row with its YouTube upload (``youtube``: a dict, or None)."""
    if rows:
        cur.execute(
            "SELECT " + _UPLOAD_COLUMNS + " FROM youtube_uploads WHERE job_id = ANY(%s::uuid[])",  # noqa: S608  constant columns
            ([str(r["id"]) for r in rows],),
        )
        uploads = {str(u["job_id"]): dict(u) for u in cur.fetchall()}
        for row in rows:
            row["youtube"] = uploads.get(str(row["id"]))
    return rows


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
