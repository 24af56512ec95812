"""Fixtures: real PostgreSQL and Redis, the speech and YouTube emulators, and app stacks.

``app/`` goes on sys.path so ``import ytvideo`` works from the repository root
with nothing installed beyond app/requirements*.txt. This folder is not a
package (the repository's top-level ``tests`` is), so helper modules carry a
``ytvideo_`` prefix to stay unique.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
for path in (TESTS_DIR.parent, TESTS_DIR):  # app/ for ytvideo, app/tests for the helpers
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from ytvideo_emulator import SpeechEmulator  # noqa: E402
from ytvideo_services import YOUTUBE_TOKEN_KEY, PostgresServer, RedisServer, Stack  # noqa: E402
from ytvideo_youtube_emulator import YouTubeEmulator  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    # Also declared in the top-level pyproject; repeated so app/tests stands alone.
    config.addinivalue_line("markers", "docker: needs a Docker engine and the local images")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    # Under /tmp, not pytest's 0700 basetemp: PostgreSQL runs as another user when we are root.
    base = Path(tempfile.mkdtemp(prefix="ytvideo-pg-"))
    base.chmod(0o711)  # traversable by the postgres user; the cluster below is its own
    server = PostgresServer(base / "cluster")
    server.start()
    yield server
    if server.is_running():
        server.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def emulator() -> Iterator[SpeechEmulator]:
    server = SpeechEmulator()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def speech_api(emulator: SpeechEmulator) -> Iterator[SpeechEmulator]:
    """The emulator, reset before and after the test."""
    emulator.state.reset()
    yield emulator
    if emulator.state.hold is not None:
        emulator.state.hold.set()
    emulator.state.reset()


def _stack_env(postgres: PostgresServer, redis_server: RedisServer) -> dict[str, str]:
    return {
        "DATABASE_URL": postgres.url,
        "REDIS_URL": redis_server.url,
        "MAX_REQUEST_BYTES": str(2 * 1024 * 1024),
        "VIDEO_DEFAULT_FPS": "10",
        "HEALTH_CHECK_TIMEOUT_SECONDS": "2",
        "DEPLOYMENT_COLOR": "blue",
        # The reaper's sweeps (lost messages, retention) every second.
        "JOB_REQUEUE_INTERVAL_SECONDS": "1",
        "MEDIA_RETENTION_CHECK_SECONDS": "1",
    }


@pytest.fixture(scope="session")
def stack(
    tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer, redis_server: RedisServer
) -> Iterator[Stack]:
    """The API and a worker with the offline voice, on queue ``videos``."""
    service = Stack("videos", tmp_path_factory.mktemp("stack"), _stack_env(postgres, redis_server))
    try:
        service.start_api()
        service.start_worker()
        yield service
    finally:
        service.stop()


@pytest.fixture
def cloud_stack(
    tmp_path_factory: pytest.TempPathFactory,
    postgres: PostgresServer,
    redis_server: RedisServer,
    speech_api: SpeechEmulator,
) -> Iterator[Stack]:
    """An API on queue ``cloud`` whose narration goes to the ElevenLabs emulator.

    Workers are started by the test (it may kill them); a short heartbeat and
    stale threshold let a lost job come back within seconds.
    """
    env = _stack_env(postgres, redis_server) | {
        "ELEVENLABS_API_KEY": speech_api.state.elevenlabs_key,
        "ELEVENLABS_BASE_URL": speech_api.url,
        "PROVIDER_TIMEOUT_SECONDS": "120",
        "JOB_HEARTBEAT_SECONDS": "0.5",
        "JOB_STALE_SECONDS": "3",
        "JOB_REQUEUE_INTERVAL_SECONDS": "0.5",
    }
    service = Stack("cloud", tmp_path_factory.mktemp("cloud"), env)
    try:
        service.start_api()
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def youtube_api() -> Iterator[YouTubeEmulator]:
    """The OAuth token endpoint and resumable upload emulator (module-wide)."""
    emulator = YouTubeEmulator()
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.fixture(scope="module")
def youtube_stack(
    tmp_path_factory: pytest.TempPathFactory,
    postgres: PostgresServer,
    redis_server: RedisServer,
    youtube_api: YouTubeEmulator,
) -> Iterator[Stack]:
    """An API and a worker on queue ``youtube`` whose uploads go to the emulator, in
    256 KiB chunks, with sweeps and retries in seconds."""
    env = _stack_env(postgres, redis_server) | {
        "YOUTUBE_CLIENT_ID": youtube_api.state.client_id,
        "YOUTUBE_CLIENT_SECRET": youtube_api.state.client_secret,
        "YOUTUBE_TOKEN_KEY": YOUTUBE_TOKEN_KEY,
        "YOUTUBE_TOKEN_URL": youtube_api.token_url,
        "YOUTUBE_API_BASE_URL": youtube_api.url,
        "YOUTUBE_CHUNK_BYTES": str(256 * 1024),
        "YOUTUBE_RETRY_BASE_SECONDS": "0.05",
        "YOUTUBE_UPLOAD_RETRY_SECONDS": "1",
        "JOB_QUEUE_SWEEP_SECONDS": "1",
    }
    service = Stack("youtube", tmp_path_factory.mktemp("youtube"), env)
    try:
        service.start_api()
        service.start_worker()
        yield service
    finally:
        service.stop()
