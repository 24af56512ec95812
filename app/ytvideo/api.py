"""The HTTP API: health (§3.4), metrics (§3.1/§3.3) and the video jobs."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import health
from .config import Settings
from .db import Database, DatabaseError, NewJob
from .metrics import HttpMetrics, HttpMetricsMiddleware, VideoMetricsCollector
from .queue import QueueError, enqueue_render, make_celery
from .schemas import GenerateRequest, RequestProblems, validate_request

log = logging.getLogger(__name__)


class BodySizeLimitMiddleware:
    """Answer 413 before reading more than ``limit`` bytes of a request body.

    A declared Content-Length is checked up front (the server never delivers
    more than it declares). A body without one (chunked) is read here, up to
    the limit, and replayed to the app; past the limit the client gets 413.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > self.limit:
                await self._reject(send, int(declared))
                return
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await self._reject(send, size)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _reject(self, send: Send, size: int) -> None:
        response = JSONResponse(
            status_code=413,
            content={
                "detail": f"request body of {size} bytes or more is over the limit of "
                f"{self.limit} bytes (MAX_REQUEST_BYTES)"
            },
        )
        await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def _job_document(row: dict[str, Any]) -> dict[str, Any]:
    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    job_id = str(row["id"])
    done = row["status"] == "completed"
    return {
        "id": job_id,
        "status": row["status"],
        "title": row["title"],
        "resolution": f"{row['width']}x{row['height']}",
        "duration": row["duration_seconds"],
        "fps": row["fps"],
        "images": row["image_count"],
        "attempts": row["attempts"],
        "failure": (
            {"stage": row["failure_stage"], "reason": row["failure_reason"]}
            if row["status"] == "failed"
            else None
        ),
        "cost_dollars": row["cost_dollars"],
        "cost_breakdown": row["cost_breakdown"],
        "output_path": row["output_path"] if done else None,
        "output_url": f"/api/videos/{job_id}/file" if done else None,
        "encoder": row["encoder"],
        "device": row["device"],
        "narration_provider": row["narration_provider"],
        "created_at": iso(row["created_at"]),
        "started_at": iso(row["started_at"]),
        "finished_at": iso(row["finished_at"]),
    }


class DeploymentColorMiddleware:
    """Names the serving color in every answer's X-Deployment-Color header.

    The blue-green deploy reads it through nginx to see when traffic moved.
    """

    def __init__(self, app: ASGIApp, color: str) -> None:
        self.app = app
        self.header = (b"x-deployment-color", color.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_color(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self.header]
            await send(message)

        await self.app(scope, receive, send_with_color)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    db = Database(settings.database_url, settings.check_timeout_seconds)
    celery = make_celery(settings)
    registry = CollectorRegistry()
    http_metrics = HttpMetrics(registry)
    registry.register(VideoMetricsCollector(db, settings.cost_metric_window_seconds))
    schema = {"ready": False}

    def ensure_schema() -> None:
        if not schema["ready"]:
            db.ensure_schema()
            schema["ready"] = True

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            ensure_schema()
        except DatabaseError as exc:
            log.warning("schema not created at startup, will retry on first use: %s", exc)
        yield

    app = FastAPI(title="ytvideo", version="1.0.0", lifespan=lifespan)
    app.add_middleware(BodySizeLimitMiddleware, limit=settings.max_request_bytes)
    app.add_middleware(HttpMetricsMiddleware, metrics=http_metrics)
    if settings.deployment_color:
        app.add_middleware(DeploymentColorMiddleware, color=settings.deployment_color)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "field": ".".join(str(part) for part in err.get("loc", ())),
                "message": err.get("msg", "invalid"),
            }
            for err in exc.errors()
        ]
        return JSONResponse(
            status_code=422, content={"detail": "invalid request", "errors": errors}
        )

    @app.exception_handler(DatabaseError)
    async def database_down(request: Request, exc: DatabaseError) -> JSONResponse:
        # PostgreSQL's text names hosts, ports, tables and SQL: it goes to the log only.
        log.error("%s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(
            status_code=503,
            content={
                "detail": "database unavailable: the job store failed this request; retry later"
            },
        )

    @app.get("/health")
    def health_check() -> JSONResponse:
        status, body = health.health_report(settings, db)
        return JSONResponse(status_code=status, content=body)

    @app.get("/health/live")
    def liveness() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/health/ready")
    def ready() -> JSONResponse:
        status, body = health.readiness(settings, db)
        return JSONResponse(status_code=status, content=body)

    if settings.prometheus_enabled:

        @app.get("/metrics")
        def metrics() -> Response:
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/api/videos/generate", status_code=202)
    def generate(body: GenerateRequest) -> JSONResponse:
        try:
            req = validate_request(body, settings)
        except RequestProblems as exc:
            return JSONResponse(
                status_code=422, content={"detail": "invalid request", "errors": exc.problems}
            )
        ensure_schema()
        job = NewJob(
            uuid.uuid4(),
            req.title,
            req.script,
            req.width,
            req.height,
            req.duration_seconds,
            req.fps,
            settings.queue_name,
        )
        db.insert_job(job, req.images)
        try:
            enqueue_render(celery, settings.queue_name, job.id)
        except QueueError as exc:
            db.delete_job(job.id)  # no message, no job: the client may retry
            log.error("%s", exc)
            return JSONResponse(status_code=503, content={"detail": str(exc)})
        return JSONResponse(
            status_code=202,
            content={"id": str(job.id), "status": "queued", "status_url": f"/api/videos/{job.id}"},
        )

    @app.get("/api/videos/{video_id}")
    def get_video(video_id: uuid.UUID) -> JSONResponse:
        ensure_schema()
        row = db.get_job(video_id)
        if row is None:
            return JSONResponse(
                status_code=404, content={"detail": f"no video job with id {video_id}"}
            )
        return JSONResponse(content=_job_document(row))

    @app.get("/api/videos/{video_id}/file", response_model=None)
    def get_video_file(video_id: uuid.UUID) -> Response:
        ensure_schema()
        row = db.get_job(video_id)
        if row is None:
            return JSONResponse(
                status_code=404, content={"detail": f"no video job with id {video_id}"}
            )
        if row["status"] != "completed":
            return JSONResponse(
                status_code=409,
                content={"detail": f"video {video_id} is {row['status']}, not completed"},
            )
        path = Path(row["output_path"])
        if not path.is_file():
            return JSONResponse(
                status_code=410, content={"detail": f"video {video_id} is no longer at {path}"}
            )
        return FileResponse(path, media_type="video/mp4", filename=f"{video_id}.mp4")

    app.state.settings = settings
    app.state.db = db
    return app
