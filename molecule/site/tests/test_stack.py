"""The platform on the converged server: what a user reaches through nginx from
the client, what a scanner finds, what `docker inspect` says of every service,
and what survives restarts and a full broker."""

from __future__ import annotations

import base64
import json
import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest
import yaml

testinfra_hosts = ["ansible://ytempire"]

ROOT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
MACHINE = yaml.safe_load((ROOT / "inventories/sandbox/group_vars/ytempire/docker.yml").read_text())
RESOURCES = MACHINE["ytempire_resources"]
PROJECT = "ytempire"
ACTIVE = "blue"
# Services of the active color and the shared ones, and the resources entry of each.
SERVICES = {
    "postgres": "postgres",
    "redis": "redis",
    f"api-{ACTIVE}": "backend",
    f"worker-{ACTIVE}": "worker",
    "frontend": "frontend",
    "n8n": "n8n",
}
# Ports a scan from outside may find open (ops guide §1.2).
PUBLIC_PORTS = {22, 80, 443, 8080}
# Ports that must be filtered: the stack's (published on 127.0.0.1 only) and monitoring's.
INTERNAL_PORTS = (
    *(5432, 6379, 3000, 5678, 8081, 8082, 9090, 9091, 9093, 9094, 9100, 9115, 9121, 9187),
    *(9323, 9417, 3001),
)
VIDEO = {"title": "Site test", "script": "One short line.", "resolution": "320x180", "duration": 2}


def size_bytes(size: str) -> int:
    """A Docker size (512m, 2g) in bytes."""
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    size = str(size).lower().rstrip("b")
    return int(float(size[:-1]) * units[size[-1]]) if size[-1] in units else int(size)


def container(service: str) -> str:
    return f"{PROJECT}-{service}-1"


def inspect(host, name: str) -> dict:
    return json.loads(host.check_output(f"docker inspect {name}"))[0]


def wait_healthy(host, names, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        states = {
            n: inspect(host, n)["State"].get("Health", {}).get("Status", "none") for n in names
        }
        if all(s == "healthy" for s in states.values()):
            return
        time.sleep(3)
    raise AssertionError(f"not healthy after {timeout} s: {states}")


# The admin's token header (conftest.py's api_auth), for every request to the API.
AUTH = {"header": ""}


@pytest.fixture(scope="module", autouse=True)
def _authenticated(api_auth):
    AUTH["header"] = api_auth


def curl(client, url: str, *args: str) -> tuple[int, str]:
    """(HTTP status, body) of a request from the client; -k: the sandbox's self-signed pair."""
    out = client.check_output(
        "curl -sk --max-time 60 -o /tmp/curl-body -w '%{http_code}' "
        + shlex.join(["-H", AUTH["header"], *args])
        + f" {shlex.quote(url)}; echo; cat /tmp/curl-body"
    )
    status, _, body = out.partition("\n")
    return int(status), body


def generate(client, base: str) -> str:
    status, body = curl(
        client,
        f"{base}/api/videos/generate",
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data",
        json.dumps(VIDEO),
    )
    assert status == 202, body
    return json.loads(body)["id"]


def wait_completed(client, base: str, video_id: str, timeout: float = 420) -> dict:
    deadline = time.monotonic() + timeout
    job: dict = {}
    while time.monotonic() < deadline:
        status, body = curl(client, f"{base}/api/videos/{video_id}")
        assert status == 200, body
        job = json.loads(body)
        if job["status"] in ("completed", "failed"):
            break
        time.sleep(3)
    assert job.get("status") == "completed", job
    return job


@pytest.fixture(scope="module")
def base_urls(target_ip) -> tuple[str, str]:
    return f"https://{target_ip}", f"https://{target_ip}:8080"


@pytest.fixture(scope="module")
def vault_values() -> list[str]:
    """Every non-empty value of the sandbox's vault (the secrets no log may show)."""
    out = subprocess.run(
        [
            str(Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin/ansible-vault"),
            "view",
            str(ROOT / "inventories/sandbox/group_vars/ytempire/vault.yml"),
        ],
        capture_output=True,
        text=True,
        check=True,
        env={
            **os.environ,
            "ANSIBLE_VAULT_PASSWORD_FILE": str(ROOT / "inventories/sandbox/vault-password"),
        },
    ).stdout
    values = [str(v) for v in yaml.safe_load(out).values() if v]
    assert len(values) >= 5, "the sandbox's vault lost its secrets"
    return values


def run_site(*args: str) -> subprocess.CompletedProcess[str]:
    """site.yml against the scenario's hosts, as Molecule's converge runs it."""
    ephemeral = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ephemeral / "ansible.cfg"),
        "ANSIBLE_VAULT_PASSWORD_FILE": str(ROOT / "inventories/sandbox/vault-password"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
    }
    return subprocess.run(
        [
            str(Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin/ansible-playbook"),
            "-i",
            os.environ["MOLECULE_INVENTORY_FILE"],
            str(ROOT / "site.yml"),
            *args,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=1500,
    )


def recap_changed(output: str) -> int:
    line = next(
        x for x in output.splitlines() if x.startswith(("site-", "site ")) and "changed=" in x
    )
    return int(line.split("changed=")[1].split()[0])


# --- through nginx -----------------------------------------------------------


def test_a_video_generated_through_nginx_is_an_mp4(client, base_urls, tmp_path):
    """Must show 1: 443 and 8080 both take a generate request; the file is an MP4."""
    ids = [(base, generate(client, base)) for base in base_urls]
    for base, video_id in ids:
        job = wait_completed(client, base, video_id)
        client.check_output(
            f"curl -sfk --max-time 120 -H {shlex.quote(AUTH['header'])}"
            f" -o /tmp/{video_id}.mp4 {base}/api/videos/{video_id}/file"
        )
        data = base64.b64decode(client.check_output(f"base64 -w0 /tmp/{video_id}.mp4"))
        path = tmp_path / f"{video_id}.mp4"
        path.write_bytes(data)
        probe = json.loads(
            subprocess.run(
                ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", path],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        assert "mp4" in probe["format"]["format_name"], probe["format"]
        codecs = {s["codec_type"]: s["codec_name"] for s in probe["streams"]}
        assert codecs.get("video") == "h264", codecs
        assert "audio" in codecs, codecs
        assert job["status"] == "completed"


def test_the_health_of_the_active_color_answers_through_nginx(client, base_urls):
    status, body = curl(client, f"{base_urls[0]}/health")
    assert status == 200, body
    assert json.loads(body)["checks"]["database"] == "healthy"


# --- what a scanner sees --------------------------------------------------------


def test_a_full_scan_finds_only_the_public_ports(client, target_ip):
    """Must show 2: every TCP port, from the client."""
    out = client.check_output(
        f"nmap -Pn -n -sS -p- --min-rate 3000 --max-retries 1 -T4 -oX - {target_ip}"
    )
    opened = {
        int(line.split('portid="')[1].split('"')[0])
        for line in out.splitlines()
        if "<port " in line and 'state="open"' in line
    }
    assert opened == PUBLIC_PORTS, out[-2000:]


def test_the_internal_ports_are_filtered_from_outside(client, target_ip):
    ports = ",".join(map(str, INTERNAL_PORTS))
    out = client.check_output(f"nmap -Pn -n -sS -p {ports} --max-retries 2 -oG - {target_ip}")
    states = {
        int(entry.split("/")[0]): entry.split("/")[1]
        for entry in out.split("Ports: ")[1].split("\t")[0].split(", ")
    }
    assert states == dict.fromkeys(INTERNAL_PORTS, "filtered"), out


def test_no_container_publishes_on_every_address(host):
    for service in SERVICES:
        ports = inspect(host, container(service))["NetworkSettings"]["Ports"] or {}
        for bindings in ports.values():
            for binding in bindings or []:
                assert binding["HostIp"] == "127.0.0.1", (service, ports)


def test_postgres_and_redis_are_on_the_internal_network_only(host):
    networks = json.loads(host.check_output(f"docker network inspect {PROJECT}_data"))[0]
    assert networks["Internal"] is True
    for service in ("postgres", "redis"):
        attached = inspect(host, container(service))["NetworkSettings"]["Networks"]
        assert set(attached) == {f"{PROJECT}_data"}, (service, set(attached))


# --- limits, health, files ----------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_limits_equal_group_vars_and_the_service_is_healthy(host, service):
    """Must show 3: the limits docker inspect reports are the inventory's, as cgroup limits."""
    info = inspect(host, container(service))
    limits = RESOURCES[SERVICES[service]]
    assert info["HostConfig"]["NanoCpus"] == int(float(limits["cpus"]) * 1e9)
    assert info["HostConfig"]["Memory"] == size_bytes(limits["memory"])
    cgroup = host.file(f"/sys/fs/cgroup/memory/docker/{info['Id']}/memory.limit_in_bytes")
    if cgroup.exists:  # cgroup v1 (this machine); v2 names it memory.max
        assert int(cgroup.content_string) == size_bytes(limits["memory"])
    assert info["State"]["Health"]["Status"] == "healthy", info["State"]["Health"]["Log"][-1:]
    assert info["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    # No logging: block, so the daemon's rotation (docker role) applies.
    assert info["HostConfig"]["LogConfig"]["Config"].get("max-size") == "100m"


def test_redis_is_the_broker_that_never_evicts(host):
    maxmemory = host.check_output(
        f"docker exec {container('redis')} redis-cli CONFIG GET maxmemory"
    )
    assert maxmemory.split()[1] == str(size_bytes(RESOURCES["redis"]["maxmemory"]))
    policy = host.check_output(
        f"docker exec {container('redis')} redis-cli CONFIG GET maxmemory-policy"
    )
    assert policy.split()[1] == "noeviction"


def test_env_file_is_root_only(host):
    env = host.file("/opt/ytempire/.env")
    assert (env.user, env.group, env.mode) == ("root", "root", 0o600)


def test_the_unit_starts_the_project_at_boot(host):
    unit = host.service("ytempire")
    assert unit.is_enabled
    assert unit.is_running or "active" in host.check_output("systemctl is-active ytempire")
    assert host.file("/opt/ytempire/current_env").content_string.strip() == ACTIVE


def test_data_lives_on_the_data_disk(host):
    for volume, path in (
        ("postgres-data", "/data/postgres"),
        ("redis-data", "/data/redis"),
        ("n8n-data", "/data/n8n"),
    ):
        info = json.loads(host.check_output(f"docker volume inspect {PROJECT}_{volume}"))[0]
        assert info["Options"]["device"] == path, info
    assert (
        host.file("/data/postgres/PG_VERSION").exists
        or host.run(
            "docker exec ytempire-postgres-1 test -s /var/lib/postgresql/data/PG_VERSION"
        ).succeeded
    )
    assert host.file("/data/redis/appendonlydir").is_directory


def test_the_worker_renders_on_the_cpu_without_a_gpu(host):
    info = inspect(host, container(f"worker-{ACTIVE}"))
    assert not info["HostConfig"].get("DeviceRequests"), info["HostConfig"].get("DeviceRequests")
    probe = host.check_output(
        f"docker exec {container(f'worker-{ACTIVE}')} python -m ytvideo probe"
    )
    assert json.loads(probe)["device"] == "cpu"


def test_n8n_key_is_the_vaults_and_a_workflow_survives_a_recreate(host, vault_values):
    name = container("n8n")
    env = dict(e.split("=", 1) for e in inspect(host, name)["Config"]["Env"])
    assert env["N8N_ENCRYPTION_KEY"] in vault_values  # the value is never printed
    workflow = {
        "name": "site-test-workflow",
        "nodes": [],
        "connections": {},
        "settings": {},
        "active": False,
    }
    host.check_output(
        f"docker exec -u node {name} sh -c "
        + shlex.quote(f"printf %s {shlex.quote(json.dumps(workflow))} > /tmp/wf.json")
    )
    host.check_output(f"docker exec -u node {name} n8n import:workflow --input=/tmp/wf.json")
    host.check_output(
        "cd /opt/ytempire && docker compose up --detach --wait --force-recreate --no-deps n8n"
    )
    assert inspect(host, name)["Id"] != "", "n8n was not recreated"
    listed = host.check_output(f"docker exec -u node {name} n8n list:workflow")
    assert "site-test-workflow" in listed, listed


# --- changes, restarts, and what a -vvv log shows -----------------------------------


def started_at(host) -> dict[str, str]:
    return {s: inspect(host, container(s))["State"]["StartedAt"] for s in SERVICES}


def roles_reading_secrets() -> list[str]:
    """The roles whose defaults or vars name one of the inventory's secrets (secrets.yml)."""
    secrets = yaml.safe_load(
        (ROOT / "inventories/sandbox/group_vars/ytempire/secrets.yml").read_text()
    )
    found = []
    for role in sorted((ROOT / "roles").iterdir()):
        text = "".join(f.read_text() for f in role.glob("[dv]*s/main.yml"))
        if any(name in text for name in secrets):
            found.append(role.name)
    assert {"stack", "backup"} <= set(found), found
    return found


def test_a_change_restarts_that_service_alone_and_no_log_shows_a_secret(host, vault_values):
    """Must show 4 and 3's log: one service's limits changed, then back, then no change."""
    before = started_at(host)
    changed = json.loads(json.dumps(RESOURCES))
    changed["frontend"]["memory"] = "300m"
    first = run_site("--tags", "stack", "-e", json.dumps({"ytempire_resources": changed}))
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    after = started_at(host)
    assert after["frontend"] != before["frontend"], "frontend was not recreated"
    assert {s: t for s, t in after.items() if s != "frontend"} == {
        s: t for s, t in before.items() if s != "frontend"
    }
    assert inspect(host, container("frontend"))["HostConfig"]["Memory"] == 300 * 1024**2

    again = run_site("--tags", "stack", "-e", json.dumps({"ytempire_resources": changed}))
    assert again.returncode == 0, again.stdout[-4000:]
    assert recap_changed(again.stdout) == 0, again.stdout[-4000:]

    # Back to the inventory's values, at -vvv: the log must show none of the vault's values.
    # Only the roles that read a secret run (and the preflight, tagged always): a whole
    # site.yml at -vvv took minutes of CI for roles that never see one.
    back = run_site("--tags", ",".join(roles_reading_secrets()), "-vvv")
    assert back.returncode == 0, back.stdout[-4000:] + back.stderr[-2000:]
    log = back.stdout + back.stderr
    leaked = [i for i, value in enumerate(vault_values) if value in log]
    assert not leaked, f"vault values number {leaked} appear in the -vvv log"
    assert inspect(host, container("frontend"))["HostConfig"]["Memory"] == size_bytes(
        RESOURCES["frontend"]["memory"]
    )
    final = started_at(host)
    assert {s: t for s, t in final.items() if s != "frontend"} == {
        s: t for s, t in before.items() if s != "frontend"
    }


def api(host, method: str, path: str, body: dict | None = None) -> dict:
    """A request to the active color on the target itself (127.0.0.1)."""
    data = (
        f"-H 'Content-Type: application/json' --data {shlex.quote(json.dumps(body))}"
        if body
        else ""
    )
    out = host.check_output(
        f"curl -sf --max-time 30 -H {shlex.quote(AUTH['header'])} -X {method} {data}"
        f" http://127.0.0.1:8082{path}"
    )
    return json.loads(out)


def test_a_row_survives_restarts_of_the_platform_and_the_engine(host):
    """Must show 5: a job written through the API is still there after both restarts."""
    video_id = api(host, "POST", "/api/videos/generate", VIDEO)["id"]
    before = started_at(host)

    host.check_output("systemctl restart ytempire")
    names = [container(s) for s in SERVICES]
    wait_healthy(host, names)
    restarted = started_at(host)
    assert all(restarted[s] != before[s] for s in SERVICES), (before, restarted)
    assert api(host, "GET", f"/api/videos/{video_id}")["id"] == video_id

    host.check_output("systemctl restart docker")
    wait_healthy(host, names)
    assert api(host, "GET", f"/api/videos/{video_id}")["id"] == video_id
    assert host.check_output("systemctl is-active ytempire") == "active"


def test_a_full_broker_loses_no_queued_job(host):
    """Must show 6: with the worker stopped, jobs queue; Redis is filled past maxmemory
    (writes refused, nothing evicted); every job is still queued and then completes."""
    worker = container(f"worker-{ACTIVE}")
    redis_cli = f"docker exec {container('redis')} redis-cli"
    host.check_output(f"docker stop {worker}")
    try:
        ids = [api(host, "POST", "/api/videos/generate", VIDEO)["id"] for _ in range(5)]
        queued = int(host.check_output(f"{redis_cli} LLEN videos"))
        assert queued >= len(ids)
        # Fill database 1 (a cache's keys) from the API container until Redis refuses.
        fill = (
            "import redis; r = redis.Redis(host='redis', db=1); n = 0\n"
            "try:\n"
            "    while n < 100000:\n"
            "        r.set(f'cache:{n}', b'x' * 65536); n += 1\n"
            "except redis.exceptions.ResponseError as e:\n"
            "    print('refused', n, e)\n"
        )
        out = host.check_output(
            f"docker exec {container(f'api-{ACTIVE}')} python -c {shlex.quote(fill)}"
        )
        # Redis' OOM error: redis-py drops the "OOM" code from the message.
        assert out.startswith("refused"), out
        assert "command not allowed when used memory > 'maxmemory'" in out, out
        used = host.check_output(f"{redis_cli} INFO memory")
        assert "used_memory:" in used
        assert int(host.check_output(f"{redis_cli} LLEN videos")) == queued
        assert "evicted_keys:0" in host.check_output(f"{redis_cli} INFO stats")
        host.check_output(f"{redis_cli} -n 1 FLUSHDB")
    finally:
        host.check_output(f"docker start {worker}")
    for video_id in ids:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            job = api(host, "GET", f"/api/videos/{video_id}")
            if job["status"] in ("completed", "failed"):
                break
            time.sleep(3)
        assert job["status"] == "completed", job
