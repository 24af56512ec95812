"""The Celery worker: claims a job, renders it, records the outcome and cost.

A job is never lost to a dying worker. While it renders, a heartbeat thread
refreshes the job's lease in PostgreSQL; a reaper thread in every worker looks
for running jobs whose heartbeat is older than JOB_STALE_SECONDS and queues
them again (the claim takes them over), until JOB_MAX_ATTEMPTS, after which the
job fails with stage ``worker_lost``. Independently, ``acks_late`` with
``task_reject_on_worker_lost`` keeps the message itself in Redis.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from celery import Celery, Task
from celery.signals import worker_ready, worker_shutdown

from .config import Settings
from .db import ClaimedUpload, Database, DatabaseError
from .queue import (
    RENDER_TASK,
    UPLOAD_TASK,
    QueueError,
    enqueue_render,
    enqueue_upload,
    make_celery,
)
from .youtube import (
    QuotaExceeded,
    TokenCipher,
    TokenCipherError,
    YouTubeAuthError,
    YouTubeError,
    YouTubeSettings,
    channel_context,
    quota_reset_after,
    safe_text,
    upload_video,
)

log = logging.getLogger(__name__)


class _Heartbeat(threading.Thread):
    def __init__(self, db: Database, job_id: uuid.UUID, lease: uuid.UUID, every: float) -> None:
        super().__init__(name=f"heartbeat-{job_id}", daemon=True)
        self.db, self.job_id, self.lease, self.every = db, job_id, lease, every
        self.stopped = threading.Event()
        self.lost = False

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            try:
                if not self.db.heartbeat(self.job_id, self.lease):
                    self.lost = True
                    log.warning("job %s was taken over by another worker", self.job_id)
                    return
            except DatabaseError as exc:
                log.warning("heartbeat for job %s failed: %s", self.job_id, exc)

    def stop(self) -> None:
        self.stopped.set()
        self.join()


class Reaper(threading.Thread):
    """Re-queues jobs whose worker died, and queued jobs whose message may be lost;
    fails those out of attempts."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        celery: Celery,
        youtube: YouTubeSettings | None = None,
    ) -> None:
        super().__init__(name="stale-job-reaper", daemon=True)
        self.settings, self.db, self.celery = settings, db, celery
        self.youtube = youtube or YouTubeSettings.from_env({})
        self.stopped = threading.Event()
        self._media_checked = -float("inf")

    def sweep(self) -> tuple[list[tuple[uuid.UUID, str]], list[uuid.UUID]]:
        retry, failed = self.db.stale_jobs(
            self.settings.stale_job_seconds, self.settings.max_attempts
        )
        for job_id in failed:
            log.error("job %s failed: its worker died %d times", job_id, self.settings.max_attempts)
        for job_id, queue in retry:
            log.warning("job %s: its worker stopped beating; queueing it again", job_id)
            enqueue_render(self.celery, queue, job_id)
        unqueued = self.db.unqueued_jobs(self.settings.queue_sweep_seconds)
        for job_id, queue in unqueued:
            log.warning(
                "job %s: queued for over %g s; publishing its message again",
                job_id,
                self.settings.queue_sweep_seconds,
            )
            enqueue_render(self.celery, queue, job_id)
        # Uploads whose message was lost, whose quota wait is over, or whose uploader died.
        for job_id, queue in self.db.due_uploads(
            self.settings.queue_sweep_seconds, self.youtube.upload_stale_seconds
        ):
            log.info("job %s: its YouTube upload is due; publishing it", job_id)
            enqueue_upload(self.celery, queue, job_id)
        self.expire_media()
        return retry + unqueued, failed

    def expire_media(self) -> list[Path]:
        """Delete the videos (and images) of jobs past MEDIA_RETENTION_DAYS, once every
        MEDIA_RETENTION_CHECK_SECONDS; only files under MEDIA_DIR are touched."""
        now = time.monotonic()
        if now - self._media_checked < self.settings.media_retention_check_seconds:
            return []
        self._media_checked = now
        media = self.settings.media_dir.resolve()
        removed = []
        for name in self.db.expire_media(self.settings.media_retention_days):
            path = Path(name).resolve()
            if media not in path.parents:
                log.warning("retention: %s is not under MEDIA_DIR %s; left alone", path, media)
                continue
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("retention: cannot delete %s: %s", path, exc)
                continue
            removed.append(path)
        if removed:
            log.info(
                "retention: deleted %d videos older than %g days",
                len(removed),
                self.settings.media_retention_days,
            )
        return removed

    def run(self) -> None:
        while not self.stopped.wait(self.settings.requeue_interval_seconds):
            try:
                self.sweep()
            except (DatabaseError, QueueError) as exc:
                log.warning("stale-job sweep failed, will retry: %s", exc)


class RenderWorker:
    """Per-process state: settings, database, and the tools found on first use."""

    def __init__(self, settings: Settings, youtube: YouTubeSettings | None = None) -> None:
        self.settings = settings
        self.db = Database(settings.database_url, settings.check_timeout_seconds)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self._tools: Any = None
        self.celery: Celery | None = None  # where a finished job's upload is published
        self.youtube = youtube or YouTubeSettings.from_env()
        # A key that is set but malformed stops the worker here, not at the first upload.
        self.cipher = TokenCipher.from_settings(self.youtube) if self.youtube.token_key else None

    def tools(self) -> Any:
        if self._tools is None:
            from .render.pipeline import RenderTools  # torch loads only in the worker

            self._tools = RenderTools.detect(self.settings)
            log.info(
                "render tools: device=%s encoder=%s narration=%s",
                self._tools.device,
                self._tools.encoder.name,
                self._tools.narrator.name,
            )
        return self._tools

    def process(self, job_id: uuid.UUID) -> str:
        """Render one job; returns its final status (or ``skipped``)."""
        from .render.pipeline import PipelineError, RenderSpec, Stopped, render_video

        job = self.db.claim_job(
            job_id,
            self.name,
            self.settings.stale_job_seconds,
            self.settings.max_attempts,
            self.settings.job_deadline_seconds,
        )
        if job is None:
            log.info("job %s is not waiting (done, or rendering elsewhere); skipping", job_id)
            return "skipped"
        log.info("job %s: attempt %d on %s", job_id, job.attempt, self.name)
        beat = _Heartbeat(self.db, job.id, job.lease, self.settings.heartbeat_seconds)
        beat.start()
        deadline = time.monotonic() + self.settings.job_deadline_seconds

        def stop_reason() -> str | None:
            if beat.lost:
                return "the job's lease was lost (another worker took it over, or it was cancelled)"
            if time.monotonic() > deadline:
                return (
                    f"the job passed its deadline of {self.settings.job_deadline_seconds:g} s "
                    "(JOB_DEADLINE_SECONDS)"
                )
            return None

        try:
            spec = RenderSpec(
                job.id,
                job.title,
                job.script,
                job.width,
                job.height,
                job.duration_seconds,
                job.fps,
                job.images,
                stop_reason=stop_reason,
            )
            result = render_video(spec, self.settings, self.tools())
        except Stopped as exc:
            beat.stop()
            if exc.stage == "lease":  # the job is someone else's now: record nothing
                log.warning("job %s: stopped, %s", job_id, exc.message)
                return "abandoned"
            log.error("job %s: stopped, %s", job_id, exc.message)
            self.db.fail_job(job.id, job.lease, stage=exc.stage, reason=exc.message)
            return "failed"
        except PipelineError as exc:
            beat.stop()
            log.error("job %s failed in %s: %s", job_id, exc.stage, exc.message)
            self.db.fail_job(job.id, job.lease, stage=exc.stage, reason=exc.message)
            return "failed"
        except Exception as exc:
            beat.stop()
            log.exception("job %s failed unexpectedly", job_id)
            self.db.fail_job(
                job.id, job.lease, stage="internal", reason=f"{type(exc).__name__}: {exc}"
            )
            return "failed"
        beat.stop()
        recorded = self.db.complete_job(
            job.id,
            job.lease,
            output_path=str(result.path),
            encoder=result.encoder,
            device=result.device,
            narration_provider=result.narration_provider,
            cost_dollars=result.cost_dollars,
            cost_breakdown=result.cost_breakdown,
        )
        if not recorded:
            log.warning("job %s finished here but another worker owns it now", job_id)
            return "skipped"
        if job.upload and self.celery is not None:
            try:
                enqueue_upload(self.celery, self.settings.queue_name, job.id)
            except QueueError as exc:  # the reaper's sweep publishes it later
                log.warning("job %s: %s", job_id, exc)
        return "completed"

    def upload(self, job_id: uuid.UUID) -> str:
        """Upload the job's finished video to its owner's channel; returns the upload's
        status now (uploaded, waiting: to be tried again later, failed) or ``skipped``."""
        claimed = self.db.claim_upload(job_id, self.youtube.upload_stale_seconds)
        if claimed is None:
            log.info("job %s: no YouTube upload is due (done, waiting, or elsewhere)", job_id)
            return "skipped"
        log.info("job %s: YouTube upload, attempt %d", job_id, claimed.attempt)
        try:
            video_id = self._upload(claimed)
        except QuotaExceeded as exc:
            when = quota_reset_after(datetime.now(UTC))
            log.warning("job %s: YouTube quota exhausted; next try at %s", job_id, when)
            self.db.reschedule_upload(
                job_id, claimed.lease, when, f"{exc}; waiting for the quota to reset at {when}"
            )
            return "waiting"
        except (YouTubeAuthError, TokenCipherError, ValueError, FileNotFoundError) as exc:
            # Retrying will not help: a revoked or unreadable token, metadata or a
            # missing file. The message says what to do.
            log.error("job %s: YouTube upload failed: %s", job_id, exc)
            self.db.fail_upload(job_id, claimed.lease, str(exc))
            return "failed"
        except YouTubeError as exc:
            if claimed.attempt >= self.youtube.upload_attempts:
                log.error("job %s: YouTube upload failed for good: %s", job_id, exc)
                self.db.fail_upload(
                    job_id, claimed.lease, f"{exc} (after {claimed.attempt} attempts)"
                )
                return "failed"
            delay = self.youtube.upload_retry_seconds * 2 ** (claimed.attempt - 1)
            when = datetime.now(UTC) + timedelta(seconds=delay)
            log.warning("job %s: YouTube upload failed, next try at %s: %s", job_id, when, exc)
            self.db.reschedule_upload(job_id, claimed.lease, when, str(exc))
            return "waiting"
        except Exception as exc:  # a bug here must not leave the upload held for an hour
            log.exception("job %s: YouTube upload failed unexpectedly", job_id)
            self.db.fail_upload(job_id, claimed.lease, f"internal: {type(exc).__name__}: {exc}")
            return "failed"
        if not self.db.finish_upload(job_id, claimed.lease, video_id):
            log.warning("job %s: uploaded as %s, but the upload was taken over", job_id, video_id)
            return "skipped"
        return "uploaded"

    def _upload(self, claimed: ClaimedUpload) -> str:
        if self.cipher is None or not self.youtube.configured:
            raise YouTubeAuthError(
                "YouTube upload is not configured on this worker (YOUTUBE_CLIENT_ID, "
                "YOUTUBE_CLIENT_SECRET and YOUTUBE_TOKEN_KEY)"
            )
        if claimed.refresh_token_encrypted is None or claimed.user_id is None:
            raise YouTubeAuthError("the job's owner has no linked YouTube channel")
        refresh_token = self.cipher.decrypt(
            claimed.refresh_token_encrypted, channel_context(claimed.user_id)
        )
        return upload_video(
            claimed.output_path,
            safe_text(claimed.title, 100) or "Video",
            safe_text(claimed.script, 5000, encoded=True),
            claimed.privacy,
            refresh_token=refresh_token,
            settings=self.youtube,
        )


def make_worker_app(settings: Settings) -> Celery:
    """The Celery app with the render task and the reaper wired in."""
    app = make_celery(settings)
    worker = RenderWorker(settings)
    reaper = Reaper(settings, worker.db, app, worker.youtube)
    worker.celery = app

    @app.task(name=RENDER_TASK, bind=True, max_retries=None)
    def render(task: Task, job_id: str) -> str:
        try:
            return worker.process(uuid.UUID(job_id))
        except DatabaseError as exc:
            log.warning("job %s: database unavailable, retrying in 10 s: %s", job_id, exc)
            raise task.retry(countdown=10, exc=exc) from exc

    @app.task(name=UPLOAD_TASK, bind=True, max_retries=None)
    def upload(task: Task, job_id: str) -> str:
        try:
            return worker.upload(uuid.UUID(job_id))
        except DatabaseError as exc:
            log.warning("job %s: database unavailable, retrying in 10 s: %s", job_id, exc)
            raise task.retry(countdown=10, exc=exc) from exc

    @worker_ready.connect(weak=False)
    def start(**_: Any) -> None:
        try:
            worker.db.ensure_schema()
        except DatabaseError as exc:
            log.warning("schema check failed at startup: %s", exc)
        reaper.start()

    @worker_shutdown.connect(weak=False)
    def stop(**_: Any) -> None:
        reaper.stopped.set()

    app.conf.ytvideo_worker = worker
    return app
