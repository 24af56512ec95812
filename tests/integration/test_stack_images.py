"""The Compose stack's local images (molecule/images/stack-images.sh) behave like the
official ones wherever the stack depends on them: real containers on a user-defined
network, clients in other containers, data on named volumes across a recreate.

Every container, volume and network a module creates carries this run's prefix and is
removed at the end, whatever happened."""

from __future__ import annotations

import functools
import json
import secrets
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.targets import ROOT

pytestmark = pytest.mark.docker

SCRIPT = ROOT / "molecule/images/stack-images.sh"
TAGS = {
    "postgres": "ytempire/postgres:15",
    "redis": "ytempire/redis:7",
    "ytvideo": "ytempire/ytvideo:latest",
    "frontend": "ytempire/frontend:latest",
    "n8n": "ytempire/n8n:1",
    "postgres-exporter": "ytempire/postgres-exporter:0.11",
    "redis-exporter": "ytempire/redis-exporter:1.45",
}


def docker(
    *args: str, timeout: float = 120, check: bool = True, **kw
) -> subprocess.CompletedProcess:
    done = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False, **kw
    )
    if check and done.returncode != 0:
        pytest.fail(f"docker {' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return done


@functools.cache
def archive(name: str) -> Path:
    """The image's archive, built (or found current) by the script under test."""
    done = subprocess.run(
        [str(SCRIPT), name], capture_output=True, text=True, timeout=3600, check=False
    )
    assert done.returncode == 0, f"stack-images.sh {name} failed:\n{done.stderr}"
    path = Path(done.stdout.strip())
    assert path.name == f"stack-{name}.tar", done.stdout
    return path


def wait_until(what: str, probe: Callable[[], bool], timeout: float = 90, every: float = 1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return
        time.sleep(every)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def http_get(url: str, timeout: float = 5) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310  container URL
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def http_json(url: str, body: dict, timeout: float = 10) -> tuple[int, dict]:
    request = urllib.request.Request(  # noqa: S310  container URL
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        try:
            return exc.code, json.loads(text)
        except ValueError:
            return exc.code, {"raw": text}


class Stack:
    """Containers and volumes on one user-defined network, all removed by cleanup()."""

    def __init__(self) -> None:
        self.prefix = f"ytempire-stacktest-{uuid.uuid4().hex[:8]}"
        self.network = self.prefix
        self.containers: list[str] = []
        self.volumes: list[str] = []
        docker("network", "create", self.network)

    def volume(self, name: str) -> str:
        full = f"{self.prefix}-{name}"
        docker("volume", "create", full)
        self.volumes.append(full)
        return full

    def _name(self, name: str) -> str:
        full = f"{self.prefix}-{name}"
        self.containers.append(full)
        return full

    def start(
        self,
        name: str,
        image: str,
        *args: str,
        env: dict[str, str] | None = None,
        volumes: dict[str, str] | None = None,
        options: tuple[str, ...] = (),
    ) -> str:
        """Start a detached container reachable on the network as `name`."""
        full = self._name(name)
        cmd = ["run", "-d", "--name", full, "--network", self.network, "--network-alias", name]
        for key, value in (env or {}).items():
            cmd += ["-e", f"{key}={value}"]
        for source, target in (volumes or {}).items():
            cmd += ["-v", f"{source}:{target}"]
        docker(*cmd, *options, image, *args)
        return full

    def client(self, image: str, *args: str, env: dict[str, str] | None = None, **kw):
        """A one-shot container on the network (a client in a container of its own)."""
        full = self._name(f"client-{uuid.uuid4().hex[:6]}")
        cmd = ["run", "--rm", "--name", full, "--network", self.network]
        for key, value in (env or {}).items():
            cmd += ["-e", f"{key}={value}"]
        return docker(*cmd, image, *args, check=False, **kw)

    def remove(self, container: str) -> None:
        docker("stop", container, timeout=60, check=False)
        docker("rm", "-f", container, check=False)

    def ip(self, container: str) -> str:
        return docker(
            "inspect",
            "-f",
            f'{{{{ (index .NetworkSettings.Networks "{self.network}").IPAddress }}}}',
            container,
        ).stdout.strip()

    def logs(self, container: str) -> str:
        done = docker("logs", container, check=False)
        return done.stdout + done.stderr

    def cleanup(self) -> None:
        for container in reversed(self.containers):
            docker("rm", "-f", "-v", container, check=False)
        for volume in self.volumes:
            docker("volume", "rm", "-f", volume, check=False)
        docker("network", "rm", self.network, check=False)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    if docker("info", check=False).returncode != 0:
        pytest.fail("no Docker engine answers: start dockerd (scripts/bootstrap.sh does)")
    created = Stack()
    try:
        yield created
    finally:
        created.cleanup()


def uid_of_pid1(container: str) -> int:
    status = docker("exec", container, "cat", "/proc/1/status").stdout
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:")))


def exited(container: str) -> bool:
    return docker("inspect", "-f", "{{.State.Status}}", container).stdout.strip() == "exited"


def healthy(container: str) -> bool:
    state = docker("inspect", "-f", "{{json .State}}", container).stdout
    return json.loads(state).get("Health", {}).get("Status") == "healthy"


# --- the archives and the script -------------------------------------------------------


@pytest.mark.parametrize("name", list(TAGS))
def test_archive_holds_the_tag(name: str) -> None:
    path = archive(name)
    with tarfile.open(path) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None, f"{path} has no manifest.json: not a docker save archive"
        manifest = json.load(member)
    assert [TAGS[name]] in [entry.get("RepoTags") for entry in manifest], manifest
    assert path.with_name(path.name + ".hash").read_text().splitlines()[0], "no .hash sidecar"


def test_second_run_rebuilds_nothing() -> None:
    paths = [archive("postgres"), archive("redis")]
    before = [p.stat().st_mtime_ns for p in paths]
    started = time.monotonic()
    done = subprocess.run(
        [str(SCRIPT), "redis", "postgres"], capture_output=True, text=True, timeout=600, check=False
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    # The fixed order, whatever the order of the arguments.
    assert done.stdout.splitlines() == [str(p) for p in paths]
    assert [p.stat().st_mtime_ns for p in paths] == before, done.stderr
    assert "building" not in done.stderr
    assert elapsed < 30, f"a run with nothing changed took {elapsed:.1f} s"


def test_unknown_image_is_refused() -> None:
    done = subprocess.run(
        [str(SCRIPT), "mysql"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert "unknown image 'mysql'" in done.stderr


# --- the images' configuration, as the stack reads it ------------------------------------

CONFIG = {
    "postgres": {
        "Entrypoint": ["docker-entrypoint.sh"],
        "Cmd": ["postgres"],
        "StopSignal": "SIGINT",
        "Volumes": ["/var/lib/postgresql/data"],
        "ExposedPorts": ["5432/tcp"],
        "Env": ["PGDATA=/var/lib/postgresql/data"],
    },
    "redis": {
        "Cmd": ["redis-server"],
        "WorkingDir": "/data",
        "Volumes": ["/data"],
        "ExposedPorts": ["6379/tcp"],
    },
    "frontend": {"ExposedPorts": ["3000/tcp"], "User": "101:101"},
    "n8n": {
        "User": "node",
        "WorkingDir": "/home/node",
        "Volumes": ["/home/node/.n8n"],
        "ExposedPorts": ["5678/tcp"],
        "Env": ["HOME=/home/node", "NODE_ENV=production"],
    },
    "ytvideo": {"Entrypoint": ["python", "-m", "ytvideo"], "Cmd": ["api"]},
}


@pytest.mark.parametrize("name", list(CONFIG))
def test_image_configuration(name: str) -> None:
    archive(name)
    config = json.loads(docker("image", "inspect", "-f", "{{json .Config}}", TAGS[name]).stdout)
    for key, want in CONFIG[name].items():
        have = config.get(key)
        if key in ("Volumes", "ExposedPorts"):
            assert sorted(have or {}) == want, f"{key}: {have}"
        elif key == "Env":
            assert set(want) <= set(have), f"{key}: {have}"
        else:
            assert have == want, f"{key}: {have}"


# --- postgres -----------------------------------------------------------------------------

PG = {"POSTGRES_USER": "ytempire", "POSTGRES_DB": "ytempire_test"}


@pytest.fixture(scope="module")
def postgres(stack: Stack, tmp_path_factory) -> dict[str, str]:
    archive("postgres")
    initdb = tmp_path_factory.mktemp("initdb")
    (initdb / "01-seed.sql").write_text(
        "CREATE TABLE seeded (note text); INSERT INTO seeded VALUES ('initdb.d ran');\n"
    )
    initdb.chmod(0o755)
    (initdb / "01-seed.sql").chmod(0o644)
    password = secrets.token_hex(12)
    container = stack.start(
        "postgres",
        TAGS["postgres"],
        "postgres",
        "-c",
        "max_connections=42",
        env={**PG, "POSTGRES_PASSWORD": password},
        volumes={
            stack.volume("pgdata"): "/var/lib/postgresql/data",
            str(initdb): "/docker-entrypoint-initdb.d:ro",
        },
    )
    ready = (
        "exec",
        container,
        "pg_isready",
        "-h",
        "127.0.0.1",
        "-U",
        PG["POSTGRES_USER"],
        "-d",
        PG["POSTGRES_DB"],
    )
    wait_until(
        "pg_isready over TCP",
        lambda: docker(*ready, check=False).returncode == 0 or exited(container),
    )
    assert docker(*ready, check=False).returncode == 0, stack.logs(container)
    return {"container": container, "password": password}


def psql(stack: Stack, password: str, sql: str, host: str = "postgres"):
    return stack.client(
        TAGS["postgres"],
        "psql",
        "-h",
        host,
        "-U",
        PG["POSTGRES_USER"],
        "-d",
        PG["POSTGRES_DB"],
        "-v",
        "ON_ERROR_STOP=1",
        "-tAc",
        sql,
        env={"PGPASSWORD": password},
    )


def test_postgres_password_over_the_network(stack: Stack, postgres: dict[str, str]) -> None:
    done = psql(
        stack,
        postgres["password"],
        "SELECT current_user, current_database(), current_setting('max_connections')",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ytempire|ytempire_test|42"


def test_postgres_refuses_a_wrong_password(stack: Stack, postgres: dict[str, str]) -> None:
    done = psql(stack, "not-" + postgres["password"], "SELECT 1")
    assert done.returncode != 0
    assert 'password authentication failed for user "ytempire"' in done.stderr


def test_postgres_host_connections_use_scram(stack: Stack, postgres: dict[str, str]) -> None:
    done = psql(
        stack,
        postgres["password"],
        "SELECT auth_method FROM pg_hba_file_rules WHERE type = 'host' AND address = 'all'",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["scram-sha-256"], done.stdout


def test_postgres_initdb_scripts_ran(stack: Stack, postgres: dict[str, str]) -> None:
    done = psql(stack, postgres["password"], "SELECT note FROM seeded")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "initdb.d ran"


def test_postgres_runs_as_uid_999_with_its_tools(postgres: dict[str, str]) -> None:
    assert uid_of_pid1(postgres["container"]) == 999
    # A custom-format dump read back by pg_restore, as the backup will run them here.
    user, db = PG["POSTGRES_USER"], PG["POSTGRES_DB"]
    listing = docker(
        "exec",
        postgres["container"],
        "sh",
        "-c",
        f"pg_dump -U {user} -Fc {db} | pg_restore --list",
        check=False,
    )
    assert "TABLE public seeded" in listing.stdout, listing.stdout + listing.stderr


def test_postgres_data_survives_a_recreate(stack: Stack) -> None:
    volume = stack.volume("pgdata-recreate")
    env = {**PG, "POSTGRES_PASSWORD": secrets.token_hex(8)}
    mount = {volume: "/var/lib/postgresql/data"}
    ready = ("pg_isready", "-h", "127.0.0.1", "-U", PG["POSTGRES_USER"])
    first = stack.start("pg-first", TAGS["postgres"], env=env, volumes=mount)
    wait_until(
        "the first server",
        lambda: docker("exec", first, *ready, check=False).returncode == 0 or exited(first),
    )
    write = psql(
        stack,
        env["POSTGRES_PASSWORD"],
        "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')",
        host="pg-first",
    )
    assert write.returncode == 0, write.stderr
    stack.remove(first)
    # No password the second time: an initialised data directory needs none (as upstream).
    second = stack.start("pg-second", TAGS["postgres"], env=PG, volumes=mount)
    wait_until(
        "the second server",
        lambda: docker("exec", second, *ready, check=False).returncode == 0 or exited(second),
    )
    read = psql(stack, env["POSTGRES_PASSWORD"], "SELECT v FROM kept", host="pg-second")
    assert read.returncode == 0, read.stderr + stack.logs(second)
    assert read.stdout.strip() == "still here"
    assert "Skipping initialization" in stack.logs(second)


def test_postgres_without_a_password_exits_with_the_reason(stack: Stack) -> None:
    archive("postgres")
    container = stack.start("pg-nopassword", TAGS["postgres"])
    wait_until("the container to exit", lambda: exited(container), timeout=30)
    code = docker("inspect", "-f", "{{.State.ExitCode}}", container).stdout.strip()
    assert code != "0"
    assert "superuser password is not specified" in stack.logs(container)
    assert "POSTGRES_HOST_AUTH_METHOD=trust" in stack.logs(container)


# --- redis --------------------------------------------------------------------------------

REDIS_ARGS = (
    "redis-server",
    "--maxmemory",
    "64mb",
    "--maxmemory-policy",
    "noeviction",
    "--appendonly",
    "yes",
)


def redis_cli(stack: Stack, host: str, *args: str):
    return stack.client(TAGS["redis"], "redis-cli", "-h", host, *args)


@pytest.fixture(scope="module")
def redis(stack: Stack) -> dict[str, str]:
    archive("redis")
    volume = stack.volume("redisdata")
    container = stack.start("redis", TAGS["redis"], *REDIS_ARGS, volumes={volume: "/data"})
    wait_until(
        "redis to answer",
        lambda: (
            docker("exec", container, "redis-cli", "ping", check=False).stdout.strip() == "PONG"
            or exited(container)
        ),
    )
    return {"container": container, "volume": volume}


def test_redis_client_over_the_network(stack: Stack, redis: dict[str, str]) -> None:
    policy = redis_cli(stack, "redis", "CONFIG", "GET", "maxmemory-policy")
    assert policy.returncode == 0, policy.stderr
    assert policy.stdout.split() == ["maxmemory-policy", "noeviction"]
    memory = redis_cli(stack, "redis", "CONFIG", "GET", "maxmemory")
    assert memory.stdout.split() == ["maxmemory", str(64 * 1024 * 1024)]
    protected = redis_cli(stack, "redis", "CONFIG", "GET", "protected-mode")
    assert protected.stdout.split() == ["protected-mode", "no"]


def test_redis_runs_as_uid_999_with_its_tools(redis: dict[str, str]) -> None:
    assert uid_of_pid1(redis["container"]) == 999
    manifest = "appendonlydir/appendonly.aof.manifest"
    check = docker("exec", redis["container"], "redis-check-aof", manifest, check=False)
    assert "is valid" in check.stdout, check.stdout + check.stderr
    rdb = docker("exec", redis["container"], "sh", "-c", "command -v redis-check-rdb", check=False)
    assert rdb.returncode == 0


def test_redis_data_survives_a_recreate(stack: Stack, redis: dict[str, str]) -> None:
    value = secrets.token_hex(8)
    assert redis_cli(stack, "redis", "SET", "ytempire:kept", value).stdout.strip() == "OK"
    stack.remove(redis["container"])
    again = stack.start(
        "redis-again", TAGS["redis"], *REDIS_ARGS, volumes={redis["volume"]: "/data"}
    )
    wait_until(
        "redis to answer again",
        lambda: (
            docker("exec", again, "redis-cli", "ping", check=False).stdout.strip() == "PONG"
            or exited(again)
        ),
    )
    assert redis_cli(stack, "redis-again", "GET", "ytempire:kept").stdout.strip() == value


# --- frontend -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def frontend(stack: Stack) -> str:
    archive("frontend")
    # The image's own healthcheck command, run every second instead of every 30.
    return stack.start("frontend", TAGS["frontend"], options=("--health-interval", "1s"))


def test_frontend_serves_the_console(stack: Stack, frontend: str) -> None:
    base = f"http://{stack.ip(frontend)}:3000"
    wait_until(
        "the frontend",
        lambda: http_get(f"{base}/healthz")[0] == 200 if stack.ip(frontend) else False,
        timeout=30,
    )
    status, page = http_get(f"{base}/")
    assert status == 200
    assert '<form id="generate">' in page
    status, script = http_get(f"{base}/app.js")
    assert status == 200
    assert '"/api/videos/generate"' in script


def test_frontend_is_healthy_and_not_root(frontend: str) -> None:
    wait_until("the healthcheck to pass", lambda: healthy(frontend), timeout=30)
    assert uid_of_pid1(frontend) == 101


# --- n8n ----------------------------------------------------------------------------------

WORKFLOW_FILE = "/home/node/workflow.json"  # in the container
WORKFLOW = {
    "id": "YtStackTest00001",
    "name": "ytempire stack image test",
    "active": False,
    "nodes": [
        {
            "id": "0f3e5c1e-8d0a-4c1e-9a43-3d6f2d4f1a11",
            "name": "Manual trigger",
            "type": "n8n-nodes-base.manualTrigger",
            "typeVersion": 1,
            "position": [0, 0],
            "parameters": {},
        }
    ],
    "connections": {},
    "settings": {},
}


def n8n_up(stack: Stack, container: str) -> bool:
    """Started or given up: /healthz answers early in the start, the REST API only once
    n8n has registered it (before, POST /rest/owner/setup is a 404 and GET /rest/settings
    a 200 reading "n8n is starting up. Please wait")."""
    if exited(container):
        return True
    try:
        status, body = http_get(f"http://{stack.ip(container)}:5678/rest/settings")
    except OSError:
        return False
    return status == 200 and body.startswith('{"data"')


@pytest.fixture(scope="module")
def n8n(stack: Stack) -> dict[str, str]:
    archive("n8n")
    volume = stack.volume("n8ndata")
    key = secrets.token_hex(16)
    container = stack.start(
        "n8n",
        TAGS["n8n"],
        env={"N8N_ENCRYPTION_KEY": key},
        volumes={volume: "/home/node/.n8n"},
        options=("--health-interval", "2s"),
    )
    wait_until("n8n's /healthz", lambda: n8n_up(stack, container), timeout=180, every=2)
    assert not exited(container), stack.logs(container)
    return {"container": container, "volume": volume, "key": key}


def test_n8n_is_healthy(stack: Stack, n8n: dict[str, str]) -> None:
    status, body = http_get(f"http://{stack.ip(n8n['container'])}:5678/healthz")
    assert status == 200
    assert json.loads(body) == {"status": "ok"}
    wait_until("the healthcheck to pass", lambda: healthy(n8n["container"]), timeout=60)
    assert uid_of_pid1(n8n["container"]) != 0


def test_n8n_owner_setup_over_rest(stack: Stack, n8n: dict[str, str]) -> None:
    url = f"http://{stack.ip(n8n['container'])}:5678/rest/owner/setup"
    owner = {"email": "ops@ytempire.test", "firstName": "Ops", "lastName": "Owner"}
    status, body = http_json(url, {**owner, "password": "short"})
    assert status == 400, body
    status, body = http_json(url, {**owner, "password": "Ytempire-owner-2026"})
    assert status == 200, body
    assert body["data"]["email"] == owner["email"]
    status, body = http_json(url, {**owner, "password": "Ytempire-owner-2026"})
    assert status == 400, body


def test_n8n_workflow_survives_a_recreate_with_its_key(stack: Stack, n8n: dict[str, str]) -> None:
    container = n8n["container"]
    docker(
        "exec", "-i", container, "sh", "-c", f"cat > {WORKFLOW_FILE}", input=json.dumps(WORKFLOW)
    )
    imported = docker(
        "exec",
        container,
        "n8n",
        "import:workflow",
        f"--input={WORKFLOW_FILE}",
        check=False,
        timeout=180,
    )
    assert imported.returncode == 0, imported.stdout + imported.stderr
    stack.remove(container)
    again = stack.start(
        "n8n-again",
        TAGS["n8n"],
        env={"N8N_ENCRYPTION_KEY": n8n["key"]},
        volumes={n8n["volume"]: "/home/node/.n8n"},
    )
    wait_until("n8n again", lambda: n8n_up(stack, again), timeout=180, every=2)
    assert not exited(again), stack.logs(again)
    listed = docker("exec", again, "n8n", "list:workflow", check=False, timeout=180)
    assert f"{WORKFLOW['id']}|{WORKFLOW['name']}" in listed.stdout, listed.stdout + listed.stderr
    stack.remove(again)


def test_n8n_refuses_another_key(stack: Stack, n8n: dict[str, str]) -> None:
    container = stack.start(
        "n8n-wrongkey",
        TAGS["n8n"],
        env={"N8N_ENCRYPTION_KEY": secrets.token_hex(16)},
        volumes={n8n["volume"]: "/home/node/.n8n"},
    )
    wait_until("n8n to refuse the key", lambda: exited(container), timeout=120)
    assert "Mismatching encryption keys" in stack.logs(container)


def test_n8n_path_is_for_a_proxy_that_strips_the_prefix(stack: Stack) -> None:
    """N8N_PATH=/n8n/ makes the editor ask for /n8n/... while n8n itself keeps serving
    /rest, /healthz and the assets at /: the reverse proxy must strip the prefix."""
    container = stack.start(
        "n8n-path",
        TAGS["n8n"],
        env={"N8N_ENCRYPTION_KEY": secrets.token_hex(16), "N8N_PATH": "/n8n/"},
        volumes={stack.volume("n8ndata-path"): "/home/node/.n8n"},
    )
    wait_until("n8n under a path", lambda: n8n_up(stack, container), timeout=180, every=2)
    assert not exited(container), stack.logs(container)
    base = f"http://{stack.ip(container)}:5678"
    status, body = http_get(f"{base}/rest/settings")
    assert status == 200
    assert "userManagement" in json.loads(body)["data"]
    status, page = http_get(f"{base}/")
    assert 'src="/n8n/assets/' in page
    assert http_get(f"{base}/static/base-path.js")[1].strip() == "window.BASE_PATH = '/n8n/';"
    # Under the prefix only the editor's history fallback answers: HTML, not the API.
    status, body = http_get(f"{base}/n8n/rest/settings")
    assert body.lstrip().startswith("<!DOCTYPE html>")
    stack.remove(container)


# --- ytvideo ------------------------------------------------------------------------------


def test_ytvideo_runs_on_cpu_torch() -> None:
    archive("ytvideo")
    helped = docker(
        "run",
        "--rm",
        "--name",
        f"ytempire-stacktest-{uuid.uuid4().hex[:8]}",
        TAGS["ytvideo"],
        "--help",
        check=False,
    )
    assert helped.returncode == 0, helped.stderr
    for command in ("api", "worker", "healthcheck", "probe"):
        assert command in helped.stdout
    torch = docker(
        "run",
        "--rm",
        "--name",
        f"ytempire-stacktest-{uuid.uuid4().hex[:8]}",
        "--entrypoint",
        "python",
        TAGS["ytvideo"],
        "-c",
        "import torch; print(torch.__version__, torch.version.cuda)",
        check=False,
        timeout=120,
    )
    assert torch.returncode == 0, torch.stderr
    assert torch.stdout.split() == ["2.13.0+cpu", "None"]
