"""Configuration, read once from the environment (ops guide §1.4).

Every setting has a default that works on a developer machine: PostgreSQL and
Redis on localhost, media under ~/.local/share/ytvideo, the offline narration
voice. Production sets DATABASE_URL, REDIS_URL, the API keys and the flags.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote


class ConfigError(ValueError):
    """A setting in the environment is malformed; the message names it."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean: use true or false")


def _number(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} must be at least {minimum}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    value = _number(env, name, default, minimum)
    if value != int(value):
        raise ConfigError(f"{name}={env.get(name)!r} must be a whole number")
    return int(value)


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, default).strip().lower() or default
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(choices)}")
    return value


def _networks(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list of CIDR networks (empty: none given)."""
    raw = env.get(name, "")
    networks = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ConfigError(f"{name}: {item!r} is not a network such as 10.0.0.0/8") from None
    return tuple(networks)


def _database_url(env: Mapping[str, str]) -> str:
    """DATABASE_URL, or one composed from the guide's DB_* variables."""
    if env.get("DATABASE_URL"):
        return env["DATABASE_URL"]
    user = quote(env.get("DB_USER", "ytempire"), safe="")
    password = env.get("DB_PASSWORD", "")
    auth = f"{user}:{quote(password, safe='')}" if password else user
    host = env.get("DB_HOST", "localhost")
    port = env.get("DB_PORT", "5432")
    name = env.get("DB_NAME", "ytempire")
    return f"postgresql://{auth}@{host}:{port}/{name}"


def _redis_url(env: Mapping[str, str]) -> str:
    """REDIS_URL, or one composed from the guide's REDIS_HOST and REDIS_PORT."""
    if env.get("REDIS_URL"):
        return env["REDIS_URL"]
    return f"redis://{env.get('REDIS_HOST', 'localhost')}:{env.get('REDIS_PORT', '6379')}/0"


def _default_media_dir(env: Mapping[str, str]) -> Path:
    home = env.get("HOME") or str(Path.home())
    data_home = env.get("XDG_DATA_HOME") or str(Path(home) / ".local" / "share")
    return Path(data_home) / "ytvideo" / "media"


@dataclass(frozen=True)
class Rates:
    """Dollar rates for Appendix D's cost per video."""

    gpu_second: float = 0.0004  # about $1.44 per GPU hour
    cpu_second: float = 0.00005  # about $0.18 per CPU-worker hour
    elevenlabs_per_1k_chars: float = 0.30
    openai_tts_per_1k_chars: float = 0.015


@dataclass(frozen=True)
class Settings:
    database_url: str = "postgresql://ytempire@localhost:5432/ytempire"
    redis_url: str = "redis://localhost:6379/0"
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    media_dir: Path = field(default_factory=lambda: _default_media_dir(os.environ))
    queue_name: str = "videos"
    # The blue-green color this process serves as (DEPLOYMENT_COLOR); empty
    # outside a deployment. Every API answer names it in X-Deployment-Color.
    deployment_color: str = ""
    prometheus_enabled: bool = True
    feature_ai_enhancement: bool = True
    feature_video_optimization: bool = True
    openai_api_key: str = ""
    openai_base_url: str = "https://api.openai.com"
    openai_tts_model: str = "tts-1"
    openai_tts_voice: str = "alloy"
    elevenlabs_api_key: str = ""
    elevenlabs_base_url: str = "https://api.elevenlabs.io"
    elevenlabs_voice_id: str = "21m00Tcm4TlvDq8EAcXM"
    elevenlabs_model_id: str = "eleven_multilingual_v2"
    narration_provider: str = "auto"
    provider_timeout_seconds: float = 60.0
    render_device: str = "auto"
    video_encoder: str = "auto"
    ffmpeg_binary: str = "ffmpeg"
    espeak_binary: str = "espeak-ng"
    default_fps: int = 30
    max_duration_seconds: float = 600.0
    max_width: int = 3840
    max_height: int = 2160
    max_request_bytes: int = 25 * 1024 * 1024
    max_images: int = 20
    max_script_chars: int = 20000
    disk_min_free_ratio: float = 0.10
    check_timeout_seconds: float = 3.0
    visibility_timeout_seconds: int = 3600
    heartbeat_seconds: float = 10.0
    stale_job_seconds: float = 120.0
    requeue_interval_seconds: float = 30.0
    # A job queued this long is published again (its message may be lost).
    queue_sweep_seconds: float = 300.0
    # Videos and uploaded images of jobs finished this long ago are deleted.
    media_retention_days: float = 30.0
    media_retention_check_seconds: float = 3600.0
    max_attempts: int = 3
    cost_metric_window_seconds: int = 3600
    rates: Rates = field(default_factory=Rates)
    # Accounts (§1.4): the API refuses to start without a JWT_SECRET of 32
    # characters or more; the admin account is created or updated at start.
    jwt_secret: str = ""
    jwt_expiry_seconds: int = 86400
    rate_limit_per_minute: int = 60
    login_attempts_per_minute: int = 10
    admin_username: str = ""
    admin_password: str = ""
    admin_rate_limit_per_minute: int | None = None
    # /metrics answers only clients in these networks (the monitoring network).
    metrics_allowed_networks: tuple[str, ...] = (
        "127.0.0.0/8",
        "::1/128",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
    )
    # Appendix D: no video may cost more than this; a request whose estimate is
    # over it is refused, and a job whose narration would pass it stops.
    cost_cap_dollars: float = 3.0
    # The estimate's compute: seconds of rendering per second of video, at the
    # GPU rate (the dearer one), so the estimate errs high.
    estimate_render_seconds_per_video_second: float = 2.0
    # A job still running this long after its claim is stopped and failed.
    job_deadline_seconds: float = 1800.0

    def narration_choice(self) -> str:
        """NARRATION_PROVIDER resolved: ``auto`` is the first keyed cloud voice, else espeak."""
        if self.narration_provider != "auto":
            return self.narration_provider
        if self.elevenlabs_api_key:
            return "elevenlabs"
        if self.openai_api_key:
            return "openai"
        return "espeak"

    def narration_rate_per_1k_chars(self, provider: str) -> float:
        return {
            "elevenlabs": self.rates.elevenlabs_per_1k_chars,
            "openai": self.rates.openai_tts_per_1k_chars,
        }.get(provider, 0.0)

    def check_api(self) -> None:
        """What the API needs beyond the worker's settings; ConfigError names it."""
        if len(self.jwt_secret) < 32:
            raise ConfigError(
                "JWT_SECRET must be set to 32 characters or more (it signs the API's tokens)"
            )
        if bool(self.admin_username) != bool(self.admin_password):
            raise ConfigError("API_ADMIN_USERNAME and API_ADMIN_PASSWORD are set together")
        if self.admin_password and len(self.admin_password) < 12:
            raise ConfigError("API_ADMIN_PASSWORD must be 12 characters or more")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every setting from ``env`` (default: the process environment)."""
        env = os.environ if env is None else env
        d = cls.__dataclass_fields__
        return cls(
            database_url=_database_url(env),
            redis_url=_redis_url(env),
            api_host=env.get("API_HOST", d["api_host"].default),
            api_port=_int(env, "API_PORT", d["api_port"].default, 1),
            media_dir=Path(env["MEDIA_DIR"]) if env.get("MEDIA_DIR") else _default_media_dir(env),
            queue_name=env.get("VIDEO_QUEUE", d["queue_name"].default),
            deployment_color=env.get("DEPLOYMENT_COLOR", ""),
            prometheus_enabled=_bool(env, "PROMETHEUS_ENABLED", True),
            feature_ai_enhancement=_bool(env, "FEATURE_AI_ENHANCEMENT", True),
            feature_video_optimization=_bool(env, "FEATURE_VIDEO_OPTIMIZATION", True),
            openai_api_key=env.get("OPENAI_API_KEY", ""),
            openai_base_url=env.get("OPENAI_BASE_URL", d["openai_base_url"].default).rstrip("/"),
            openai_tts_model=env.get("OPENAI_TTS_MODEL", d["openai_tts_model"].default),
            openai_tts_voice=env.get("OPENAI_TTS_VOICE", d["openai_tts_voice"].default),
            elevenlabs_api_key=env.get("ELEVENLABS_API_KEY", ""),
            elevenlabs_base_url=env.get(
                "ELEVENLABS_BASE_URL", d["elevenlabs_base_url"].default
            ).rstrip("/"),
            elevenlabs_voice_id=env.get("ELEVENLABS_VOICE_ID", d["elevenlabs_voice_id"].default),
            elevenlabs_model_id=env.get("ELEVENLABS_MODEL_ID", d["elevenlabs_model_id"].default),
            narration_provider=_choice(
                env, "NARRATION_PROVIDER", "auto", ("auto", "espeak", "elevenlabs", "openai")
            ),
            provider_timeout_seconds=_number(env, "PROVIDER_TIMEOUT_SECONDS", 60.0, 1.0),
            render_device=_choice(env, "RENDER_DEVICE", "auto", ("auto", "cpu", "cuda")),
            video_encoder=_choice(env, "VIDEO_ENCODER", "auto", ("auto", "libx264", "h264_nvenc")),
            ffmpeg_binary=env.get("FFMPEG_BINARY", d["ffmpeg_binary"].default),
            espeak_binary=env.get("ESPEAK_BINARY", d["espeak_binary"].default),
            default_fps=_int(env, "VIDEO_DEFAULT_FPS", d["default_fps"].default, 1),
            max_duration_seconds=_number(env, "VIDEO_MAX_DURATION_SECONDS", 600.0, 1.0),
            max_width=_int(env, "VIDEO_MAX_WIDTH", d["max_width"].default, 64),
            max_height=_int(env, "VIDEO_MAX_HEIGHT", d["max_height"].default, 64),
            max_request_bytes=_int(env, "MAX_REQUEST_BYTES", d["max_request_bytes"].default, 1024),
            max_images=_int(env, "VIDEO_MAX_IMAGES", d["max_images"].default),
            max_script_chars=_int(env, "VIDEO_MAX_SCRIPT_CHARS", d["max_script_chars"].default, 1),
            disk_min_free_ratio=_number(env, "DISK_MIN_FREE_RATIO", 0.10),
            check_timeout_seconds=_number(env, "HEALTH_CHECK_TIMEOUT_SECONDS", 3.0, 1.0),
            visibility_timeout_seconds=_int(env, "CELERY_VISIBILITY_TIMEOUT", 3600, 1),
            heartbeat_seconds=_number(env, "JOB_HEARTBEAT_SECONDS", 10.0, 0.1),
            stale_job_seconds=_number(env, "JOB_STALE_SECONDS", 120.0, 0.5),
            requeue_interval_seconds=_number(env, "JOB_REQUEUE_INTERVAL_SECONDS", 30.0, 0.1),
            queue_sweep_seconds=_number(env, "JOB_QUEUE_SWEEP_SECONDS", 300.0, 0.5),
            media_retention_days=_number(env, "MEDIA_RETENTION_DAYS", 30.0, 0.0001),
            media_retention_check_seconds=_number(
                env, "MEDIA_RETENTION_CHECK_SECONDS", 3600.0, 1.0
            ),
            max_attempts=_int(env, "JOB_MAX_ATTEMPTS", 3, 1),
            cost_metric_window_seconds=_int(env, "COST_METRIC_WINDOW_SECONDS", 3600, 1),
            jwt_secret=env.get("JWT_SECRET", ""),
            jwt_expiry_seconds=_int(env, "JWT_EXPIRY", 86400, 60),
            rate_limit_per_minute=_int(env, "RATE_LIMIT_PER_MINUTE", 60, 1),
            login_attempts_per_minute=_int(env, "LOGIN_ATTEMPTS_PER_MINUTE", 10, 1),
            admin_username=env.get("API_ADMIN_USERNAME", ""),
            admin_password=env.get("API_ADMIN_PASSWORD", ""),
            admin_rate_limit_per_minute=_int(env, "API_ADMIN_RATE_LIMIT_PER_MINUTE", 0, 0) or None,
            metrics_allowed_networks=_networks(env, "METRICS_ALLOWED_NETWORKS")
            or d["metrics_allowed_networks"].default,
            cost_cap_dollars=_number(env, "COST_CAP_DOLLARS", 3.0, 0.01),
            estimate_render_seconds_per_video_second=_number(
                env, "COST_ESTIMATE_RENDER_SECONDS_PER_VIDEO_SECOND", 2.0, 0.0
            ),
            job_deadline_seconds=_number(env, "JOB_DEADLINE_SECONDS", 1800.0, 1.0),
            rates=Rates(
                gpu_second=_number(env, "COST_GPU_SECOND_DOLLARS", Rates.gpu_second),
                cpu_second=_number(env, "COST_CPU_SECOND_DOLLARS", Rates.cpu_second),
                elevenlabs_per_1k_chars=_number(
                    env, "COST_ELEVENLABS_PER_1K_CHARS", Rates.elevenlabs_per_1k_chars
                ),
                openai_tts_per_1k_chars=_number(
                    env, "COST_OPENAI_TTS_PER_1K_CHARS", Rates.openai_tts_per_1k_chars
                ),
            ),
        )
