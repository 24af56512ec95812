"""Celery on Redis: the app both the API (to publish) and the worker use.

Delivery is at least once: ``acks_late`` keeps a message unacknowledged until
the render returns, a worker lost mid-task rejects it back to the queue, and
Redis redelivers unacknowledged messages after ``visibility_timeout``. The
job's atomic claim in PostgreSQL makes a second delivery harmless.
"""

from __future__ import annotations

import uuid

from celery import Celery

from .config import Settings

RENDER_TASK = "ytvideo.render_video"
UPLOAD_TASK = "ytvideo.upload_youtube"  # after the render, on the same queue


class QueueError(RuntimeError):
    """The broker (Redis) did not take the message."""


def make_celery(settings: Settings) -> Celery:
    app = Celery("ytvideo", broker=settings.redis_url, set_as_current=False)
    app.conf.update(
        task_default_queue=settings.queue_name,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=settings.check_timeout_seconds,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_seconds,
            "socket_timeout": settings.check_timeout_seconds,
            "socket_connect_timeout": settings.check_timeout_seconds,
        },
        task_serializer="json",
        accept_content=["json"],
    )
    return app


def enqueue_render(app: Celery, queue: str, job_id: uuid.UUID) -> None:
    """Publish one render message; raise QueueError when Redis does not take it."""
    _publish(app, RENDER_TASK, queue, job_id)


def enqueue_upload(app: Celery, queue: str, job_id: uuid.UUID) -> None:
    """Publish one YouTube upload message; raise QueueError when Redis does not take it."""
    _publish(app, UPLOAD_TASK, queue, job_id)


def _publish(app: Celery, task: str, queue: str, job_id: uuid.UUID) -> None:
    try:
        app.send_task(
            task,
            args=[str(job_id)],
            queue=queue,
            retry=True,
            retry_policy={
                "max_retries": 2,
                "interval_start": 0.2,
                "interval_step": 0.5,
                "interval_max": 1.0,
            },
        )
    except Exception as exc:  # kombu raises several types for a dead broker
        raise QueueError(
            f"could not queue {task} for job {job_id} on queue {queue!r}: {exc}"
        ) from exc
