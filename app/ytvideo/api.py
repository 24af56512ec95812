"""The HTTP API: health (§3.4), metrics (§3.1/§3.3) and the video jobs."""

from __future__ import annotations

import ipaddress
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import cost, health
from .auth import (
    AuthError,
    RateLimited,
    RateLimiter,
    User,
    current_for,
    dummy_verify,
    issue_token,
    read_token,
    verify_password,
)
from .config import Settings
from .db import Database, DatabaseError, NewJob
from .metrics import HttpMetrics, HttpMetricsMiddleware, VideoMetricsCollector
from .migrate import MigrationError
from .queue import QueueError, enqueue_render, make_celery
from .schemas import GenerateRequest, RequestProblems, validate_request
from .youtube import (
    TokenCipher,
    YouTubeAuthError,
    YouTubeClient,
    YouTubeError,
    YouTubeSettings,
    channel_context,
)

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
        "estimated_cost_dollars": row.get("estimated_cost_dollars"),
        "output_path": row["output_path"] if done else None,
        "output_url": f"/api/videos/{job_id}/file" if done else None,
        "encoder": row["encoder"],
        "device": row["device"],
        "narration_provider": row["narration_provider"],
        "created_at": iso(row["created_at"]),
        "started_at": iso(row["started_at"]),
        "finished_at": iso(row["finished_at"]),
        "media_deleted_at": iso(row.get("media_deleted_at")),
        "youtube": _upload_document(row.get("youtube"), iso),
    }


def _upload_document(upload: dict[str, Any] | None, iso: Any) -> dict[str, Any] | None:
    if upload is None:
        return None
    video_id = upload["youtube_video_id"]
    return {
        "privacy": upload["privacy"],
        "status": upload["status"],
        "attempts": upload["attempts"],
        "video_id": video_id,
        "url": f"https://www.youtube.com/watch?v={video_id}" if video_id else None,
        "next_attempt_at": iso(upload["not_before"]) if upload["status"] == "waiting" else None,
        "error": upload["error"],
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


class ChannelRequest(BaseModel):
    """A YouTube channel to link: the OAuth 2 refresh token its owner granted
    (scope youtube.upload) to this server's client id."""

    model_config = ConfigDict(extra="forbid")

    refresh_token: str = Field(min_length=1, max_length=2048)


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


def _client_in(
    request: Request, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> bool:
    host = request.client.host if request.client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in networks)


def _problem(status: int, detail: str, **headers: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail}, headers=headers or None)


def _authenticated(request: Request) -> User:
    """The request's user (create_app's check, kept on the app's state)."""
    return request.app.state.authenticate(request)


# At module level, so the string annotations (from __future__) resolve.
CurrentUser = Annotated[User, Depends(_authenticated)]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    settings.check_api()
    db = Database(settings.database_url, settings.check_timeout_seconds)
    celery = make_celery(settings)
    limiter = RateLimiter(settings)
    registry = CollectorRegistry()
    http_metrics = HttpMetrics(registry)
    registry.register(VideoMetricsCollector(db, settings.cost_metric_window_seconds))
    metrics_networks = [ipaddress.ip_network(n) for n in settings.metrics_allowed_networks]
    youtube = YouTubeSettings.from_env()
    # A key that is set but malformed stops the API here, not at the first link.
    cipher = TokenCipher.from_settings(youtube) if youtube.token_key else None
    not_configured = (
        "YouTube upload is not configured on this server "
        "(YOUTUBE_CLIENT_ID, YOUTUBE_CLIENT_SECRET and YOUTUBE_TOKEN_KEY)"
    )
    schema = {"ready": False}

    def ensure_schema() -> None:
        if not schema["ready"]:
            db.ensure_schema()
            if settings.admin_username:
                done = db.ensure_user(
                    settings.admin_username,
                    settings.admin_password,
                    settings.admin_rate_limit_per_minute,
                )
                log.info("admin account %s: %s", settings.admin_username, done)
            schema["ready"] = True

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            ensure_schema()
        except DatabaseError as exc:
            log.warning("schema not migrated at startup, will retry on first use: %s", exc)
        yield
        db.close()

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
        # The detail (statements, constraint names, hosts) goes to the log, not to clients.
        log.error("%s %s: %s", request.method, request.url.path, exc)
        return _problem(503, "the job store is unavailable; retry later")

    @app.exception_handler(MigrationError)
    async def schema_refused(request: Request, exc: MigrationError) -> JSONResponse:
        log.error("%s %s: %s", request.method, request.url.path, exc)
        return _problem(503, "the job store's schema is not ready; the operator is told why")

    @app.exception_handler(AuthError)
    async def unauthorized(_: Request, exc: AuthError) -> JSONResponse:
        return _problem(401, str(exc), **{"WWW-Authenticate": "Bearer"})

    @app.exception_handler(RateLimited)
    async def too_many(_: Request, exc: RateLimited) -> JSONResponse:
        return _problem(429, str(exc), **{"Retry-After": str(exc.retry_after)})

    def authenticated(request: Request) -> User:
        """The request's user: a valid token of an enabled account, under its rate limit."""
        claims = read_token(settings, request.headers.get("authorization"))
        ensure_schema()
        found = db.find_user(user_id=int(claims["sub"]))
        user = current_for(claims, found[0] if found else None)
        limiter.check(f"user:{user.id}", user.rate_limit_per_minute)
        return user

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

        @app.get("/metrics", response_model=None)
        def metrics(request: Request) -> Response:
            if not _client_in(request, metrics_networks):
                return _problem(403, "/metrics is for the monitoring network only")
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/api/auth/login")
    def login(body: LoginRequest) -> JSONResponse:
        # Failed attempts are limited per account name, before the hash is computed.
        limiter.check(f"login:{body.username.lower()}", settings.login_attempts_per_minute)
        ensure_schema()
        found = db.find_user(username=body.username.lower())
        if found is None:
            dummy_verify(body.password)
            raise AuthError("wrong username or password")
        user, stored = found
        if not verify_password(body.password, stored):
            raise AuthError("wrong username or password")
        return JSONResponse(
            content={
                "access_token": issue_token(settings, user),
                "token_type": "bearer",
                "expires_in": settings.jwt_expiry_seconds,
            }
        )

    @app.post("/api/videos/generate", status_code=202)
    def generate(body: GenerateRequest, user: CurrentUser, dry_run: bool = False) -> JSONResponse:
        try:
            req = validate_request(body, settings)
        except RequestProblems as exc:
            return JSONResponse(
                status_code=422, content={"detail": "invalid request", "errors": exc.problems}
            )
        estimate = cost.estimate(
            settings, req.title, req.script, req.width, req.height, req.duration_seconds
        )
        if estimate["total_dollars"] > settings.cost_cap_dollars:
            return JSONResponse(
                status_code=422,
                content={
                    "detail": f"the estimated cost ${estimate['total_dollars']:.2f} is over the "
                    f"cap of ${settings.cost_cap_dollars:.2f} a video (COST_CAP_DOLLARS)",
                    "estimate": estimate,
                    "errors": [{"field": "script", "message": "the video would cost too much"}],
                },
            )
        if body.youtube is not None:
            if cipher is None or not youtube.configured:
                return _problem(422, not_configured)
            ensure_schema()
            if db.channel(user.id) is None:
                return _problem(
                    422,
                    "link a YouTube channel first (PUT /api/youtube/channel), or leave out youtube",
                )
        if dry_run:  # validated and estimated; nothing stored or queued
            return JSONResponse(status_code=200, content={"dry_run": True, "estimate": estimate})
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
            user_id=user.id,
            estimated_cost_dollars=estimate["total_dollars"],
            youtube_privacy=body.youtube.privacy if body.youtube else None,
        )
        db.insert_job(job, req.images)
        try:
            enqueue_render(celery, settings.queue_name, job.id)
        except QueueError as exc:
            db.delete_job(job.id)  # no message, no job: the client may retry
            log.error("%s", exc)
            return _problem(503, "the queue is unavailable; retry later")  # the detail is logged
        return JSONResponse(
            status_code=202,
            content={
                "id": str(job.id),
                "status": "queued",
                "status_url": f"/api/videos/{job.id}",
                "estimate": estimate,
            },
        )

    @app.get("/api/youtube/channel")
    def get_channel(user: CurrentUser) -> JSONResponse:
        ensure_schema()
        linked = db.channel(user.id)
        return JSONResponse(
            content={
                "configured": cipher is not None and youtube.configured,
                "linked": linked is not None,
                "linked_at": linked[1].isoformat() if linked else None,
            }
        )

    @app.put("/api/youtube/channel")
    def link_channel(body: ChannelRequest, user: CurrentUser) -> JSONResponse:
        """Check the refresh token with Google's token endpoint, then keep it encrypted."""
        if cipher is None or not youtube.configured:
            return _problem(503, not_configured)
        ensure_schema()
        try:
            with YouTubeClient(youtube, body.refresh_token) as client:
                client.access_token(force=True)
        except YouTubeAuthError:
            return _problem(
                422, "YouTube's token endpoint refused this refresh token; nothing was stored"
            )
        except YouTubeError as exc:
            log.warning("linking a channel for user %s: %s", user.id, exc)
            return _problem(502, "YouTube's token endpoint did not answer; retry later")
        stored = cipher.encrypt(body.refresh_token, channel_context(user.id))
        linked_at = db.link_channel(user.id, stored)
        return JSONResponse(content={"linked": True, "linked_at": linked_at.isoformat()})

    @app.delete("/api/youtube/channel")
    def unlink_channel(user: CurrentUser) -> JSONResponse:
        ensure_schema()
        failed = db.unlink_channel(user.id)
        return JSONResponse(content={"linked": False, "uploads_cancelled": failed})

    @app.get("/api/videos")
    def list_videos(user: CurrentUser, limit: int = 50) -> JSONResponse:
        rows = db.list_jobs(user.id, max(1, min(limit, 200)))
        return JSONResponse(content={"videos": [_job_document(r) for r in rows]})

    @app.get("/api/videos/{video_id}")
    def get_video(video_id: uuid.UUID, user: CurrentUser) -> JSONResponse:
        row = db.get_job(video_id, user.id)
        if row is None:
            return _problem(404, f"no video job with id {video_id}")
        return JSONResponse(content=_job_document(row))

    @app.post("/api/videos/{video_id}/cancel")
    def cancel_video(video_id: uuid.UUID, user: CurrentUser) -> JSONResponse:
        cancelled, status = db.cancel_job(video_id, user.id)
        if status is None:
            return _problem(404, f"no video job with id {video_id}")
        if not cancelled:
            return _problem(
                409, f"video {video_id} is {status}; only queued or running jobs cancel"
            )
        return JSONResponse(content={"id": str(video_id), "status": status})

    @app.get("/api/videos/{video_id}/file", response_model=None)
    def get_video_file(video_id: uuid.UUID, user: CurrentUser) -> Response:
        row = db.get_job(video_id, user.id)
        if row is None:
            return _problem(404, f"no video job with id {video_id}")
        if row["status"] != "completed":
            return _problem(409, f"video {video_id} is {row['status']}, not completed")
        path = Path(row["output_path"])
        if row.get("media_deleted_at") or not path.is_file():
            return _problem(410, f"video {video_id} is no longer available")
        return FileResponse(path, media_type="video/mp4", filename=f"{video_id}.mp4")

    app.state.settings = settings
    app.state.db = db
    app.state.authenticate = authenticated
    return app
