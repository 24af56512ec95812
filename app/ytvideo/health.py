"""The health checks of ops guide §3.4: PostgreSQL, Redis and disk space."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from .config import Settings
from .db import Database


@dataclass(frozen=True)
class CheckResult:
    healthy: bool
    detail: str

    def render(self) -> str:
        """``healthy``, ``healthy: 42.0% free`` or ``unhealthy: <what failed>``."""
        word = "healthy" if self.healthy else "unhealthy"
        return f"{word}: {self.detail}" if self.detail else word


def check_database(db: Database) -> CheckResult:
    try:
        db.ping()
    except Exception as exc:
        return CheckResult(False, str(exc))
    return CheckResult(True, "")


def check_redis(url: str, timeout: float) -> CheckResult:
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        client.ping()
    except Exception as exc:
        return CheckResult(False, f"cannot reach Redis: {exc}")
    finally:
        client.close()
    return CheckResult(True, "")


def check_disk(path: Path, min_free_ratio: float) -> CheckResult:
    """Free space where the videos are written (the media directory)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    free = usage.free / usage.total if usage.total else 0.0
    if free < min_free_ratio:
        return CheckResult(
            False, f"{free:.1%} free on {probe}, below {min_free_ratio:.0%} (DISK_MIN_FREE_RATIO)"
        )
    return CheckResult(True, f"{free:.1%} free")


def health_report(settings: Settings, db: Database) -> tuple[int, dict[str, Any]]:
    """The §3.4 document and its HTTP status: 200 when every check passes, else 503."""
    checks = {
        "database": check_database(db),
        "redis": check_redis(settings.redis_url, settings.check_timeout_seconds),
        "disk": check_disk(settings.media_dir, settings.disk_min_free_ratio),
    }
    healthy = all(c.healthy for c in checks.values())
    body = {
        "status": "healthy" if healthy else "unhealthy",
        "timestamp": datetime.now(UTC).isoformat(),
        "checks": {name: c.render() for name, c in checks.items()},
    }
    return (200 if healthy else 503), body


def readiness(settings: Settings, db: Database) -> tuple[int, dict[str, Any]]:
    failing = [
        name
        for name, result in (
            ("database", check_database(db)),
            ("redis", check_redis(settings.redis_url, settings.check_timeout_seconds)),
        )
        if not result.healthy
    ]
    if failing:
        return 503, {"status": "not ready", "failing": failing}
    return 200, {"status": "ready"}
