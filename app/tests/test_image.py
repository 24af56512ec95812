"""The image builds offline from the local Debian base and is healthy in use.

Builds with app/build-image.sh (BASE_IMAGE=ytempire/systemd-debian12:latest),
then runs the API and a worker container with --network host against the
test PostgreSQL and Redis: Docker's own HEALTHCHECK must report "healthy", and
a job submitted to the containerised API must come out as an MP4. Marked
``docker``; skipped only when no Docker engine answers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from ytvideo_services import (
    ADMIN_PASSWORD,
    ADMIN_RATE_LIMIT,
    ADMIN_USERNAME,
    APP_DIR,
    REPO_DIR,
    TEST_JWT_SECRET,
    PostgresServer,
    RedisServer,
    docker_available,
    ffprobe,
    free_port,
    wait_for,
)

pytestmark = pytest.mark.docker

BASE_IMAGE = "ytempire/systemd-debian12:latest"
IMAGE = "ytempire/ytvideo:test"
APP_UID = 10001


def docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def image() -> str:
    usable, why = docker_available()
    if not usable:
        pytest.skip(why)
    if docker("image", "inspect", BASE_IMAGE).returncode != 0:
        built = subprocess.run(
            [str(REPO_DIR / "molecule" / "images" / "build.sh"), "debian12"],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        assert built.returncode == 0, f"base image build failed:\n{built.stderr[-3000:]}"
    env = os.environ | {"BASE_IMAGE": BASE_IMAGE, "IMAGE": IMAGE, "PYTHON": sys.executable}
    result = subprocess.run(
        [str(APP_DIR / "build-image.sh")], env=env, capture_output=True, text=True, timeout=1800
    )
    assert result.returncode == 0, (
        f"build-image.sh failed ({result.returncode}):\n{result.stdout[-4000:]}\n"
        f"{result.stderr[-4000:]}"
    )
    return IMAGE


class Containers:
    def __init__(self) -> None:
        self.names: list[str] = []

    def run(self, *args: str) -> str:
        name = f"ytvideo-test-{uuid.uuid4().hex[:10]}"
        result = docker("run", "--detach", "--name", name, *args)
        assert result.returncode == 0, result.stderr
        self.names.append(name)
        return name

    def logs(self) -> str:
        out = []
        for name in self.names:
            logs = docker("logs", "--tail", "60", name)
            health = docker("inspect", "-f", "{{json .State.Health}}", name).stdout
            out.append(f"--- {name} ---\n{logs.stdout}{logs.stderr}\nhealth: {health}")
        return "\n".join(out)

    def remove(self) -> None:
        for name in self.names:
            docker("rm", "--force", name)


@pytest.fixture
def containers() -> Iterator[Containers]:
    running = Containers()
    yield running
    running.remove()


def health_status(name: str) -> str:
    state = json.loads(docker("inspect", "-f", "{{json .State}}", name).stdout)
    if not state.get("Running"):
        return f"exited ({state.get('ExitCode')})"
    return state.get("Health", {}).get("Status", "none")


def test_image_healthcheck_passes_and_it_renders(
    image: str,
    containers: Containers,
    postgres: PostgresServer,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    media = tmp_path / "media"
    media.mkdir()
    if os.geteuid() == 0:
        os.chown(media, APP_UID, APP_UID)
    else:
        media.chmod(0o777)
    port = free_port()
    env = {
        "DATABASE_URL": postgres.url,
        "REDIS_URL": redis_server.url,
        "API_PORT": str(port),
        "VIDEO_QUEUE": f"image-{uuid.uuid4().hex[:8]}",
        "VIDEO_DEFAULT_FPS": "10",
        "JWT_SECRET": TEST_JWT_SECRET,
        "API_ADMIN_USERNAME": ADMIN_USERNAME,
        "API_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "API_ADMIN_RATE_LIMIT_PER_MINUTE": ADMIN_RATE_LIMIT,
    }
    common = ["--network", "host", "-v", f"{media}:/var/lib/ytvideo/media"]
    for key, value in env.items():
        common += ["-e", f"{key}={value}"]
    api = containers.run(
        *common,
        "--health-interval",
        "2s",
        "--health-timeout",
        "10s",
        "--health-start-period",
        "60s",
        "--health-retries",
        "3",
        image,
    )
    containers.run(*common, "--no-healthcheck", image, "worker")

    deadline = time.monotonic() + 180
    status = health_status(api)
    while status != "healthy" and time.monotonic() < deadline:
        assert status in ("starting", "none"), f"API container is {status}\n{containers.logs()}"
        time.sleep(1)
        status = health_status(api)
    assert status == "healthy", f"not healthy within 180 s\n{containers.logs()}"

    user = docker("exec", api, "id", "-u").stdout.strip()
    assert user == str(APP_UID), "the service must not run as root"

    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        health = client.get("/health")
        assert health.status_code == 200
        assert health.json()["checks"]["database"] == "healthy"
        login = client.post(
            "/api/auth/login", json={"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD}
        )
        assert login.status_code == 200, login.text
        client.headers["authorization"] = f"Bearer {login.json()['access_token']}"
        response = client.post(
            "/api/videos/generate",
            json={
                "title": "From the image",
                "script": "Rendered in a container.",
                "resolution": "192x108",
                "duration": 1.5,
            },
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]

        def finished() -> dict | None:
            doc = client.get(f"/api/videos/{job_id}").json()
            return doc if doc["status"] in ("completed", "failed") else None

        job = wait_for("containerised job finished", finished, 180, containers.logs)
    assert job["status"] == "completed", f"{job}\n{containers.logs()}"
    info = ffprobe(media / f"{job_id}.mp4")
    streams = {s["codec_type"]: s for s in info["streams"]}
    assert streams["video"]["codec_name"] == "h264"
    assert (streams["video"]["width"], streams["video"]["height"]) == (192, 108)
    assert "audio" in streams
