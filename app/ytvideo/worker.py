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
from pathlib import Path
from typing import Any

from celery import Celery, Task
from celery.signals import worker_ready, worker_shutdown

from .config import Settings
from .db import Database, DatabaseError
from .queue import RENDER_TASK, QueueError, enqueue_render, make_celery

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

    def __init__(self, settings: Settings, db: Database, celery: Celery) -> None:
        super().__init__(name="stale-job-reaper", daemon=True)
        self.settings, self.db, self.celery = settings, db, celery
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

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.database_url, settings.check_timeout_seconds)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self._tools: Any = None

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
        return "completed"


def make_worker_app(settings: Settings) -> Celery:
    """The Celery app with the render task and the reaper wired in."""
    app = make_celery(settings)
    worker = RenderWorker(settings)
    reaper = Reaper(settings, worker.db, app)

    @app.task(name=RENDER_TASK, bind=True, max_retries=None)
    def render(task: Task, job_id: str) -> str:
        try:
            return worker.process(uuid.UUID(job_id))
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
