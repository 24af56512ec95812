"""Accounts on the real API: tokens, expiry, the rate limit, ownership, the cost cap."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import jwt
import pytest
from ytvideo_services import (
    APP_DIR,
    TEST_JWT_SECRET,
    Stack,
    free_port,
)

SMALL = {"title": "Auth", "script": "A short one.", "resolution": "192x108", "duration": 1.0}


def add_user(stack: Stack, name: str, password: str, rate_limit: int | None = None) -> str:
    """``python -m ytvideo user NAME`` against the stack's database: its JSON line."""
    command = [sys.executable, "-m", "ytvideo", "user", name]
    if rate_limit:
        command += ["--rate-limit", str(rate_limit)]
    done = subprocess.run(
        command,
        cwd=APP_DIR,
        env=stack.env,
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip().splitlines()[-1]


def client_for(stack: Stack, token: str | None) -> httpx.Client:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=str(stack.client.base_url), headers=headers, timeout=30)


def api_routes(stack: Stack) -> list[tuple[str, str]]:
    """Every /api route the running API declares (its OpenAPI document), ids filled in."""
    spec = stack.client.get("/openapi.json").json()
    routes = []
    for path, methods in spec["paths"].items():
        if path.startswith("/api") and path != "/api/auth/login":
            concrete = path.replace("{video_id}", str(uuid.uuid4()))
            routes += [(method.upper(), concrete) for method in methods]
    return routes


def test_every_api_route_but_login_needs_a_token(stack: Stack) -> None:
    routes = api_routes(stack)
    assert ("POST", "/api/videos/generate") in routes
    assert len(routes) >= 5, routes
    with client_for(stack, None) as anonymous:
        for method, path in routes:
            answer = anonymous.request(method, path, json=SMALL)
            assert answer.status_code == 401, (method, path, answer.text)
            assert answer.headers["www-authenticate"] == "Bearer"


def test_an_expired_or_forged_token_gets_401(stack: Stack) -> None:
    assert stack.client.get("/api/videos").status_code == 200  # the admin's token works
    now = int(time.time())
    claims = {"iss": "ytvideo", "sub": "1", "name": "admin", "iat": now - 7200, "exp": now - 60}
    expired = jwt.encode(claims, TEST_JWT_SECRET, algorithm="HS256")
    forged = jwt.encode(claims | {"exp": now + 3600}, "x" * 48, algorithm="HS256")
    unsigned = jwt.encode(claims | {"exp": now + 3600}, None, algorithm="none")
    for token, why in ((expired, "expired"), (forged, "not valid"), (unsigned, "not valid")):
        with client_for(stack, token) as client:
            answer = client.get("/api/videos")
        assert answer.status_code == 401, answer.text
        assert why in answer.json()["detail"]


def test_login_refuses_a_wrong_password_and_a_changed_password_ends_sessions(
    stack: Stack,
) -> None:
    name = f"carol{uuid.uuid4().hex[:6]}"
    assert '"created"' in add_user(stack, name, "first password 1")
    bad = stack.client.post("/api/auth/login", json={"username": name, "password": "nope"})
    assert bad.status_code == 401
    unknown = stack.client.post("/api/auth/login", json={"username": "nobody", "password": "x"})
    assert unknown.status_code == 401
    assert unknown.json()["detail"] == bad.json()["detail"]  # nothing tells users apart
    token = stack.login(name, "first password 1")
    with client_for(stack, token) as client:
        assert client.get("/api/videos").status_code == 200
        time.sleep(1.1)  # the token's iat is in whole seconds
        assert '"updated"' in add_user(stack, name, "second password 2")
        answer = client.get("/api/videos")
    assert answer.status_code == 401
    assert "password changed" in answer.json()["detail"]
    assert stack.login(name, "second password 2")


def test_a_user_over_the_rate_limit_gets_429(stack: Stack) -> None:
    name = f"dave{uuid.uuid4().hex[:6]}"
    add_user(stack, name, "rate limited user", rate_limit=3)
    token = stack.login(name, "rate limited user")
    # 7 requests at 3 a minute: across at most one minute boundary, one window gets 4.
    with client_for(stack, token) as client:
        answers = [client.get("/api/videos") for _ in range(7)]
        other = stack.client.get("/api/videos")  # the admin has a limit of its own
    limited = [a for a in answers if a.status_code == 429]
    assert limited, [a.status_code for a in answers]
    assert {a.status_code for a in answers} <= {200, 429}
    assert 1 <= int(limited[0].headers["retry-after"]) <= 61
    assert "3 requests a minute" in limited[0].json()["detail"]
    assert other.status_code == 200


def test_failed_logins_are_limited_per_account(stack: Stack) -> None:
    name = f"erin{uuid.uuid4().hex[:6]}"
    add_user(stack, name, "the right password")
    body = {"username": name, "password": "wrong"}
    codes = [stack.client.post("/api/auth/login", json=body).status_code for _ in range(21)]
    assert 429 in codes, codes  # 10 a minute by default (LOGIN_ATTEMPTS_PER_MINUTE)
    assert set(codes) <= {401, 429}


def test_a_user_sees_only_their_own_jobs(stack: Stack) -> None:
    job_id = stack.generate(**SMALL).json()["id"]
    name = f"frank{uuid.uuid4().hex[:6]}"
    add_user(stack, name, "another user's pw")
    with client_for(stack, stack.login(name, "another user's pw")) as other:
        assert other.get(f"/api/videos/{job_id}").status_code == 404
        assert other.get(f"/api/videos/{job_id}/file").status_code == 404
        assert other.post(f"/api/videos/{job_id}/cancel").status_code == 404
        assert other.get("/api/videos").json() == {"videos": []}
    listed = [v["id"] for v in stack.client.get("/api/videos").json()["videos"]]
    assert job_id in listed
    stack.wait_finished(job_id)


def test_a_request_over_the_cost_cap_gets_422_naming_the_estimate_and_no_job(
    stack: Stack, postgres
) -> None:
    before = postgres.query("SELECT count(*) FROM video_jobs")[0][0]
    # Ten minutes of 2160p: 600 s x 2 render s x 9 (pixels over 720p) x $0.0004 = $4.32.
    answer = stack.generate(title="Long", script="Expensive.", resolution="3840x2160", duration=600)
    assert answer.status_code == 422, answer.text
    assert "$4.32" in answer.json()["detail"]
    assert "$3.00" in answer.json()["detail"]
    assert answer.json()["estimate"]["total_dollars"] == pytest.approx(4.32, abs=0.01)
    assert postgres.query("SELECT count(*) FROM video_jobs")[0][0] == before


def test_a_dry_run_validates_and_estimates_and_stores_nothing(stack: Stack, postgres) -> None:
    before = postgres.query("SELECT count(*) FROM video_jobs")[0][0]
    answer = stack.client.post("/api/videos/generate", params={"dry_run": "true"}, json=SMALL)
    assert answer.status_code == 200, answer.text
    assert answer.json()["dry_run"] is True
    assert answer.json()["estimate"]["total_dollars"] > 0
    bad = stack.client.post(
        "/api/videos/generate", params={"dry_run": "true"}, json=SMALL | {"resolution": "7x7"}
    )
    assert bad.status_code == 422
    assert postgres.query("SELECT count(*) FROM video_jobs")[0][0] == before


def test_a_job_is_cancelled_by_its_owner(stack: Stack) -> None:
    job_id = stack.generate(**SMALL | {"duration": 20.0}).json()["id"]
    answer = stack.client.post(f"/api/videos/{job_id}/cancel")
    assert answer.status_code == 200, answer.text
    assert stack.client.get(f"/api/videos/{job_id}").json()["status"] == "cancelled"
    again = stack.client.post(f"/api/videos/{job_id}/cancel")
    assert again.status_code == 409


def test_the_api_refuses_to_start_without_a_jwt_secret(stack: Stack, tmp_path: Path) -> None:
    env = stack.env | {"JWT_SECRET": "short", "API_PORT": str(free_port())}
    done = subprocess.run(
        [sys.executable, "-m", "ytvideo", "api"],
        cwd=APP_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "JWT_SECRET must be set to 32 characters" in done.stderr


def test_metrics_answer_only_the_monitoring_network(stack: Stack, tmp_path: Path) -> None:
    assert stack.client.get("/metrics").status_code == 200  # loopback is allowed
    other = Stack("metrics-net", tmp_path, stack.env | {"METRICS_ALLOWED_NETWORKS": "10.9.9.0/24"})
    other.env["API_PORT"] = str(other.port)
    try:
        other.start_api(log_in=False)
        answer = other.client.get("/metrics")
        assert answer.status_code == 403
        assert "monitoring network" in answer.json()["detail"]
    finally:
        other.stop()


def test_the_worker_holds_the_cap_for_the_actual_narration_cost(
    cloud_stack: Stack, speech_api
) -> None:
    # The API estimates at the configured price; this worker's voice costs far more.
    cloud_stack.start_worker(COST_ELEVENLABS_PER_1K_CHARS="1000")
    job_id = cloud_stack.generate(**SMALL).json()["id"]
    job = cloud_stack.wait_finished(job_id)
    assert job["status"] == "failed", job
    assert job["failure"]["stage"] == "cost"
    assert "over the cap of $3.00" in job["failure"]["reason"]
    assert speech_api.state.requests == []  # stopped before anything was paid for
