"""Settings come from the guide's environment variables, with working defaults."""

from __future__ import annotations

import pytest
from ytvideo.config import ConfigError, Settings


def test_defaults_work_without_any_environment() -> None:
    settings = Settings.from_env({"HOME": "/home/dev"})
    assert settings.database_url == "postgresql://ytempire@localhost:5432/ytempire"
    assert settings.redis_url == "redis://localhost:6379/0"
    assert settings.api_port == 8080
    assert str(settings.media_dir) == "/home/dev/.local/share/ytvideo/media"
    assert settings.feature_ai_enhancement is True
    assert settings.feature_video_optimization is True
    assert settings.narration_provider == "auto"


def test_guide_variables_compose_the_urls() -> None:
    env = {
        "DB_HOST": "db.internal",
        "DB_PORT": "6432",
        "DB_NAME": "yt",
        "DB_USER": "svc",
        "DB_PASSWORD": "p@ss/word",
        "REDIS_HOST": "cache",
        "REDIS_PORT": "6380",
        "API_PORT": "9000",
    }
    settings = Settings.from_env(env)
    assert settings.database_url == "postgresql://svc:p%40ss%2Fword@db.internal:6432/yt"
    assert settings.redis_url == "redis://cache:6380/0"
    assert settings.api_port == 9000


def test_explicit_urls_win_over_parts() -> None:
    env = {"DATABASE_URL": "postgresql://a@b/c", "REDIS_URL": "redis://r:1/2", "DB_HOST": "x"}
    settings = Settings.from_env(env)
    assert (settings.database_url, settings.redis_url) == ("postgresql://a@b/c", "redis://r:1/2")


def test_feature_flags_and_rates_are_read() -> None:
    env = {
        "FEATURE_AI_ENHANCEMENT": "false",
        "FEATURE_VIDEO_OPTIMIZATION": "0",
        "COST_CPU_SECOND_DOLLARS": "0.5",
        "ELEVENLABS_API_KEY": "k",
    }
    settings = Settings.from_env(env)
    assert settings.feature_ai_enhancement is False
    assert settings.feature_video_optimization is False
    assert settings.rates.cpu_second == 0.5
    assert settings.elevenlabs_api_key == "k"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FEATURE_AI_ENHANCEMENT": "maybe"}, "FEATURE_AI_ENHANCEMENT='maybe' is not a boolean"),
        ({"API_PORT": "http"}, "API_PORT='http' is not a number"),
        ({"JOB_MAX_ATTEMPTS": "0"}, "JOB_MAX_ATTEMPTS='0' must be at least 1"),
        ({"RENDER_DEVICE": "tpu"}, "RENDER_DEVICE='tpu' is not one of auto, cpu, cuda"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env)
    assert message in str(err.value)
