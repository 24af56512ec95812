"""A local stand-in for Google's OAuth 2 token endpoint and YouTube's resumable upload.

It speaks the real protocol:

- ``POST /token`` (form: ``grant_type=refresh_token``, ``client_id``,
  ``client_secret``, ``refresh_token``) checks all three and answers
  ``{"access_token", "expires_in", "scope", "token_type"}``, or Google's
  ``invalid_client`` (401) / ``invalid_grant`` (400).
- ``POST /upload/youtube/v3/videos?uploadType=resumable&part=snippet,status``
  with a Bearer token, JSON metadata, ``X-Upload-Content-Length`` and
  ``X-Upload-Content-Type`` answers 200 with the session URL in ``Location``.
- ``PUT`` on the session URL with ``Content-Range: bytes S-E/T`` stores the
  chunk (S must be what the server holds; chunks other than the last are
  multiples of 256 KiB) and answers 308 with ``Range: bytes=0-N``, or 200 with
  the video resource once all T bytes are in. ``Content-Range: bytes */T`` with
  an empty body asks where the upload stands.

Errors use the Data API's JSON shape. Fault switches on ``YouTubeState``:
drop the connection part-way through one chunk, answer a 5xx to chunks,
refuse the session with a 403 quota reason, expire the access tokens when a
given chunk arrives, or refuse every access token.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

GRANULARITY = 256 * 1024
UPLOAD_PATH = "/upload/youtube/v3/videos"


@dataclass
class UploadSession:
    upload_id: str
    total: int
    content_type: str
    metadata: dict[str, Any]
    data: bytearray = field(default_factory=bytearray)
    video: dict[str, Any] | None = None


@dataclass
class YouTubeState:
    client_id: str = "emulated-client.apps.googleusercontent.com"
    client_secret: str = "emulated-client-secret"  # noqa: S105  the emulator's own
    refresh_token: str = "1//emulated-refresh-token"  # noqa: S105  the emulator's own
    token_lifetime: int = 3599
    # Fault switches (reset() clears them). Chunk numbers count chunk PUTs from 1.
    drop_chunk_at: int | None = None  # close the socket after reading drop_after bytes
    drop_after: int = 100_000  # ... which the server keeps, as Google may
    fail_chunk_status: int = 503
    fail_chunks: int = 0  # answer this many chunk PUTs, from the next, with fail_chunk_status
    quota_reason: str | None = None  # session start answers 403 with this reason
    expire_at_chunk: int | None = None  # every access token expires when this chunk arrives
    reject_tokens: bool = False  # no access token is accepted
    # What happened.
    tokens: set[str] = field(default_factory=set)
    sessions: dict[str, UploadSession] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)
    chunk_puts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        fresh = YouTubeState()
        with self.lock:
            for name in self.__dataclass_fields__:
                if name != "lock":
                    setattr(self, name, getattr(fresh, name))

    def expire_tokens(self) -> None:
        with self.lock:
            self.tokens.clear()

    def count(self, kind: str, status: int | None = None) -> int:
        return sum(
            1 for e in self.log if e["kind"] == kind and (status is None or e["status"] == status)
        )

    def completed(self) -> list[UploadSession]:
        return [s for s in self.sessions.values() if s.video is not None]


def _google_error(code: int, reason: str, message: str, domain: str = "global") -> bytes:
    error = {"code": code, "message": message}
    error["errors"] = [{"message": message, "domain": domain, "reason": reason}]
    return json.dumps({"error": error}).encode()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as Google's front end; bodies are sized

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  signature of the base
        pass

    @property
    def state(self) -> YouTubeState:
        return self.server.state

    def _length(self) -> int:
        return int(self.headers.get("content-length", "0"))

    def _read(self, length: int) -> bytes:
        chunks, left = [], length
        while left > 0:
            part = self.rfile.read(min(left, 65536))
            if not part:
                break
            chunks.append(part)
            left -= len(part)
        return b"".join(chunks)

    def _reply(
        self,
        kind: str,
        status: int,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        **note: Any,
    ) -> None:
        self.state.log.append({"kind": kind, "status": status, **note})
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if body:
            self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _authorized(self, kind: str, **note: Any) -> bool:
        auth = self.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
        with self.state.lock:
            ok = token is not None and token in self.state.tokens and not self.state.reject_tokens
        if not ok:
            body = _google_error(401, "authError", "Invalid Credentials")
            headers = {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'}
            self._reply(kind, 401, body, headers, **note)
        return ok

    # OAuth 2

    def _token(self) -> None:
        state = self.state
        if not self.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            body = json.dumps({"error": "invalid_request", "error_description": "not a form"})
            self._reply("token", 400, body.encode())
            return
        form = {k: v[0] for k, v in parse_qs(self._read(self._length()).decode()).items()}
        if form.get("grant_type") != "refresh_token":
            body = {"error": "unsupported_grant_type", "error_description": "Invalid grant_type"}
            self._reply("token", 400, json.dumps(body).encode())
        elif (form.get("client_id"), form.get("client_secret")) != (
            state.client_id,
            state.client_secret,
        ):
            body = {"error": "invalid_client", "error_description": "Unauthorized"}
            self._reply("token", 401, json.dumps(body).encode())
        elif form.get("refresh_token") != state.refresh_token:
            body = {"error": "invalid_grant", "error_description": "Token has been revoked."}
            self._reply("token", 400, json.dumps(body).encode())
        else:
            token = "ya29." + secrets.token_urlsafe(24)
            with state.lock:
                state.tokens.add(token)
            body = {
                "access_token": token,
                "expires_in": state.token_lifetime,
                "scope": "https://www.googleapis.com/auth/youtube.upload",
                "token_type": "Bearer",
            }
            self._reply("token", 200, json.dumps(body).encode())

    # resumable upload

    def _start(self, query: dict[str, list[str]]) -> None:
        state = self.state
        raw = self._read(self._length())
        if not self._authorized("start"):
            return
        parts = set(query.get("part", [""])[0].split(","))
        if query.get("uploadType") != ["resumable"] or not {"snippet", "status"} <= parts:
            self._reply("start", 400, _google_error(400, "badRequest", "uploadType/part wrong"))
            return
        try:
            metadata = json.loads(raw)
            total = int(self.headers["x-upload-content-length"])
        except (ValueError, KeyError, TypeError):
            body = _google_error(400, "badRequest", "metadata or X-Upload-Content-Length")
            self._reply("start", 400, body)
            return
        content_type = self.headers.get("x-upload-content-type", "")
        title = metadata.get("snippet", {}).get("title", "")
        privacy = metadata.get("status", {}).get("privacyStatus")
        if not title or len(title) > 100 or "<" in title or ">" in title:
            self._reply("start", 400, _google_error(400, "invalidTitle", "invalid title"))
            return
        if privacy not in ("private", "unlisted", "public") or total <= 0:
            self._reply("start", 400, _google_error(400, "invalidValue", "privacy or length"))
            return
        if not content_type.startswith("video/"):
            self._reply("start", 400, _google_error(400, "invalidValue", "not a video type"))
            return
        if state.quota_reason is not None:
            message = (
                "The request cannot be completed because you have exceeded your "
                '<a href="/youtube/v3/getting-started#quota">quota</a>.'
            )
            domain = "youtube.quota" if state.quota_reason == "quotaExceeded" else "youtube.video"
            self._reply("start", 403, _google_error(403, state.quota_reason, message, domain))
            return
        upload_id = secrets.token_urlsafe(18)
        with state.lock:
            state.sessions[upload_id] = UploadSession(upload_id, total, content_type, metadata)
        location = (
            f"{self.server.url}{UPLOAD_PATH}?uploadType=resumable&part=snippet,status"
            f"&upload_id={upload_id}"
        )
        self._reply("start", 200, headers={"Location": location, "X-GUploader-UploadID": upload_id})

    def _progress(self, kind: str, session: UploadSession, **note: Any) -> None:
        if session.video is not None:
            self._reply(kind, 200, json.dumps(session.video).encode(), **note)
        elif session.data:
            headers = {"Range": f"bytes=0-{len(session.data) - 1}"}
            self._reply(kind, 308, headers=headers, **note)
        else:
            self._reply(kind, 308, **note)

    def _finish(self, session: UploadSession) -> None:
        video_id = secrets.token_urlsafe(8)[:11]
        snippet = dict(session.metadata.get("snippet", {}))
        snippet.setdefault("channelId", "UCemulatedchannel000000")
        status = dict(session.metadata.get("status", {}))
        status |= {"uploadStatus": "uploaded", "license": "youtube", "embeddable": True}
        session.video = {
            "kind": "youtube#video",
            "etag": secrets.token_urlsafe(20),
            "id": video_id,
            "snippet": snippet,
            "status": status,
        }

    def _drop(self, session: UploadSession, length: int, number: int) -> None:
        """Read part of the chunk, keep it, and close the socket without an answer."""
        kept = self._read(min(length, self.state.drop_after))
        session.data += kept
        self.state.log.append({"kind": "chunk", "status": None, "dropped": len(kept), "n": number})
        self.close_connection = True
        # With the rest of the body unread, close() answers the client with a reset.
        self.connection.close()

    def do_PUT(self) -> None:  # noqa: N802  http.server's naming
        state = self.state
        url = urlsplit(self.path)
        session = state.sessions.get(parse_qs(url.query).get("upload_id", [""])[0])
        length = self._length()
        if url.path != UPLOAD_PATH or session is None:
            self._read(length)
            self._reply("put", 404, _google_error(404, "notFound", "no such upload session"))
            return
        content_range = self.headers.get("content-range", "")
        status_query = re.fullmatch(r"bytes \*/(\d+)", content_range)
        if status_query:
            if not self._authorized("query"):
                return
            if int(status_query.group(1)) != session.total or length:
                self._reply("query", 400, _google_error(400, "badContent", "bad status query"))
                return
            self._progress("query", session)
            return
        match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", content_range)
        with state.lock:
            state.chunk_puts += 1
            number = state.chunk_puts
            if state.expire_at_chunk == number:
                state.tokens.clear()
        note = {"n": number, "range": content_range}
        if number == state.drop_chunk_at and match:
            self._drop(session, length, number)
            return
        body = self._read(length)
        if not self._authorized("chunk", **note):
            return
        if state.fail_chunks > 0:
            state.fail_chunks -= 1
            error = _google_error(state.fail_chunk_status, "backendError", "Backend Error")
            self._reply("chunk", state.fail_chunk_status, error, **note)
            return
        if not match:
            self._reply("chunk", 400, _google_error(400, "badContent", "bad Content-Range"), **note)
            return
        start, end, total = (int(g) for g in match.groups())
        problem = None
        if total != session.total:
            problem = f"total {total} is not the announced {session.total}"
        elif start != len(session.data):
            problem = f"chunk starts at {start}, the server holds {len(session.data)} bytes"
        elif end < start or end >= total or len(body) != end - start + 1:
            problem = f"range {start}-{end} does not match the {len(body)}-byte body"
        elif end + 1 < total and len(body) % GRANULARITY:
            problem = f"a non-final chunk of {len(body)} bytes is not a multiple of 256 KiB"
        if problem:
            self._reply("chunk", 400, _google_error(400, "badContent", problem), **note)
            return
        session.data += body
        if len(session.data) == session.total:
            self._finish(session)
        self._progress("chunk", session, **note)

    def do_POST(self) -> None:  # noqa: N802  http.server's naming
        url = urlsplit(self.path)
        if url.path == "/token":
            self._token()
        elif url.path == UPLOAD_PATH:
            self._start(parse_qs(url.query))
        else:
            self._read(self._length())
            self._reply("post", 404, _google_error(404, "notFound", f"no route {url.path}"))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: YouTubeState
    url: str


class YouTubeEmulator:
    def __init__(self) -> None:
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.state = YouTubeState()
        self.server.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def state(self) -> YouTubeState:
        return self.server.state

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
