"""Accounts: hashed passwords, JWTs signed with JWT_SECRET, a rate limit per user.

Passwords are hashed with scrypt (hashlib, OpenSSL's), each with its own salt,
and compared in constant time; an unknown user costs the same hash as a wrong
password. A token is an HS256 JWT naming the user (``sub``) that expires after
JWT_EXPIRY seconds; a token issued before the user's password changed is no
longer accepted. The rate limit counts each user's requests per minute in
Redis (a fixed window, shared by every API process and color).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import jwt
import redis

from .config import Settings

log = logging.getLogger(__name__)

ISSUER = "ytvideo"
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}  # about 16 MiB and 50 ms a hash
_DUMMY_HASH: str | None = None


class AuthError(Exception):
    """A request without a valid token, or a login that failed (401)."""


class RateLimited(Exception):
    """A user over the limit (429); ``retry_after`` is seconds to the next window."""

    def __init__(self, limit: int, retry_after: int) -> None:
        super().__init__(f"over the limit of {limit} requests a minute; retry in {retry_after} s")
        self.limit, self.retry_after = limit, retry_after


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> str:
    """``scrypt$n$r$p$salt$hash`` (base64), for the users table."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


def dummy_verify(password: str) -> None:
    """Spend a hash's time for an unknown user, so timing does not tell users apart."""
    global _DUMMY_HASH  # noqa: PLW0603  computed once, on the first unknown user
    if _DUMMY_HASH is None:
        _DUMMY_HASH = hash_password("not a user")
    verify_password(password, _DUMMY_HASH)


@dataclass(frozen=True)
class User:
    id: int
    username: str
    rate_limit_per_minute: int | None
    password_changed_at: float  # epoch seconds


def issue_token(settings: Settings, user: User, now: float | None = None) -> str:
    issued = int(now if now is not None else time.time())
    claims = {
        "iss": ISSUER,
        "sub": str(user.id),
        "name": user.username,
        "iat": issued,
        "exp": issued + settings.jwt_expiry_seconds,
    }
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")


def read_token(settings: Settings, authorization: str | None) -> dict[str, Any]:
    """The claims of ``Authorization: Bearer <jwt>``; AuthError says what is wrong."""
    if not authorization:
        raise AuthError("missing Authorization: Bearer token (POST /api/auth/login issues one)")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("the Authorization header is not a Bearer token")
    try:
        return jwt.decode(
            token.strip(),
            settings.jwt_secret,
            algorithms=["HS256"],
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "iss"]},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("the token has expired: log in again") from None
    except jwt.InvalidTokenError as exc:
        raise AuthError(f"the token is not valid: {exc}") from None


def current_for(claims: dict[str, Any], user: User | None) -> User:
    """The token's user, if the account still exists and the token is newer than its
    password (a changed password ends every session)."""
    if user is None:
        raise AuthError("the token's user no longer exists or is disabled")
    if int(claims["iat"]) < int(user.password_changed_at):
        raise AuthError("the password changed after this token was issued: log in again")
    return user


class RateLimiter:
    """Requests per user per minute, counted in Redis (INCR with an expiry).

    Redis down: requests go through (the job endpoints answer 503 on their own
    when they need Redis), with a warning, rather than the API refusing all."""

    def __init__(self, settings: Settings) -> None:
        self.default = settings.rate_limit_per_minute
        self.client = redis.Redis.from_url(
            settings.redis_url,
            socket_timeout=settings.check_timeout_seconds,
            socket_connect_timeout=settings.check_timeout_seconds,
        )

    def check(self, key: str, limit: int | None = None) -> None:
        limit = limit or self.default
        now = time.time()
        window = int(now // 60)
        name = f"ytvideo:rate:{key}:{window}"
        try:
            pipe = self.client.pipeline()
            pipe.incr(name)
            pipe.expire(name, 120)
            count = int(pipe.execute()[0])
        except redis.RedisError as exc:
            log.warning("rate limit not checked (Redis): %s", exc)
            return
        if count > limit:
            raise RateLimited(limit, max(1, int((window + 1) * 60 - now) + 1))
