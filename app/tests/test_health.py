"""Health checks of ops guide §3.4: the JSON shape, and 503 naming what failed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import datetime
from pathlib import Path

from ytvideo.config import Settings
from ytvideo.db import Database
from ytvideo.health import check_disk, health_report
from ytvideo_services import (
    APP_DIR,
    PostgresServer,
    RedisServer,
    Stack,
    free_port,
    metric_value,
    wait_for,
)


def test_health_is_200_with_every_check(stack: Stack) -> None:
    response = stack.client.get("/health")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "healthy"
    datetime.fromisoformat(body["timestamp"])
    assert body["checks"]["database"] == "healthy"
    assert body["checks"]["redis"] == "healthy"
    assert body["checks"]["disk"].startswith("healthy: ")
    assert body["checks"]["disk"].endswith("% free")
    assert stack.client.get("/health/live").json() == {"status": "alive"}
    assert stack.client.get("/health/ready").json() == {"status": "ready"}


def test_every_answer_names_the_serving_color(stack: Stack) -> None:
    """The deploy reads X-Deployment-Color through nginx to see where traffic goes."""
    answers = {
        "/health": stack.client.get("/health"),
        "/health/live": stack.client.get("/health/live"),
        "missing job": stack.client.get(f"/api/videos/{uuid.uuid4()}"),
        "invalid request": stack.client.post("/api/videos/generate", json={}),
        "unknown route": stack.client.get("/no/such/route"),
    }
    assert {name: r.headers.get("x-deployment-color") for name, r in answers.items()} == {
        name: "blue" for name in answers
    }
    assert answers["missing job"].status_code == 404
    assert answers["invalid request"].status_code == 422


def test_health_is_503_naming_postgres_while_it_is_stopped(
    stack: Stack, postgres: PostgresServer
) -> None:
    errors_before = metric_value(
        stack.metrics(), "http_requests_total", method="GET", path="/health", status="503"
    )
    postgres.stop()
    try:
        response = stack.client.get("/health")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "unhealthy"
        assert body["checks"]["database"].startswith("unhealthy: cannot connect to PostgreSQL")
        assert body["checks"]["redis"] == "healthy"
        assert body["checks"]["disk"].startswith("healthy")

        ready = stack.client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json() == {"status": "not ready", "failing": ["database"]}
        assert stack.client.get("/health/live").status_code == 200

        refused = stack.generate(title="t", script="s", resolution="128x72", duration=1)
        assert refused.status_code == 503
        assert refused.json()["detail"] == "the job store is unavailable; retry later"
        # What PostgreSQL said (hosts, statements) goes to the log, not to the client.
        assert "PostgreSQL" not in refused.text
        assert "PostgreSQL" in stack.api.output()

        metrics = stack.metrics()  # still served; the job store is marked down
        assert metric_value(metrics, "ytvideo_job_store_up") == 0
        assert (
            metric_value(metrics, "http_requests_total", method="GET", path="/health", status="503")
            == errors_before + 1
        )
    finally:
        postgres.start()
    recovered = wait_for(
        "/health 200 after PostgreSQL restarted",
        lambda: (r := stack.client.get("/health")).status_code == 200 and r,
        60,
        stack.logs,
    )
    assert recovered.json()["checks"]["database"] == "healthy"
    assert metric_value(stack.metrics(), "ytvideo_job_store_up") == 1


def test_health_names_redis_when_it_is_unreachable(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": postgres.url,
            "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
            "MEDIA_DIR": str(tmp_path),
            "HEALTH_CHECK_TIMEOUT_SECONDS": "1",
        }
    )
    status, body = health_report(settings, Database(settings.database_url))
    assert status == 503
    assert body["checks"]["database"] == "healthy"
    assert body["checks"]["redis"].startswith("unhealthy: cannot reach Redis")


def test_health_reports_redis_healthy_against_the_real_server(
    postgres: PostgresServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    settings = Settings.from_env(
        {"DATABASE_URL": postgres.url, "REDIS_URL": redis_server.url, "MEDIA_DIR": str(tmp_path)}
    )
    status, body = health_report(settings, Database(settings.database_url))
    assert (status, body["status"]) == (200, "healthy")


def test_disk_check_thresholds(tmp_path: Path) -> None:
    full = check_disk(tmp_path, 1.01)
    assert not full.healthy
    assert "DISK_MIN_FREE_RATIO" in full.render()
    assert full.render().startswith("unhealthy: ")
    missing = check_disk(tmp_path / "not" / "yet", 0.0)  # measured at the nearest parent
    assert missing.healthy


def _worker_healthcheck(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`python -m ytvideo worker-healthcheck`, as a worker container's HEALTHCHECK runs it."""
    return subprocess.run(
        [sys.executable, "-m", "ytvideo", "worker-healthcheck"],
        env={
            **os.environ,
            "PYTHONPATH": str(APP_DIR),  # ytvideo is not installed; the image has it on its path
            "MEDIA_DIR": str(tmp_path),
            "HEALTH_CHECK_TIMEOUT_SECONDS": "1",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_worker_healthcheck_passes_with_what_a_render_needs(
    postgres: PostgresServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    done = _worker_healthcheck(
        {"DATABASE_URL": postgres.url, "REDIS_URL": redis_server.url}, tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["checks"]["redis"] == "healthy"


def test_worker_healthcheck_fails_naming_an_unreachable_broker(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    done = _worker_healthcheck({"DATABASE_URL": postgres.url, "REDIS_URL": dead_redis}, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    body = json.loads(done.stdout)
    assert body["checks"]["redis"].startswith("unhealthy: cannot reach Redis")
    assert body["checks"]["database"] == "healthy"
