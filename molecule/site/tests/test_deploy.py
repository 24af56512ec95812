"""The blue-green deploy and rollback (playbooks/deploy.yml, rollback.yml, the
blue_green module) on the converged server, with load from the client through
nginx: zero downtime across a deploy and a rollback, the rollback's time, and
each fault leaving exactly one color serving with the state files matching
nginx.

The releases are images built on the server from the platform's ytvideo
image (a label apart, or with a fault built in). The module leaves the
platform as it found it: blue serving, green retired.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

testinfra_hosts = ["ansible://ytempire"]
ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from tests.support import loadgen  # noqa: E402

ANSIBLE_BIN = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin"
BASE_IMAGE = "ytempire/ytvideo:test-base"
UPSTREAM = "/etc/nginx/ytempire/upstream-api.conf"
PORTS = {"green": 8081, "blue": 8082}
LOCK = "/run/lock/ytempire-deploy.lock"
MEDIA = "/data/media"
LOADGEN = "/tmp/loadgen.py"  # noqa: S108  on the client
# Short gates and watches: the test's time, not production's (group_vars/all/deploy.yml).
FAST = {
    "deploy_pull": "never",
    "deploy_health_retries": 30,
    "deploy_health_delay": 1,
    "deploy_watch_seconds": 4,
    "deploy_watch_interval": 1,
    "deploy_retire_after": 600,
}

# Test images' programs, one line each (no double quotes, no $: they go into
# sh -c "..."); as PID 1 they stop on SIGTERM at once. A server that answers
# 500 to everything, as a broken release would, and one that never binds.
SERVER_500 = (
    "import http.server as h, os, signal; signal.signal(15, lambda *_: os._exit(0)); "
    "H = type('H', (h.BaseHTTPRequestHandler,), {'do_GET': lambda s: (s.send_response(500), "
    "s.send_header('X-Deployment-Color', os.environ.get('DEPLOYMENT_COLOR', '')), "
    "s.send_header('Content-Length', '0'), s.end_headers())}); H.do_POST = H.do_GET; "
    "h.ThreadingHTTPServer(('0.0.0.0', 8080), H).serve_forever()"
)
NEVER_BINDS = (
    "import os, signal, time; signal.signal(15, lambda *_: os._exit(0)); time.sleep(10**6)"
)
FAIL_TRIGGER = ".fail-after-switch"
# ENTRYPOINT sh -c SCRIPT: the Compose command (api or worker) is $0, and the
# worker of every test image is the real one.
WORKER_AS_IS = 'if [ "$0" != api ]; then exec python -m ytvideo "$0"; fi; '
# fails-later's API is healthy until the test drops a file in the media directory.
FAILS_LATER = (
    WORKER_AS_IS + "python -m ytvideo api & api=$!; trap 'kill $api; exit 0' TERM; "
    f"while [ ! -e /var/lib/ytvideo/media/{FAIL_TRIGGER} ]; do sleep 0.5; done; "
    f'kill $api; wait $api; exec python -c "{SERVER_500}"'
)
# The schema the app migrates to: its number of migrations.
SCHEMA = len(list((ROOT / "app/ytvideo/migrations").glob("[0-9][0-9][0-9][0-9]_*.sql")))
RELEASES = {
    "release-2": 'LABEL org.ytempire.release="2"',
    "release-3": 'LABEL org.ytempire.release="3"',
    "answers-500": "ENTRYPOINT "
    + json.dumps(["sh", "-c", WORKER_AS_IS + f'exec python -c "{SERVER_500}"']),
    "never-binds": "ENTRYPOINT "
    + json.dumps(["sh", "-c", WORKER_AS_IS + f'exec python -c "{NEVER_BINDS}"']),
    "fails-later": "ENTRYPOINT " + json.dumps(["sh", "-c", FAILS_LATER]),
    # A release whose migrations the serving color cannot run against.
    "schema-next": f'LABEL org.ytempire.schema.version="{SCHEMA + 1}"'
    f' org.ytempire.schema.compatible-from="{SCHEMA + 1}"',
}
# A small, valid render: the long requests' body and the mid-render job.
SMALL_VIDEO = {
    "title": "deploy",
    "script": "Blue, then green.",
    "resolution": "128x72",
    "duration": 2,
    "fps": 5,
}


def image(release: str) -> str:
    return f"ytempire/ytvideo:{release}"


def playbook_command(name: str, extra: dict) -> list[str]:
    return [
        str(ANSIBLE_BIN / "ansible-playbook"),
        "-i",
        os.environ["MOLECULE_INVENTORY_FILE"],
        f"playbooks/{name}.yml",
        "-e",
        json.dumps({**FAST, **extra}),
    ]


def playbook_env(records: Path) -> dict[str, str]:
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "YTEMPIRE_DEPLOY_RECORD_DIR": str(records),
    }


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> Path:
    """Where the deploy_report callback keeps its records on the controller."""
    return tmp_path_factory.mktemp("deploy-records")


@pytest.fixture(scope="module")
def run(records):
    """ansible-playbook playbooks/NAME.yml, to its end: (return code, output)."""

    def _run(name: str, check: bool = False, **extra) -> tuple[int, str]:
        command = playbook_command(name, extra) + (["--check", "--diff"] if check else [])
        done = subprocess.run(
            command,
            cwd=ROOT,
            env=playbook_env(records),
            capture_output=True,
            text=True,
            timeout=900,
        )
        return done.returncode, done.stdout + done.stderr

    return _run


STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def no_deploy_left_running(host):
    """A playbook a failed test left running is killed, with its module on the
    server, so that the next test does not meet its lock."""
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            kill_controller_and_module(host, proc)


@pytest.fixture(scope="module")
def start(records):
    """ansible-playbook in its own process group, left running: the Popen."""

    def _start(name: str, **extra) -> subprocess.Popen:
        proc = subprocess.Popen(
            playbook_command(name, extra),
            cwd=ROOT,
            env=playbook_env(records),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        STARTED.append(proc)
        return proc

    return _start


def serving(host) -> str:
    """The color nginx's upstream file names."""
    text = host.file(UPSTREAM).content_string
    return next(c for c, p in PORTS.items() if f"127.0.0.1:{p};" in text)


def answering(host) -> str:
    """The color that answers through nginx on the server."""
    out = host.check_output("curl -sk -D - -o /dev/null https://127.0.0.1/health/live")
    headers = dict(line.split(": ", 1) for line in out.splitlines()[1:] if ": " in line)
    return {k.lower(): v for k, v in headers.items()}.get("x-deployment-color", "").strip()


def state_file(host, name: str) -> str:
    f = host.file(f"/opt/ytempire/{name}")
    return f.content_string.strip() if f.exists else ""


def running_colors(host, role: str) -> set[str]:
    """The colors whose `role` (api or worker) container runs."""
    out = host.check_output(
        "docker ps --filter label=com.docker.compose.project=ytempire"
        f" --filter label=ytempire.role={role} --format '{{{{.Label \"ytempire.color\"}}}}'"
    )
    return set(out.split())


def assert_one_color_serves(host, color: str) -> None:
    """nginx, what answers, current_env and the only worker all say color, and
    the color's containers are what Compose would make of the project's files
    (the next `up`, by the stack role or the boot unit, recreates nothing)."""
    assert serving(host) == color
    assert answering(host) == color
    assert state_file(host, "current_env") == color
    assert running_colors(host, "worker") == {color}
    for service in (f"api-{color}", f"worker-{color}"):
        wanted = host.check_output(
            f"cd /opt/ytempire && docker compose --profile {color} config --hash {service}"
        ).split()[-1]
        label = host.check_output(
            "docker inspect --format '{{index .Config.Labels \"com.docker.compose.config-hash\"}}'"
            f" $(docker ps -q --filter label=com.docker.compose.service={service})"
        )
        assert label == wanted, f"{service} would be recreated by the next docker compose up"


def api_container(host, color: str, field: str) -> str:
    """A docker inspect field of the color's running API container (.Image,
    .Config.Image), or "" while it has none (Compose may be recreating it)."""
    ids = host.check_output(f"docker ps -q --filter label=com.docker.compose.service=api-{color}")
    if not ids:
        return ""
    found = host.run(f"docker inspect --format '{{{{{field}}}}}' {ids.split()[0]}")
    return found.stdout.strip() if found.rc == 0 else ""


def lock_holder(host) -> str:
    """PIDs on the server that hold the deploy lock open."""
    return host.run(
        "for p in /proc/[0-9]*; do ls -l $p/fd 2>/dev/null | grep -q ytempire-deploy.lock"
        " && echo ${p#/proc/}; done"
    ).stdout.split()


def wait_for(what: str, probe, timeout: float = 180, every: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def kill_controller_and_module(host, proc: subprocess.Popen) -> None:
    """SIGKILL the controller, and the module on the server as an SSH hang-up
    would (the docker connection leaves it running)."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    for pid in lock_holder(host):
        host.run(f"kill -9 {pid}")
    wait_for("the lock to be free", lambda: not lock_holder(host), timeout=30)


def last_record(host) -> dict:
    return json.loads(host.file("/var/lib/ytempire/deploys/last-deploy.json").content_string)


@pytest.fixture(scope="module", autouse=True)
def releases(host, run):
    """The release images on the server; afterwards blue serves again."""
    # From what blue runs (the stack's image on a fresh server): a rerun of this
    # module finds it even after the last test's prune removed the stack's tag.
    host.check_output(f"docker tag {api_container(host, 'blue', '.Image')} {BASE_IMAGE}")
    for tag, line in RELEASES.items():
        dockerfile = f"FROM {BASE_IMAGE}\n{line}\n"
        host.check_output(
            f"printf '%s' {shlex.quote(dockerfile)} | docker build -q -t {image(tag)} -"
        )
    assert serving(host) == "blue", "the site converge leaves blue serving"
    yield RELEASES
    host.run(f"rm -f {MEDIA}/{FAIL_TRIGGER}")
    if serving(host) != "blue" or state_file(host, "current_env") != "blue":
        rc, out = run("rollback", deploy_rollback_to="blue")
        assert rc == 0, out


@pytest.fixture(scope="module")
def loader(client, target_ip):
    """The load generator on the client, against nginx on the server."""
    source = base64.b64encode((ROOT / "tests/support/loadgen.py").read_bytes()).decode()
    client.check_output(f"echo {source} | base64 -d > {LOADGEN}")

    class Load:
        def __init__(self) -> None:
            self.n = 0

        def start(self, *args: str, **options) -> str:
            self.n += 1
            run_dir = f"/tmp/load-{self.n}"  # noqa: S108  on the client
            argv = [
                "python3", LOADGEN, "--base-url", f"https://{target_ip}",
                "--report", f"{run_dir}/report.json", "--log", f"{run_dir}/requests.jsonl",
                "--stop-file", f"{run_dir}/stop", "--progress-file", f"{run_dir}/progress",
                "--header", AUTH["header"], *args,
            ]  # fmt: skip
            for key, value in options.items():
                argv += [f"--{key.replace('_', '-')}", str(value)]
            client.check_output(
                f"rm -rf {run_dir} && mkdir -p {run_dir}"
                f" && (nohup {shlex.join(argv)} > {run_dir}/out 2>&1 &)"
            )
            return run_dir

        def count(self, run_dir: str) -> int:
            return int(client.run(f"cat {run_dir}/progress").stdout.strip() or 0)

        def stop(self, run_dir: str) -> tuple[dict, list[dict]]:
            client.check_output(f"touch {run_dir}/stop")
            wait_for(
                "the load report", lambda: client.file(f"{run_dir}/report.json").exists, 120, 1
            )
            report = json.loads(client.file(f"{run_dir}/report.json").content_string)
            log = [
                json.loads(line)
                for line in client.file(f"{run_dir}/requests.jsonl").content_string.splitlines()
            ]
            return report, log

    return Load()


def image_id(host, ref: str) -> str:
    return host.check_output(f"docker image inspect --format '{{{{.Id}}}}' {ref}")


# The admin's token header (conftest.py's api_auth), for every request to the API.
AUTH = {"header": ""}


@pytest.fixture(scope="module", autouse=True)
def _authenticated(api_auth):
    AUTH["header"] = api_auth


def submit(host, video: dict) -> str:
    out = host.check_output(
        f"curl -sk -H {shlex.quote(AUTH['header'])} -X POST -H 'Content-Type: application/json'"
        " --data " + shlex.quote(json.dumps(video)) + " https://127.0.0.1/api/videos/generate"
    )
    return json.loads(out)["id"]


# A render that keeps a worker busy for a while (the drain waits for it).
LONG_VIDEO = {**SMALL_VIDEO, "duration": 60, "resolution": "320x180", "fps": 10}


def job(host, job_id: str) -> dict:
    return json.loads(
        host.check_output(
            f"curl -sk -H {shlex.quote(AUTH['header'])} https://127.0.0.1/api/videos/{job_id}"
        )
    )


# --- must show 1 and 2: zero downtime, and the rollback's time -----------------------------


def test_deploy_and_rollback_under_load_drop_nothing(host, run, loader):
    read_id = submit(host, SMALL_VIDEO)  # a real API read for the load
    load = loader.start(
        "--path", "/health", "--path", f"/api/videos/{read_id}",
        "--long-path", "/api/videos/generate", "--long-body", json.dumps(SMALL_VIDEO),
        workers=6, max_requests=40000, max_seconds=600, long_every=2.5, long_seconds=6,
    )  # fmt: skip
    wait_for("the load to start", lambda: loader.count(load) > 50, 60)

    rc, deploy_out = run("deploy", deploy_image=image("release-2"))
    assert rc == 0, deploy_out
    deployed = last_record(host)
    assert_one_color_serves(host, "green")
    assert api_container(host, "green", ".Config.Image") == "ytempire/ytvideo:green"

    time.sleep(3)
    rollback_started = time.time()
    rc, rollback_out = run("rollback")
    assert rc == 0, rollback_out
    rolled_back = json.loads(
        host.file("/var/lib/ytempire/deploys/last-rollback.json").content_string
    )
    assert_one_color_serves(host, "blue")

    wait_for("5,000 requests", lambda: loader.count(load) >= 5000, 300, 2)
    time.sleep(7)  # the last long requests end
    report, log = loader.stop(load)
    print("load generator report:", json.dumps(report, indent=2))
    print("deploy:", deploy_out[-3000:])
    print("rollback:", rollback_out[-3000:])

    assert report["requests"] >= 5000
    assert report["non_2xx"] == 0, report["by_status"]
    assert report["socket_errors"] == 0, report["errors_by_kind"]
    assert report["max_gap_seconds"] < 1, report["max_gap_seconds"]
    longs = report["long_requests"]
    assert longs
    assert all(r["status"] == 202 for r in longs), longs
    for switched in (deployed["switched_at"], rolled_back["switched_at"]):
        in_flight = loadgen.in_flight_at(longs, switched)
        assert in_flight, f"no long request was in flight at the switch ({switched})"
        assert all(r["end"] - r["start"] >= 5 for r in in_flight)
    # Traffic moved: green answered between the switches, blue after the rollback.
    assert report["by_color"].get("green", {}).get("count", 0) > 0
    moved = loadgen.first_time_all(log, "blue", rollback_started)
    assert moved is not None
    print(
        f"rollback: all traffic on blue {moved - rollback_started:.2f} s after the command started"
    )
    assert moved - rollback_started <= 5


# --- must show 3: faults ---------------------------------------------------------------------


@pytest.mark.parametrize("release", ["answers-500", "never-binds"])
def test_a_new_color_that_fails_its_health_gate_changes_nothing(host, run, release):
    before = {f: state_file(host, f) for f in ("current_env", "previous_env")}
    upstream = host.file(UPSTREAM).content_string
    rc, out = run("deploy", deploy_image=image(release), deploy_health_retries=5)
    assert rc != 0, out
    assert "did not become healthy" in out
    assert host.file(UPSTREAM).content_string == upstream
    assert {f: state_file(host, f) for f in before} == before
    assert_one_color_serves(host, "blue")
    assert running_colors(host, "api") == {"blue"}
    assert last_record(host)["result"] == "failed"


def nginx_workers(host) -> set[str]:
    """nginx's worker processes: a reload replaces them."""
    return set(host.check_output("pgrep -P $(cat /run/nginx.pid)").split())


def test_an_upstream_nginx_refuses_is_not_reloaded(host, run):
    upstream = host.file(UPSTREAM).content_string
    workers = nginx_workers(host)
    host.check_output("echo 'this is not nginx;' > /etc/nginx/conf.d/zz-broken.conf")
    try:
        rc, out = run("deploy", deploy_image=image("release-2"))
    finally:
        host.check_output("rm -f /etc/nginx/conf.d/zz-broken.conf")
    assert rc != 0, out
    assert "nginx -t refused the upstream file for green; nginx was not reloaded" in out
    assert host.file(UPSTREAM).content_string == upstream
    assert nginx_workers(host) == workers
    assert_one_color_serves(host, "blue")
    assert running_colors(host, "api") == {"blue"}


def test_a_second_deploy_is_refused_while_one_runs(host, run, start):
    first = start("deploy", deploy_image=image("release-2"))
    wait_for("the first deploy's lock", lambda: lock_holder(host), 120)
    rc, out = run("deploy", deploy_image=image("release-3"))
    assert rc != 0, out
    assert "another deploy or rollback is running on this server" in out
    first_out, _ = first.communicate(timeout=600)
    assert first.returncode == 0, first_out
    assert_one_color_serves(host, "green")
    assert api_container(host, "green", ".Config.Image") == "ytempire/ytvideo:green"


def test_killed_between_start_and_switch_a_rerun_converges(host, run, start):
    # green serves release-2; blue gets release-3. A render holds the handover
    # (the old worker drains), so the kill lands after blue's start, before the switch.
    busy = submit(host, LONG_VIDEO)
    wait_for("the render to start", lambda: job(host, busy)["status"] == "running", 120)
    wanted = image_id(host, image("release-3"))
    proc = start("deploy", deploy_image=image("release-3"))
    wait_for(
        "blue's API on release-3",
        lambda: (
            "blue" in running_colors(host, "api")
            and api_container(host, "blue", ".Image") == wanted
        ),
        180,
    )
    kill_controller_and_module(host, proc)
    assert serving(host) == "green"
    assert answering(host) == "green"
    assert state_file(host, "current_env") == "green"
    rc, out = run("deploy", deploy_image=image("release-3"))
    assert rc == 0, out
    assert_one_color_serves(host, "blue")
    assert state_file(host, "previous_env") == "green"
    done = wait_for(
        "the render", lambda: (j := job(host, busy))["status"] != "running" and j, 300, 2
    )
    assert done["status"] == "completed", done


def test_killed_between_switch_and_retire_a_rerun_converges(host, run, start):
    # blue serves release-3; green gets release-2, and the kill comes during the watch.
    proc = start("deploy", deploy_image=image("release-2"), deploy_watch_seconds=15)
    wait_for("the switch to green", lambda: serving(host) == "green", 240)
    kill_controller_and_module(host, proc)
    assert state_file(host, "current_env") == "blue", "killed before the record"
    rc, out = run("deploy", deploy_image=image("release-2"))
    assert rc == 0, out
    assert "finishing that switch" in out
    assert_one_color_serves(host, "green")
    assert state_file(host, "previous_env") == "blue"
    assert host.run("systemctl is-active ytempire-retire-blue.timer").stdout.strip() == "active"


def test_a_job_mid_render_at_the_switch_completes_exactly_once(host, run):
    long_job = submit(host, LONG_VIDEO)
    wait_for("the job to start rendering", lambda: job(host, long_job)["status"] == "running", 120)
    rc, out = run("deploy", deploy_image=image("release-3"))
    assert rc == 0, out
    assert "drained and stopped" in out
    done = wait_for(
        "the job to finish",
        lambda: (j := job(host, long_job))["status"] in ("completed", "failed") and j,
        300,
        2,
    )
    assert done["status"] == "completed", done
    assert done["attempts"] == 1, done
    assert_one_color_serves(host, "blue")


def test_a_color_that_fails_in_the_watch_window_is_reverted(host, run, start):
    # blue serves release-3; green gets the release that fails after the switch.
    host.run(f"rm -f {MEDIA}/{FAIL_TRIGGER}")
    proc = start("deploy", deploy_image=image("fails-later"), deploy_watch_seconds=60)
    wait_for("the switch to green", lambda: serving(host) == "green", 240)
    host.check_output(f"touch {MEDIA}/{FAIL_TRIGGER}")
    try:
        out, _ = proc.communicate(timeout=300)
    finally:
        host.run(f"rm -f {MEDIA}/{FAIL_TRIGGER}")
    assert proc.returncode != 0, out
    assert "failed within the watch window and traffic is back on blue" in out
    assert last_record(host)["result"] == "reverted"
    assert_one_color_serves(host, "blue")
    assert running_colors(host, "api") == {"blue"}


def test_a_release_whose_schema_the_serving_color_cannot_run_is_refused(host, run):
    before = {f: state_file(host, f) for f in ("current_env", "previous_env")}
    green_file = host.file("/opt/ytempire/docker-compose.green.yml").content_string
    rc, out = run("deploy", deploy_image=image("schema-next"))
    assert rc != 0, out
    assert f"migrates to schema {SCHEMA + 1}, which needs schema {SCHEMA + 1} or newer" in out
    assert f"the serving color runs schema {SCHEMA}" in out
    assert {f: state_file(host, f) for f in before} == before
    assert host.file("/opt/ytempire/docker-compose.green.yml").content_string == green_file
    assert_one_color_serves(host, "blue")


# --- the module's contract: check mode, idempotence, records, metrics ----------------------------


def test_check_mode_shows_the_diff_and_changes_nothing(host, run):
    before = {f: state_file(host, f) for f in ("current_env", "previous_env")}
    upstream = host.file(UPSTREAM).content_string
    rc, out = run("deploy", check=True, deploy_image=image("release-2"))
    assert rc == 0, out
    assert "changed=1" in out
    assert f"+    server 127.0.0.1:{PORTS['green']};" in out
    assert host.file(UPSTREAM).content_string == upstream
    assert {f: state_file(host, f) for f in before} == before


def test_deploying_what_runs_changes_nothing(host, run):
    running = api_container(host, "blue", ".Image")
    tag = next(t for t in ("release-2", "release-3") if image_id(host, image(t)) == running)
    rc, out = run("deploy", deploy_image=image(tag))
    assert rc == 0, out
    assert "changed=0" in out
    assert last_record(host)["result"] == "unchanged"


def test_records_and_metrics_say_what_happened(host, records):
    record = last_record(host)
    assert record["action"] == "deploy"
    assert [s["name"] for s in record["steps"]][:2] == ["lock", "image"]
    prom = host.file("/var/lib/prometheus/node-exporter/ytempire_deploy.prom").content_string
    assert 'ytempire_deploy_active_color{color="blue"} 1' in prom
    assert 'ytempire_deploy_last_success{action="rollback"} 1' in prom
    assert "ytempire_rollback_duration_seconds " in prom
    controller = sorted(records.glob("*.json"))
    assert controller, "the deploy_report callback keeps a record per run"
    kept = [json.loads(p.read_text()) for p in controller]
    assert any(d["deploy"]["action"] == "rollback" for r in kept for d in r["deploys"])
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in controller)


# --- last: it prunes what the other tests deploy ----------------------------------------


def test_rollback_after_the_old_color_was_retired_and_pruned(host, run, loader):
    rc, out = run("deploy", deploy_image=image("release-2"), deploy_retire_after=2)
    assert rc == 0, out
    assert_one_color_serves(host, "green")
    wait_for("blue's retirement", lambda: "blue" not in running_colors(host, "api"), 60, 1)
    host.check_output("PRUNE_UNTIL=0s /usr/local/sbin/ytempire-docker-prune")
    assert not host.run(
        "docker ps -a -q --filter label=com.docker.compose.service=api-blue"
    ).stdout.strip(), "the prune removes the retired container"
    assert host.run("docker image inspect ytempire/ytvideo:blue").rc == 0, "the color tag is kept"

    # A light load: it only has to show when traffic moves.
    load = loader.start(
        "--path", "/health/live", workers=2, rate=20, max_requests=20000, max_seconds=120
    )
    wait_for("the load to start", lambda: loader.count(load) > 20, 60)
    started = time.time()
    rc, out = run("rollback")
    assert rc == 0, out
    time.sleep(2)
    report, log = loader.stop(load)
    assert_one_color_serves(host, "blue")
    moved = loadgen.first_time_all(log, "blue", started)
    assert moved is not None
    print(
        f"rollback after retire and prune: all traffic on blue {moved - started:.2f} s"
        " after the command started"
    )
    print(out[-2500:])
    assert moved - started <= 5
    assert report["non_2xx"] == 0, report
    assert report["socket_errors"] == 0, report
