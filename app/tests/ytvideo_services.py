"""Real services for the tests: PostgreSQL, Redis, and the app's own processes.

Each runs from a temporary directory on a free loopback port and is stopped
by its fixture. PostgreSQL refuses to run as root, so as root its commands run
as the ``postgres`` system user (or a user created here when there is none).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg2
import redis

APP_DIR = Path(__file__).resolve().parents[1]
# The test stacks' secret and admin account (never a real secret).
TEST_JWT_SECRET = "test-jwt-secret-0123456789abcdef0123456789abcdef"  # noqa: S105
ADMIN_USERNAME = "admin"
ADMIN_PASSWORD = "test-admin-password"  # noqa: S105
# Every stack of the session logs in as the admin, against one PostgreSQL and one
# Redis: its limit is shared, and polls of slow renders on a loaded machine went
# past the default 60 a minute. test_auth limits a user of its own.
ADMIN_RATE_LIMIT = "1000000"
YOUTUBE_TOKEN_KEY = "5f" * 32  # the tests' key for refresh tokens at rest
REPO_DIR = APP_DIR.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, probe: Callable[[], Any], timeout: float, logs: Callable[[], str]) -> Any:
    """Poll ``probe`` until it returns something truthy; fail with the logs."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
            if last:
                return last
        except Exception as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"{what} not reached within {timeout:.0f} s (last: {last!r})\n{logs()}")


def tail(path: Path, chars: int = 4000) -> str:
    try:
        return f"--- {path.name} ---\n" + path.read_text(errors="replace")[-chars:]
    except OSError:
        return f"--- {path.name}: no log ---"


def _pg_bin() -> Path:
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise RuntimeError(
        "no PostgreSQL server binaries: apt-get install postgresql (see debian-packages.txt)"
    )


def _service_user() -> pwd.struct_passwd | None:
    """Whom to run PostgreSQL as: None for ourselves, a system user when we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "ytvideo-test"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "ytvideo-test"],
        check=True,
    )
    return pwd.getpwnam("ytvideo-test")


class PostgresServer:
    user = "ytempire"
    password = "test-password"  # noqa: S105  a throwaway cluster on loopback
    database = "ytempire"

    def __init__(self, base: Path) -> None:
        self.base = base
        self.data = base / "data"
        self.log = base / "postgresql.log"
        self.port = free_port()
        self.bin = _pg_bin()
        self.account = _service_user()
        base.mkdir(parents=True, exist_ok=True)
        if self.account:
            os.chown(base, self.account.pw_uid, self.account.pw_gid)

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        extra: dict[str, Any] = {}
        if self.account:
            extra = {"user": self.account.pw_uid, "group": self.account.pw_gid, "extra_groups": []}
        env = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C", "PGPASSWORD": self.password}
        result = subprocess.run(
            list(args), cwd=self.base, env=env, capture_output=True, text=True, **extra
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
                f"\n{tail(self.log)}"
            )
        return result

    def start(self) -> None:
        if not (self.data / "PG_VERSION").exists():
            pwfile = self.base / "pwfile"
            pwfile.write_text(self.password + "\n")
            if self.account:
                os.chown(pwfile, self.account.pw_uid, self.account.pw_gid)
            self._run(
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                self.user,
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "-E",
                "UTF8",
                "--no-sync",
            )
            first = True
        else:
            first = False
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )
        if first:
            self._run(
                str(self.bin / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.user,
                self.database,
            )

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def is_running(self) -> bool:
        try:
            psycopg2.connect(self.url, connect_timeout=2).close()
        except psycopg2.Error:
            return False
        return True

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = psycopg2.connect(self.url, connect_timeout=5)
        try:
            with conn, conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()


class RedisServer:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = free_port()
        self.log = base / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None
        base.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if not binary:
            raise RuntimeError("redis-server is missing: apt-get install redis-server")
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.base),
                    "--daemonize",
                    "no",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        wait_for("redis ping", client.ping, 30, lambda: tail(self.log))

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)


class AppProcess:
    """``python -m ytvideo <command>`` in its own process group, logging to a file."""

    def __init__(self, command: str, env: dict[str, str], log: Path) -> None:
        self.command, self.env, self.log = command, env, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ytvideo", self.command],
                cwd=APP_DIR,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        """SIGKILL the whole group: what an OOM kill or a lost host does to a worker."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=20)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        return tail(self.log)


class Stack:
    """An API and a worker on one queue, sharing a media directory."""

    def __init__(self, name: str, base: Path, env: dict[str, str]) -> None:
        self.name = name
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(base),
            "PYTHONPATH": str(APP_DIR),
            "PYTHONUNBUFFERED": "1",
            "API_HOST": "127.0.0.1",
            "API_PORT": str(self.port),
            "MEDIA_DIR": str(base / "media"),
            "VIDEO_QUEUE": name,
            "OPENAI_API_KEY": "",
            "ELEVENLABS_API_KEY": "",
            "JWT_SECRET": TEST_JWT_SECRET,
            "API_ADMIN_USERNAME": ADMIN_USERNAME,
            "API_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "API_ADMIN_RATE_LIMIT_PER_MINUTE": ADMIN_RATE_LIMIT,
            **env,
        }
        self.api = AppProcess("api", self.env, base / "api.log")
        self.workers: list[AppProcess] = []
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)

    def logs(self) -> str:
        return "\n".join([self.api.output()] + [w.output() for w in self.workers])

    def start_api(self, log_in: bool = True) -> None:
        self.api.start()
        wait_for(
            f"{self.name} API /health/live",
            lambda: self.client.get("/health/live").status_code == 200,
            60,
            self.logs,
        )
        if log_in:
            self.client.headers["authorization"] = f"Bearer {self.login()}"

    def login(self, username: str = ADMIN_USERNAME, password: str = ADMIN_PASSWORD) -> str:
        """A token from POST /api/auth/login (the admin's by default)."""
        answer = self.client.post(
            "/api/auth/login", json={"username": username, "password": password}
        )
        assert answer.status_code == 200, f"{answer.status_code} {answer.text}\n{self.logs()}"
        return answer.json()["access_token"]

    def start_worker(self, **env: str) -> AppProcess:
        """A worker with the stack's environment, and ``env`` over it."""
        log = self.base / f"worker-{len(self.workers) + 1}.log"
        worker = AppProcess("worker", {**self.env, **env}, log)
        self.workers.append(worker)
        worker.start()
        wait_for(f"{self.name} worker ready", lambda: " ready." in worker.output(), 120, self.logs)
        return worker

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.api.stop()
        self.client.close()

    def generate(self, **body: Any) -> httpx.Response:
        return self.client.post("/api/videos/generate", json=body)

    def wait_finished(self, job_id: str, timeout: float = 180) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            doc = self.client.get(f"/api/videos/{job_id}").json()
            return doc if doc["status"] in ("completed", "failed") else None

        return wait_for(f"job {job_id} finished", finished, timeout, self.logs)

    def metrics(self) -> str:
        response = self.client.get("/metrics")
        assert response.status_code == 200, response.text
        return response.text


def metric_value(text: str, name: str, **labels: str) -> float:
    """One sample from Prometheus text format; 0.0 when the series is absent."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def ffprobe(path: Path) -> dict[str, Any]:
    import json

    result = subprocess.run(
        ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


def docker_available() -> tuple[bool, str]:
    if not shutil.which("docker"):
        return False, "the docker client is not installed"
    result = subprocess.run(["docker", "info"], capture_output=True, text=True)
    if result.returncode != 0:
        return False, f"no Docker engine answers `docker info`: {result.stderr.strip()[:200]}"
    return True, ""


__all__ = [
    "ADMIN_PASSWORD",
    "ADMIN_USERNAME",
    "APP_DIR",
    "REPO_DIR",
    "AppProcess",
    "PostgresServer",
    "RedisServer",
    "TEST_JWT_SECRET",
    "Stack",
    "docker_available",
    "ffprobe",
    "free_port",
    "metric_value",
    "tail",
    "wait_for",
]
