"""Upload finished videos to YouTube (Data API v3, resumable uploads).

The worker's upload task (worker.RenderWorker.upload) and the API's channel
endpoints use it so:

    yt = YouTubeSettings.from_env()              # once, at start
    cipher = TokenCipher.from_settings(yt)       # once, at start
    stored = cipher.encrypt(refresh_token)       # on connecting a channel: str, TEXT column
    refresh_token = cipher.decrypt(stored)       # before an upload
    video_id = upload_video(path, title, description, "private",
                            refresh_token=refresh_token, settings=yt)

``upload_video`` raises:

- ``QuotaExceeded``: YouTube refused for quota (``quotaExceeded``) or the
  channel's upload limit (``uploadLimitExceeded``). Not retried here: reschedule
  the upload for after the quota resets (midnight Pacific time).
- ``YouTubeAuthError``: the client id/secret or the refresh token were refused
  (revoked, expired, wrong client), or a fresh access token was refused too.
  Retrying will not help; the channel must be connected again.
- ``YouTubeUploadError``: anything else (bad metadata, retries exhausted, the
  upload session expired); the message says what and where.
- ``ValueError`` for metadata YouTube would reject (checked before any request),
  ``FileNotFoundError`` for a missing file.
- ``TokenCipherError`` (from ``TokenCipher.decrypt``): the stored token was
  tampered with, or was encrypted with a key that is not configured.

Settings (environment variables, default in brackets):

- ``YOUTUBE_CLIENT_ID``, ``YOUTUBE_CLIENT_SECRET`` (empty): the OAuth 2 client of
  the Google Cloud project.
- ``YOUTUBE_TOKEN_KEY`` (empty): AES-256 key for refresh tokens at rest, 32 bytes
  as 64 hex digits or base64 (``openssl rand -hex 32``).
- ``YOUTUBE_TOKEN_KEY_ID`` (1): id, 1-255, of that key; written into every token.
- ``YOUTUBE_TOKEN_OLD_KEYS`` (empty): ``id:key,id:key``, earlier keys still read.
- ``YOUTUBE_TOKEN_URL`` (``https://oauth2.googleapis.com/token``): OAuth 2 token endpoint.
- ``YOUTUBE_API_BASE_URL`` (``https://www.googleapis.com``): uploads go to
  ``{base}/upload/youtube/v3/videos``.
- ``YOUTUBE_CHUNK_BYTES`` (8 MiB): upload chunk, a multiple of 256 KiB.
- ``YOUTUBE_TIMEOUT_SECONDS`` (60): connect/read/write timeout of every request.
- ``YOUTUBE_MAX_RETRIES`` (6): failed attempts in a row (dropped connection, timeout,
  5xx, 429, rate limit) before giving up; progress starts the count again.
- ``YOUTUBE_RETRY_BASE_SECONDS`` (1): first backoff; doubles per attempt, capped at
  60 s, with jitter.

Key rotation: generate a new key, set it as ``YOUTUBE_TOKEN_KEY`` with a new
``YOUTUBE_TOKEN_KEY_ID``, move the old one into ``YOUTUBE_TOKEN_OLD_KEYS``,
re-encrypt stored tokens with ``TokenCipher.rotate`` (``needs_rotation`` finds
them), then drop the old key.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from datetime import time as dt_time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .config import ConfigError, _int, _number

log = logging.getLogger(__name__)

UPLOAD_GRANULARITY = 256 * 1024  # chunks other than the last are multiples of this
PRIVACY_STATUSES = ("private", "unlisted", "public")
QUOTA_REASONS = frozenset({"quotaExceeded", "uploadLimitExceeded"})
RATE_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})  # retried
TOKEN_EXPIRY_MARGIN_SECONDS = 60.0  # refresh an access token this long before it expires
MAX_BACKOFF_SECONDS = 60.0


class YouTubeError(RuntimeError):
    """Base of the errors an upload raises."""


class QuotaExceeded(YouTubeError):  # noqa: N818  the name the worker and issue 14 use
    """YouTube refused for quota or the upload limit; reschedule, do not retry now."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class YouTubeAuthError(YouTubeError):
    """The OAuth client or refresh token was refused; the channel must reconnect."""


class YouTubeUploadError(YouTubeError):
    """The upload failed for another reason; the message says which request and why."""


class TokenCipherError(ValueError):
    """A stored refresh token cannot be decrypted, or a key setting is malformed."""


# --- settings ---------------------------------------------------------------


def parse_key(raw: str, name: str = "YOUTUBE_TOKEN_KEY") -> bytes:
    """A 32-byte key from 64 hex digits or base64 (standard or URL-safe)."""
    text = raw.strip()
    if re.fullmatch(r"[0-9a-fA-F]{64}", text):
        return bytes.fromhex(text)
    try:
        key = base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise TokenCipherError(
            f"{name} is not a 32-byte key: give 64 hex digits or base64 of 32 bytes "
            "(e.g. `openssl rand -hex 32`)"
        )
    return key


def _key_id(raw: str, name: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= 255:
        raise TokenCipherError(f"{name}={raw!r} is not a key id between 1 and 255")
    return value


@dataclass(frozen=True)
class YouTubeSettings:
    client_id: str = ""
    client_secret: str = ""
    token_key: str = ""  # secret: never logged
    token_key_id: int = 1
    token_old_keys: str = ""  # secret: "id:key,id:key"
    token_url: str = "https://oauth2.googleapis.com/token"  # noqa: S105  a URL
    api_base_url: str = "https://www.googleapis.com"
    chunk_bytes: int = 8 * 1024 * 1024
    timeout_seconds: float = 60.0
    max_retries: int = 6
    retry_base_seconds: float = 1.0
    # The worker's upload jobs: an uploader silent this long is presumed dead (its
    # upload is taken over), and an upload that failed is tried this many times,
    # upload_retry_seconds apart (doubling).
    upload_stale_seconds: float = 3600.0
    upload_attempts: int = 5
    upload_retry_seconds: float = 300.0

    @property
    def configured(self) -> bool:
        """Whether uploads can work: the OAuth client and the key for tokens at rest."""
        return bool(self.client_id and self.client_secret and self.token_key)

    def __post_init__(self) -> None:
        if self.chunk_bytes <= 0 or self.chunk_bytes % UPLOAD_GRANULARITY:
            raise ConfigError(
                f"YOUTUBE_CHUNK_BYTES={self.chunk_bytes} must be a positive multiple of "
                f"{UPLOAD_GRANULARITY} (256 KiB), as resumable uploads require"
            )

    def __repr__(self) -> str:  # keep the secrets out of logs and tracebacks
        return (
            f"YouTubeSettings(client_id={self.client_id!r}, token_url={self.token_url!r}, "
            f"api_base_url={self.api_base_url!r}, chunk_bytes={self.chunk_bytes})"
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> YouTubeSettings:
        env = os.environ if env is None else env
        d = cls.__dataclass_fields__
        return cls(
            client_id=env.get("YOUTUBE_CLIENT_ID", ""),
            client_secret=env.get("YOUTUBE_CLIENT_SECRET", ""),
            token_key=env.get("YOUTUBE_TOKEN_KEY", ""),
            token_key_id=_int(env, "YOUTUBE_TOKEN_KEY_ID", 1, 1),
            token_old_keys=env.get("YOUTUBE_TOKEN_OLD_KEYS", ""),
            token_url=env.get("YOUTUBE_TOKEN_URL", d["token_url"].default),
            api_base_url=env.get("YOUTUBE_API_BASE_URL", d["api_base_url"].default).rstrip("/"),
            chunk_bytes=_int(env, "YOUTUBE_CHUNK_BYTES", d["chunk_bytes"].default, 1),
            timeout_seconds=_number(env, "YOUTUBE_TIMEOUT_SECONDS", 60.0, 1.0),
            max_retries=_int(env, "YOUTUBE_MAX_RETRIES", 6, 0),
            retry_base_seconds=_number(env, "YOUTUBE_RETRY_BASE_SECONDS", 1.0, 0.0),
            upload_stale_seconds=_number(env, "YOUTUBE_UPLOAD_STALE_SECONDS", 3600.0, 1.0),
            upload_attempts=_int(env, "YOUTUBE_UPLOAD_ATTEMPTS", 5, 1),
            upload_retry_seconds=_number(env, "YOUTUBE_UPLOAD_RETRY_SECONDS", 300.0, 0.0),
        )


# --- refresh tokens at rest -------------------------------------------------

_FORMAT = 1  # first byte of every encrypted token: the layout below
_NONCE_BYTES = 12


class TokenCipher:
    """AES-256-GCM for OAuth refresh tokens stored in PostgreSQL.

    A stored token is URL-safe base64 of ``format (1) | key id (1) | nonce (12) |
    ciphertext + tag (16)``. The two header bytes and the optional ``context``
    (e.g. the channel id, so a token cannot be moved to another row) are
    authenticated: changing any byte makes ``decrypt`` fail.
    """

    def __init__(self, keys: Mapping[int, bytes], current: int) -> None:
        if current not in keys:
            raise TokenCipherError(f"the current key id {current} has no key")
        for key_id, key in keys.items():
            if not 1 <= key_id <= 255 or len(key) != 32:
                raise TokenCipherError(f"key id {key_id}: ids are 1-255 and keys 32 bytes")
        self._keys = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self.current = current

    def __repr__(self) -> str:
        return f"TokenCipher(current={self.current}, key_ids={sorted(self._keys)})"

    @classmethod
    def from_settings(cls, settings: YouTubeSettings) -> TokenCipher:
        if not settings.token_key:
            raise TokenCipherError(
                "YOUTUBE_TOKEN_KEY is not set: refresh tokens are only stored encrypted"
            )
        keys = {settings.token_key_id: parse_key(settings.token_key)}
        for entry in filter(None, (e.strip() for e in settings.token_old_keys.split(","))):
            raw_id, sep, raw_key = entry.partition(":")
            if not sep:
                raise TokenCipherError("YOUTUBE_TOKEN_OLD_KEYS entries are id:key")
            key_id = _key_id(raw_id.strip(), "a YOUTUBE_TOKEN_OLD_KEYS id")
            if key_id in keys:
                raise TokenCipherError(f"key id {key_id} is given twice")
            keys[key_id] = parse_key(raw_key, f"YOUTUBE_TOKEN_OLD_KEYS key {key_id}")
        return cls(keys, settings.token_key_id)

    def encrypt(self, token: str, context: bytes = b"") -> str:
        if not token:
            raise ValueError("refusing to encrypt an empty refresh token")
        header = bytes((_FORMAT, self.current))
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._keys[self.current].encrypt(nonce, token.encode(), header + context)
        return base64.urlsafe_b64encode(header + nonce + sealed).decode("ascii")

    def key_id_of(self, stored: str) -> int:
        return self._unpack(stored)[1]

    def needs_rotation(self, stored: str) -> bool:
        return self.key_id_of(stored) != self.current

    def rotate(self, stored: str, context: bytes = b"") -> str:
        """The token re-encrypted with the current key."""
        return self.encrypt(self.decrypt(stored, context), context)

    def decrypt(self, stored: str, context: bytes = b"") -> str:
        raw, key_id = self._unpack(stored)
        cipher = self._keys.get(key_id)
        if cipher is None:
            raise TokenCipherError(
                f"the token was encrypted with key id {key_id}, which is not configured "
                f"(known: {sorted(self._keys)}); add it to YOUTUBE_TOKEN_OLD_KEYS"
            )
        header, nonce, sealed = raw[:2], raw[2 : 2 + _NONCE_BYTES], raw[2 + _NONCE_BYTES :]
        try:
            plain = cipher.decrypt(nonce, sealed, header + context)
        except InvalidTag:
            raise TokenCipherError(
                f"the token does not authenticate under key id {key_id}: it was altered, "
                "belongs to another record, or the key is wrong; reconnect the channel"
            ) from None
        return plain.decode()

    @staticmethod
    def _unpack(stored: str) -> tuple[bytes, int]:
        try:
            raw = base64.urlsafe_b64decode(stored.encode("ascii"))
        except (binascii.Error, ValueError, UnicodeEncodeError):
            raise TokenCipherError("the stored token is not base64") from None
        if len(raw) < 2 + _NONCE_BYTES + 16 + 1:
            raise TokenCipherError(f"the stored token is too short ({len(raw)} bytes)")
        if raw[0] != _FORMAT:
            raise TokenCipherError(f"the stored token has unknown format {raw[0]}")
        return raw, raw[1]


# --- the API client ---------------------------------------------------------


def _error_reasons(response: httpx.Response) -> tuple[set[str], str]:
    """The ``errors[].reason`` set and message of a Google API error body."""
    try:
        error = response.json().get("error", {})
    except (ValueError, AttributeError):
        return set(), response.text[:300]
    if not isinstance(error, dict):  # OAuth endpoint: {"error": "invalid_grant", ...}
        return {str(error)}, str(response.json().get("error_description", error))
    reasons = {str(e.get("reason")) for e in error.get("errors", []) if isinstance(e, dict)}
    return reasons, str(error.get("message", ""))[:300]


def _received_end(response: httpx.Response) -> int:
    """The offset after the last byte the server holds, from a 308's ``Range``."""
    header = response.headers.get("range")
    if not header:
        return 0
    match = re.fullmatch(r"bytes=0-(\d+)", header.strip())
    if not match:
        raise YouTubeUploadError(f"the upload server sent an unreadable Range: {header!r}")
    return int(match.group(1)) + 1


class _Retry(Exception):  # noqa: N818  internal signal, never leaves the module
    """A transient failure: back off and ask the server where the upload stands."""


class YouTubeClient:
    """One channel's OAuth credentials and a connection pool to the API.

    The access token is cached until shortly before it expires, so a client
    kept for several uploads asks the token endpoint once an hour at most.
    """

    def __init__(
        self,
        settings: YouTubeSettings,
        refresh_token: str,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not settings.client_id or not settings.client_secret:
            raise YouTubeAuthError("YOUTUBE_CLIENT_ID and YOUTUBE_CLIENT_SECRET must be set")
        if not refresh_token:
            raise YouTubeAuthError("no refresh token: the channel is not connected")
        self.settings = settings
        self._refresh_token = refresh_token
        self._sleep = sleep
        self._http = httpx.Client(timeout=httpx.Timeout(settings.timeout_seconds))
        self._access_token: str | None = None
        self._expires_at = 0.0

    def __repr__(self) -> str:
        return f"YouTubeClient(client_id={self.settings.client_id!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> YouTubeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # access tokens

    def access_token(self, *, force: bool = False) -> str:
        if not force and self._access_token and time.monotonic() < self._expires_at:
            return self._access_token
        return self._refresh()

    def _refresh(self) -> str:
        form = {
            "grant_type": "refresh_token",
            "client_id": self.settings.client_id,
            "client_secret": self.settings.client_secret,
            "refresh_token": self._refresh_token,
        }
        url = self.settings.token_url
        for attempt in range(self.settings.max_retries + 1):
            try:
                response = self._http.post(url, data=form)
            except httpx.TransportError as exc:
                failure = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    return self._store_token(response)
                if response.status_code < 500 and response.status_code != 429:
                    reasons, message = _error_reasons(response)
                    raise YouTubeAuthError(
                        f"the token endpoint {url} refused the refresh token "
                        f"(HTTP {response.status_code} {', '.join(sorted(reasons))}: {message}); "
                        "reconnect the channel or check YOUTUBE_CLIENT_ID/SECRET"
                    )
                failure = f"HTTP {response.status_code}"
            if attempt < self.settings.max_retries:
                self._backoff(attempt, f"token endpoint {url}: {failure}")
        raise YouTubeUploadError(
            f"the token endpoint {url} failed {self.settings.max_retries + 1} times: {failure}"
        )

    def _store_token(self, response: httpx.Response) -> str:
        try:
            body = response.json()
            token, lifetime = str(body["access_token"]), float(body.get("expires_in", 3600))
        except (ValueError, KeyError, TypeError):
            raise YouTubeUploadError(
                f"the token endpoint answered 200 without an access_token: {response.text[:200]}"
            ) from None
        self._access_token = token
        # Reuse it until shortly before expiry; a very short lifetime is used once.
        self._expires_at = time.monotonic() + lifetime - TOKEN_EXPIRY_MARGIN_SECONDS
        return token

    def _authorized(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request with the bearer token; a 401 refreshes the token once and repeats.

        A dropped connection or timeout becomes ``_Retry``.
        """
        headers = kwargs.pop("headers", {})
        response = self._send(method, url, headers, self.access_token(), **kwargs)
        if response.status_code != 401:
            return response
        log.info("YouTube answered 401 to %s %s; refreshing the access token", method, url)
        response = self._send(method, url, headers, self.access_token(force=True), **kwargs)
        if response.status_code == 401:
            _, message = _error_reasons(response)
            raise YouTubeAuthError(
                f"{method} {url} answered 401 with a freshly refreshed access token: {message}; "
                "the grant lacks the youtube.upload scope or was revoked"
            )
        return response

    def _send(
        self, method: str, url: str, headers: dict[str, str], token: str, **kwargs: Any
    ) -> httpx.Response:
        headers = {**headers, "Authorization": f"Bearer {token}"}
        try:
            return self._http.request(method, url, headers=headers, **kwargs)
        except httpx.TransportError as exc:
            raise _Retry(f"{type(exc).__name__}: {exc or 'no answer'}") from None

    def _backoff(self, attempt: int, why: str) -> None:
        delay = min(MAX_BACKOFF_SECONDS, self.settings.retry_base_seconds * 2**attempt)
        delay *= 0.5 + random.random() / 2  # noqa: S311  jitter, not cryptography
        log.warning("YouTube: %s; retrying in %.2f s", why, delay)
        self._sleep(delay)

    # uploads

    def upload(self, path: Path, metadata: Mapping[str, Any]) -> dict[str, Any]:
        """Upload ``path`` with the ``snippet``/``status`` metadata; the video resource."""
        total = path.stat().st_size
        if total == 0:
            raise YouTubeUploadError(f"{path} is empty; nothing to upload")
        session = self._start_session(metadata, total)
        log.info("YouTube upload of %s (%d bytes) started", path.name, total)
        offset, failures, query = 0, 0, False
        with path.open("rb") as source:
            while True:
                try:
                    if query:  # after a failure: where does the server stand?
                        result = self._query(session, total)
                    else:
                        source.seek(offset)
                        chunk = source.read(self.settings.chunk_bytes)
                        result = self._put_chunk(session, chunk, offset, total)
                        if isinstance(result, int) and result <= offset:
                            raise _Retry(f"the server kept none of bytes {offset}-")
                except _Retry as exc:
                    if failures >= self.settings.max_retries:
                        raise YouTubeUploadError(
                            f"the upload of {path.name} stopped at byte {offset} of {total}: "
                            f"{failures + 1} attempts in a row failed, the last with {exc}"
                        ) from None
                    self._backoff(failures, f"upload of {path.name} at byte {offset}: {exc}")
                    failures, query = failures + 1, True
                    continue
                if isinstance(result, dict):
                    return result
                if result > offset:
                    failures = 0  # progress: the retry budget starts again
                offset, query = result, False

    def _start_session(self, metadata: Mapping[str, Any], total: int) -> str:
        url = f"{self.settings.api_base_url}/upload/youtube/v3/videos"
        params = {"uploadType": "resumable", "part": "snippet,status"}
        headers = {
            "Content-Type": "application/json; charset=UTF-8",
            "X-Upload-Content-Length": str(total),
            "X-Upload-Content-Type": "video/mp4",
        }
        body = json.dumps(metadata).encode()
        for attempt in range(self.settings.max_retries + 1):
            try:
                response = self._authorized(
                    "POST", url, params=params, headers=headers, content=body
                )
                self._check(response, "starting the upload session")
            except _Retry as exc:
                failure = str(exc)
            else:
                location = response.headers.get("location")
                if response.status_code != 200 or not location:
                    raise YouTubeUploadError(
                        f"starting the upload session answered HTTP {response.status_code} "
                        f"without a Location header: {response.text[:300]}"
                    )
                return location
            if attempt < self.settings.max_retries:
                self._backoff(attempt, f"starting the upload session: {failure}")
        raise YouTubeUploadError(
            f"starting the upload session at {url} failed "
            f"{self.settings.max_retries + 1} times, the last with {failure}"
        )

    def _put_chunk(self, session: str, chunk: bytes, offset: int, total: int) -> int | dict:
        end = offset + len(chunk) - 1
        headers = {"Content-Range": f"bytes {offset}-{end}/{total}", "Content-Type": "video/mp4"}
        return self._session_put(session, headers, chunk, f"bytes {offset}-{end}")

    def _query(self, session: str, total: int) -> int | dict:
        headers = {"Content-Range": f"bytes */{total}"}
        return self._session_put(session, headers, b"", "the status query")

    def _session_put(self, session: str, headers: dict, body: bytes, what: str) -> int | dict:
        """The server's received offset after a 308, or the video resource when complete."""
        response = self._authorized("PUT", session, headers=headers, content=body)
        if response.status_code == 308:
            return _received_end(response)
        self._check(response, f"uploading {what}")
        if response.status_code in (200, 201):
            try:
                resource = response.json()
            except ValueError:
                resource = None
            if not isinstance(resource, dict) or not resource.get("id"):
                raise YouTubeUploadError(
                    f"the completed upload answered without a video id: {response.text[:300]}"
                )
            return resource
        if response.status_code in (404, 410):
            raise YouTubeUploadError(
                f"the upload session expired (HTTP {response.status_code}); upload the video again"
            )
        raise YouTubeUploadError(
            f"uploading {what} answered HTTP {response.status_code}: {response.text[:300]}"
        )

    @staticmethod
    def _check(response: httpx.Response, what: str) -> None:
        """Raise for quota, turn transient answers into ``_Retry``, leave the rest."""
        status = response.status_code
        if status >= 500 or status == 429:
            raise _Retry(f"HTTP {status}")
        if status == 403:
            reasons, message = _error_reasons(response)
            quota = reasons & QUOTA_REASONS
            if quota:
                reason = sorted(quota)[0]
                raise QuotaExceeded(f"{what}: YouTube refused with {reason}: {message}", reason)
            if reasons & RATE_REASONS:
                raise _Retry(f"HTTP 403 {', '.join(sorted(reasons))}")
        if status >= 400:
            reasons, message = _error_reasons(response)
            raise YouTubeUploadError(
                f"{what} answered HTTP {status} ({', '.join(sorted(reasons)) or 'no reason'}): "
                f"{message}"
            )


def channel_context(user_id: int) -> bytes:
    """What a stored refresh token is bound to: its user (a row copied to another user
    does not decrypt)."""
    return f"youtube-channel:{user_id}".encode()


def quota_reset_after(moment: datetime) -> datetime:
    """When YouTube's daily quota next resets: midnight Pacific time after ``moment``.

    Without the time zone database, midnight PST (UTC-8): an hour late in summer,
    never early."""
    try:
        pacific: tzinfo = ZoneInfo("America/Los_Angeles")
    except ZoneInfoNotFoundError:
        pacific = timezone(timedelta(hours=-8))
    local = moment.astimezone(pacific)
    midnight = datetime.combine(local.date() + timedelta(days=1), dt_time(0), tzinfo=pacific)
    return midnight.astimezone(UTC)


def safe_text(text: str, limit: int, *, encoded: bool = False) -> str:
    """``text`` as YouTube takes it: no < or >, within ``limit`` characters (bytes
    when ``encoded``), cut at a word where possible."""
    text = " ".join(text.replace("<", "(").replace(">", ")").split())
    size = (lambda t: len(t.encode())) if encoded else len
    if size(text) <= limit:
        return text
    budget = limit - size("…")
    cut = text
    while size(cut) > budget:  # each pass drops at least a quarter of the excess
        cut = cut[: -max(1, (size(cut) - budget) // 4)]
    head, _, _ = cut.rpartition(" ")
    return (head if len(head) > len(cut) // 2 else cut).rstrip() + "…"


def video_metadata(
    title: str,
    description: str,
    privacy: str,
    *,
    tags: Sequence[str] = (),
    category_id: str = "22",
    made_for_kids: bool = False,
) -> dict[str, Any]:
    """The ``snippet`` and ``status`` parts, checked against YouTube's limits."""
    if not title.strip() or len(title) > 100:
        raise ValueError(f"a YouTube title has 1 to 100 characters, not {len(title)}")
    if len(description.encode()) > 5000:
        raise ValueError("a YouTube description has at most 5000 bytes")
    for name, text in (("title", title), ("description", description), *(("tag", t) for t in tags)):
        if "<" in text or ">" in text:
            raise ValueError(f"a YouTube {name} may not contain < or >: {text[:60]!r}")
    if privacy not in PRIVACY_STATUSES:
        raise ValueError(f"privacy {privacy!r} is not one of {', '.join(PRIVACY_STATUSES)}")
    snippet: dict[str, Any] = {"title": title, "description": description}
    snippet["categoryId"] = category_id
    if tags:
        snippet["tags"] = list(tags)
    status = {"privacyStatus": privacy, "selfDeclaredMadeForKids": made_for_kids}
    return {"snippet": snippet, "status": status}


def upload_video(
    path: Path | str,
    title: str,
    description: str,
    privacy: str,
    *,
    refresh_token: str,
    settings: YouTubeSettings,
    tags: Sequence[str] = (),
    client: YouTubeClient | None = None,
) -> str:
    """Upload one finished MP4 and return its YouTube video id.

    Pass ``client`` to reuse its cached access token across uploads of one
    channel; otherwise a client is made (and closed) for this upload.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no video to upload at {path}")
    metadata = video_metadata(title, description, privacy, tags=tags)
    own = client is None
    client = client or YouTubeClient(settings, refresh_token)
    try:
        resource = client.upload(path, metadata)
    finally:
        if own:
            client.close()
    log.info("YouTube accepted %s as video %s", path.name, resource["id"])
    return str(resource["id"])
