"""Monitoring on the converged server: every target up after traffic, nothing
of it reachable from the second host, an alert that reaches a stand-in for
Slack and resolves, every dashboard panel with data, the per-container metrics
and the restart-loop rule against real containers, and the log rotation.

The stand-in for Slack's webhook runs on the controller, the target's default
gateway, on the port the scenario's inventory gives Alertmanager
(site_test_slack_port)."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from tests.support.dashboards import queries as panel_queries  # noqa: E402
from tests.support.webhook import webhook_receiver  # noqa: E402

testinfra_hosts = ["ansible://ytempire"]

PROMETHEUS = "http://127.0.0.1:9090"
SLACK_PORT = 9557
PROJECT = "ytempire"
# Every port of the monitoring, Alertmanager's unused cluster port among them.
MONITORING_PORTS = (9090, 9091, 9093, 9094, 9100, 9115, 9121, 9187, 9417, 3001)
VIDEO = {"title": "Monitoring", "script": "One short line.", "resolution": "320x180", "duration": 2}
JOBS = {
    "prometheus",
    "alertmanager",
    "node",
    "docker",
    "ytempire-api",
    "postgres",
    "redis",
    "containers",
    "pushgateway",
    "blackbox",
}


def query(host, expr: str) -> list[dict]:
    out = host.check_output(
        f"curl -sf {PROMETHEUS}/api/v1/query --data-urlencode {shlex.quote('query=' + expr)}"
    )
    answer = json.loads(out)
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def wait_for(what: str, check, timeout: float, interval: float = 5):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(interval)


def seconds(duration: str) -> int:
    """A Prometheus duration of one unit (30s, 1m, 2h) in seconds."""
    return int(duration[:-1]) * {"s": 1, "m": 60, "h": 3600}[duration[-1]]


@pytest.fixture(scope="module")
def timing(host) -> dict[str, int]:
    """The intervals the running Prometheus and Alertmanager use (the scenario's
    inventory sets them shorter than the role's defaults), in seconds."""
    prometheus = yaml.safe_load(
        json.loads(host.check_output(f"curl -sf {PROMETHEUS}/api/v1/status/config"))["data"]["yaml"]
    )["global"]
    alertmanager = yaml.safe_load(
        json.loads(host.check_output("curl -sf http://127.0.0.1:9093/api/v2/status"))["config"][
            "original"
        ]
    )["route"]
    return {
        "scrape": seconds(prometheus["scrape_interval"]),
        "evaluation": seconds(prometheus["evaluation_interval"]),
        "group_wait": seconds(alertmanager.get("group_wait", "30s")),
        "group_interval": seconds(alertmanager.get("group_interval", "5m")),
    }


def active_color(host) -> str:
    return host.file("/opt/ytempire/current_env").content_string.strip()


def container(host, service: str) -> str:
    return host.check_output(
        f"docker ps -aq --filter label=com.docker.compose.project={PROJECT} "
        f"--filter label=com.docker.compose.service={service}"
    ).split()[0]


@pytest.fixture(scope="module")
def traffic(host, s3, api_auth, timing):
    """Requests through nginx (one answered 404), one video rendered and a
    database and a daily backup (offsite to the S3 server), then two scrapes, so that
    rates, the latency histogram, the cost and the backup panels have data,
    and no earlier fault test's failed backup is the last one, whichever tests
    ran before; and a restore drill. (The deploys' panels have the metrics the
    deploy tests left.)"""
    # Both scopes the backup tests leave failed runs in (their fault cases):
    # a good run of each is what a healthy platform has.
    for scope in ("database", "daily"):
        done = host.run(f"/usr/local/sbin/ytempire-backup run {scope}")
        assert done.rc == 0, done.stdout[-2000:] + done.stderr[-2000:]
    # A restore drill of the newest point, for the drill's panels (the backup tests run
    # after this module, beside the disaster recovery).
    done = host.run("systemctl start ytempire-restore-drill.service")  # its timer's unit
    assert done.rc == 0, host.run(
        "journalctl -u ytempire-restore-drill.service --no-pager -n 40"
    ).stdout
    for path in ("/health", "/health", "/", "/api/no-such-route"):
        host.run(f"curl -sk -o /dev/null https://127.0.0.1{path}")
    body = shlex.quote(json.dumps(VIDEO))
    video = json.loads(
        host.check_output(
            f"curl -sfk --max-time 30 -H {shlex.quote(api_auth)}"
            f" -H 'Content-Type: application/json' --data {body}"
            " https://127.0.0.1/api/videos/generate"
        )
    )
    wait_for(
        "the video to render",
        lambda: (
            json.loads(
                host.check_output(
                    f"curl -sfk -H {shlex.quote(api_auth)} https://127.0.0.1/api/videos/{video['id']}"
                )
            )["status"]
            == "completed"
        ),
        timeout=300,
    )
    time.sleep(2 * timing["scrape"] + 5)  # two scrapes


@pytest.fixture(scope="module")
def slack():
    """The stand-in for Slack's webhook: every body Alertmanager posts."""
    with webhook_receiver(SLACK_PORT) as (_, bodies):
        yield bodies


def test_every_target_is_up_but_the_standby_color(host, traffic):
    targets = json.loads(host.check_output(f"curl -sf {PROMETHEUS}/api/v1/targets"))
    active = targets["data"]["activeTargets"]
    assert {t["labels"]["job"] for t in active} == JOBS
    down = [
        (t["labels"]["job"], t["labels"].get("color"), t["lastError"])
        for t in active
        if t["health"] != "up"
    ]
    standby = {"blue": "green", "green": "blue"}[active_color(host)]
    # Only the active color runs: the standby's target is the one that may be down.
    assert [(job, color) for job, color, _ in down] in ([], [("ytempire-api", standby)]), down
    probes = [t for t in active if t["labels"]["job"] == "blackbox"]
    assert len(probes) == 2
    for result in query(host, 'probe_success{job="blackbox"}'):
        assert result["value"][1] == "1", result


def test_no_monitoring_port_answers_from_the_second_host(target_ip, probe, host):
    for port in MONITORING_PORTS:
        assert probe(target_ip, port).strip() != "open", port
    listening = host.check_output("ss -Hltn")
    for port in MONITORING_PORTS:
        for line in listening.splitlines():
            local = line.split()[3]
            if local.endswith(f":{port}"):
                assert local.startswith(("127.0.0.1:", "[::1]:")), line


def test_every_dashboard_panel_has_data(host, traffic):
    gpu = int(float(query(host, "ytempire_gpu_count")[0]["value"][1]))
    checked = skipped = 0
    empty = []
    for panel in panel_queries():
        if panel.needs_gpu and gpu == 0:
            skipped += 1  # this server has no GPU: its dashboard can have no data here
            continue
        checked += 1
        if not query(host, panel.expr):
            empty.append(panel.id)
    assert checked > 20
    assert not empty, empty
    print(f"panel queries with data: {checked}; GPU panels left out (no GPU): {skipped}")


def test_postgres_down_reaches_slack_and_resolves(host, slack, timing):
    rules = json.loads(host.check_output(f"curl -sf {PROMETHEUS}/api/v1/rules?type=alert"))
    (rule,) = [
        r for g in rules["data"]["groups"] for r in g["rules"] if r["name"] == "PostgresDown"
    ]
    # Detection needs a scrape, then the rule's `for`, counted from the
    # evaluation that first sees it, then Alertmanager's group_wait (and 15 s to spare).
    bound = timing["scrape"] + rule["duration"] + timing["evaluation"] + timing["group_wait"] + 15
    postgres = container(host, "postgres")
    started = time.monotonic()
    host.check_output(f"docker stop {postgres}")
    try:
        firing = wait_for(
            "PostgresDown at the stand-in for Slack",
            lambda: [
                b for b in slack if "PostgresDown" in json.dumps(b) and "FIRING" in json.dumps(b)
            ],
            timeout=bound,
        )
        took = time.monotonic() - started
        text = json.dumps(firing[0])
        assert "#platform-ops" in text
        assert "What to do" in text, text
    finally:
        host.check_output(f"docker start {postgres}")
    print(f"PostgresDown reached Slack {took:.0f} s after the stop (bound {bound:.0f} s)")
    wait_for(
        "PostgresDown resolved at the stand-in for Slack",
        lambda: [
            b for b in slack if "PostgresDown" in json.dumps(b) and "RESOLVED" in json.dumps(b)
        ],
        # A scrape, an evaluation, then the group's interval (and 30 s to spare).
        timeout=timing["scrape"] + timing["evaluation"] + timing["group_interval"] + 30,
    )
    wait_for(
        "the API answering through nginx again",
        lambda: host.run("curl -sfk https://127.0.0.1/health").rc == 0,
        timeout=120,
    )


def test_a_stopped_container_moves_its_metrics(host):
    frontend = container(host, "frontend")
    selector = '{job="containers",service="frontend"}'
    assert query(host, f"ytempire_container_up{selector} == 1")
    assert query(host, f"ytempire_container_memory_usage_bytes{selector}")
    limit = query(host, f"ytempire_container_memory_limit_bytes{selector}")
    assert limit
    assert int(float(limit[0]["value"][1])) == 256 * 1024**2  # the sandbox's frontend limit
    host.check_output(f"docker stop {frontend}")
    try:
        wait_for(
            "the frontend's up metric at 0",
            lambda: query(host, f"ytempire_container_up{selector} == 0"),
            timeout=75,
        )
        assert not query(host, f"ytempire_container_memory_usage_bytes{selector}")
    finally:
        host.check_output(f"docker start {frontend}")
    wait_for(
        "the frontend's up metric at 1",
        lambda: query(host, f"ytempire_container_up{selector} == 1"),
        timeout=75,
    )


def test_a_restart_loop_fires_its_rule(host):
    name = "ytempire-test-crashloop"
    image = host.check_output(
        f"docker inspect -f '{{{{.Config.Image}}}}' {container(host, 'redis')}"
    )
    host.check_output(
        f"docker run -d --name {name} --restart always --memory 32m {image} sh -c 'sleep 3; exit 1'"
    )
    try:
        firing = wait_for(
            "ContainerRestartLoop firing for the crash-looping container",
            lambda: query(
                host,
                f'ALERTS{{alertname="ContainerRestartLoop",alertstate="firing",name="{name}"}}',
            ),
            timeout=20 * 60,
            interval=15,
        )
        assert firing[0]["metric"]["severity"] in ("warning", "critical")
    finally:
        host.run(f"docker rm -f {name}")


def test_no_rule_fires_on_the_healthy_platform(host, traffic):
    firing = query(host, 'ALERTS{alertstate="firing",alertname!="Watchdog"}')
    names = sorted({a["metric"]["alertname"] for a in firing})
    # The tests before this one stopped PostgreSQL and the frontend and ran a
    # crash loop; what follows from those may still be resolving.
    allowed = {"ContainerRestartLoop", "ContainerDown", "TargetDown", "APIDown", "PostgresDown"}
    # The capacity and disk rules measure the machine the tests run on (its
    # disk is shared with every other container here): whether they fire says
    # nothing about the platform. promtool's idle-platform test keeps them
    # quiet on a healthy host.
    allowed |= {"CapacityLevel1", "CapacityLevel2", "DiskWillFillIn24h", "DiskSpaceLow"}
    assert set(names) <= allowed, names
    assert query(host, 'ALERTS{alertname="Watchdog",alertstate="firing"}')


WRITER = """
import signal, time
path = "/var/log/ytempire/monitoring-test.log"
log = open(path, "a", buffering=1)
def reopen(*_):
    global log
    log.close()
    log = open(path, "a", buffering=1)
signal.signal(signal.SIGHUP, reopen)
n = 0
while True:
    log.write(f"line {n}\\n")
    n += 1
    time.sleep(0.2)
"""


def test_logs_rotate_and_only_their_writer_is_told(host):
    """The scenario's inventory names ytempire-test-logwriter (HUP) as the one
    writer: it reopens its log after a real rotation, and a unit that HUP would
    stop (sleep) is not signalled."""
    log = "/var/log/ytempire/monitoring-test.log"
    host.check_output(
        f"printf %s {shlex.quote(WRITER)} > /usr/local/bin/ytempire-test-logwriter.py"
    )
    host.check_output(
        "systemd-run --unit=ytempire-test-logwriter -p User=ytempire "
        "python3 /usr/local/bin/ytempire-test-logwriter.py"
    )
    host.check_output("systemd-run --unit=ytempire-test-bystander sleep infinity")
    try:
        wait_for(
            "the writer's first lines",
            lambda: host.file(log).exists and host.file(log).size > 0,
            30,
            1,
        )
        dry = host.run("logrotate -d /etc/logrotate.d/ytempire")
        assert dry.rc == 0, dry.stderr
        assert "monitoring-test.log" in dry.stdout + dry.stderr
        host.check_output("logrotate -f /etc/logrotate.d/ytempire")
        assert host.file(f"{log}.1").content_string.startswith("line 0")
        assert host.file(log).user == "ytempire"
        # The writer reopened: its new lines go to the new file.
        wait_for("lines in the new file", lambda: host.file(log).size > 0, 10, 1)
        assert host.service("ytempire-test-logwriter").is_running
        assert host.service("ytempire-test-bystander").is_running
    finally:
        host.run("systemctl stop ytempire-test-logwriter ytempire-test-bystander")
        host.run(f"rm -f {log} {log}.* /usr/local/bin/ytempire-test-logwriter.py")
    # nginx's logs, the platform's access log among them, are Debian's rotation.
    nginx = host.run("logrotate -d /etc/logrotate.d/nginx")
    assert nginx.rc == 0, nginx.stderr
    assert "/var/log/nginx/*.log" in nginx.stdout + nginx.stderr
