"""The Grafana dashboards (roles/monitoring/files/grafana), built from build_dashboards.py.

The JSON is checked as Grafana reads it (uids, ids, the grid, the datasource), and every
panel's query against a real Prometheus (/usr/bin/prometheus, started here): it must parse,
name only metrics of the monitoring contract (issue 13), and return data from a platform
that works. The platform is an HTTP server in this process that serves, per scrape job of
the contract, the metrics that job exports, with plausible values and counters that grow;
the Prometheus scrapes it every second. Series that exist only after a failure are left
out, so a query over one of them must fall back (``or vector(0)``) to pass. This platform
has a GPU, so the GPU dashboard's queries are checked too (a site test on a host without
one skips that dashboard: its tag ``gpu``).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode, urlsplit
from urllib.request import urlopen

import pytest
import yaml

from tests.support.dashboards import BUILDER, DATASOURCE_UID, load, metric_names, panels, queries

PROMETHEUS = "/usr/bin/prometheus"
DASHBOARDS = load()
QUERIES = queries()
DATA_WAIT = 20.0  # seconds a query may take to return data once every target was scraped

# The metric names of the monitoring contract, job by job; besides these the dashboards may
# read `up` and the prometheus_* and alertmanager_* metrics.
CONTRACT = {
    "node": {
        "node_cpu_seconds_total",
        "node_memory_MemAvailable_bytes",
        "node_memory_MemTotal_bytes",
        "node_filesystem_avail_bytes",
        "node_filesystem_size_bytes",
        "node_filesystem_readonly",
        "node_load1",
        "node_textfile_scrape_error",
        "ytempire_backup_last_success_timestamp_seconds",
        "ytempire_backup_last_failure_timestamp_seconds",
        "ytempire_backup_last_size_bytes",
        "ytempire_backup_last_duration_seconds",
        "ytempire_backup_last_offsite_success_timestamp_seconds",
        "ytempire_restore_drill_last_success_timestamp_seconds",
        "ytempire_restore_drill_last_failure_timestamp_seconds",
        "ytempire_restore_drill_success",
        "ytempire_restore_drill_rto_seconds",
        "ytempire_restore_drill_rpo_seconds",
        "ytempire_deploy_last_success",
        "ytempire_deploy_last_timestamp_seconds",
        "ytempire_deploy_active_color",
        "ytempire_deploy_switch_duration_seconds",
    },
    "docker": {"engine_daemon_container_states_containers", "engine_daemon_engine_info"},
    "ytempire-api": {
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "videos_processed_total",
        "video_processing_failures_total",
        "video_processing_cost_dollars",
        "ytvideo_jobs",
        "ytvideo_oldest_job_age_seconds",
        "ytvideo_job_store_up",
    },
    "postgres": {"pg_up"},
    "redis": {"redis_up", "redis_key_size", "redis_memory_used_bytes"},
    "containers": {
        "ytempire_container_up",
        "ytempire_container_cpu_seconds_total",
        "ytempire_container_memory_usage_bytes",
        "ytempire_container_memory_limit_bytes",
        "ytempire_container_cpu_limit_cores",
        "ytempire_container_restarts_total",
        "ytempire_container_oom_events_total",
        "ytempire_container_oom_killed",
        "ytempire_container_started_timestamp_seconds",
        "ytempire_container_healthy",
        "ytempire_gpu_up",
        "ytempire_gpu_count",
        "ytempire_gpu_utilization_ratio",
        "ytempire_gpu_memory_used_bytes",
        "ytempire_gpu_memory_total_bytes",
        "ytempire_gpu_temperature_celsius",
        "ytempire_gpu_power_watts",
        "ytempire_gpu_xid_errors_total",
        "ytempire_docker_up",
    },
    "blackbox": {"probe_success", "probe_http_status_code", "probe_duration_seconds"},
}
CONTRACT_NAMES = set().union(*CONTRACT.values())
OWN_METRICS = ("prometheus_", "alertmanager_")  # what the monitoring daemons say of themselves
# Series a healthy platform does not have: the fake one leaves them out.
AFTER_FAILURE = {
    "ytempire_backup_last_failure_timestamp_seconds",
    "ytempire_restore_drill_last_failure_timestamp_seconds",
    "video_processing_failures_total",
    "ytempire_container_oom_events_total",
    "ytempire_gpu_xid_errors_total",
}
# (name, service, color, running, CPU limit, memory limit in GiB, has a health check)
CONTAINERS = [
    ("ytempire-postgres-1", "postgres", "", True, 4, 16, True),
    ("ytempire-redis-1", "redis", "", True, 1, 4, True),
    ("ytempire-backend-green-1", "backend", "green", True, 4, 8, True),
    ("ytempire-worker-green-1", "worker", "green", True, 8, 32, True),
    ("ytempire-backend-blue-1", "backend", "blue", False, 4, 8, True),
    ("ytempire-frontend-1", "frontend", "", True, 1, 1, False),
    ("ytempire-resource-exporter", "ytempire-resource-exporter", "", True, None, None, False),
]


def contract_name(name: str) -> bool:
    return name in CONTRACT_NAMES or name == "up" or name.startswith(OWN_METRICS)


def sample(metric: str, value: float, /, **labels: str) -> str:
    """One line of the text exposition format."""
    pairs = ",".join(f'{key}="{val}"' for key, val in labels.items())
    return f"{metric}{{{pairs}}} {value}" if pairs else f"{metric} {value}"


def exposition(job: str, started: float) -> str:
    """What the job's targets answer now, on a platform that started at `started` (epoch s)."""
    now = time.time()
    t = now - started
    lines: list[str] = []
    add = lines.append
    if job == "node":
        for cpu in ("0", "1"):
            for mode, share in (("idle", 0.6), ("user", 0.3), ("system", 0.08), ("iowait", 0.02)):
                add(sample("node_cpu_seconds_total", 5000 * share + share * t, cpu=cpu, mode=mode))
        add(sample("node_memory_MemAvailable_bytes", 21e9))
        add(sample("node_memory_MemTotal_bytes", 64e9))
        for device, fstype, mountpoint, avail, size in (
            ("/dev/nvme0n1p2", "ext4", "/", 310e9, 1e12),
            ("/dev/sda1", "ext4", "/srv/ytempire", 5.1e12, 8e12),
            ("tmpfs", "tmpfs", "/run", 6.3e9, 6.4e9),
        ):
            fs = {"device": device, "fstype": fstype, "mountpoint": mountpoint}
            add(sample("node_filesystem_avail_bytes", avail, **fs))
            add(sample("node_filesystem_size_bytes", size, **fs))
            add(sample("node_filesystem_readonly", 0, **fs))
        add(sample("node_load1", 3.2))
        add(sample("node_textfile_scrape_error", 0))
        for scope, age, size, duration in (
            ("database", 1800, 2.1e9, 95),
            ("daily", 30000, 1.3e11, 2400),
            ("full", 300000, 2.9e12, 14000),
        ):
            add(sample("ytempire_backup_last_success_timestamp_seconds", now - age, scope=scope))
            add(sample("ytempire_backup_last_size_bytes", size, scope=scope))
            add(sample("ytempire_backup_last_duration_seconds", duration, scope=scope))
            add(
                sample(
                    "ytempire_backup_last_offsite_success_timestamp_seconds",
                    now - age + duration,
                    scope=scope,
                )
            )
        add(sample("ytempire_restore_drill_last_success_timestamp_seconds", now - 28000))
        add(sample("ytempire_restore_drill_success", 1))
        add(sample("ytempire_restore_drill_rto_seconds", 1260))
        add(sample("ytempire_restore_drill_rpo_seconds", 2900))
        add(sample("ytempire_deploy_last_success", 1, action="deploy"))
        add(sample("ytempire_deploy_last_timestamp_seconds", now - 7200, action="deploy"))
        add(sample("ytempire_deploy_switch_duration_seconds", 1.8, action="deploy"))
        add(sample("ytempire_deploy_active_color", 0, color="blue"))
        add(sample("ytempire_deploy_active_color", 1, color="green"))
    elif job == "docker":
        for state, count in (("running", 6), ("paused", 0), ("stopped", 1)):
            add(sample("engine_daemon_container_states_containers", count, state=state))
        add(sample("engine_daemon_engine_info", 1, version="24.0.7", os="Debian GNU/Linux 12"))
    elif job == "ytempire-api":
        route = {"method": "POST", "path": "/api/videos/generate"}
        requests = 403 + 2 * t
        add(sample("http_requests_total", requests - 3, status="202", **route))
        add(sample("http_requests_total", 3, status="500", **route))
        for le, share in (("0.05", 0.2), ("0.1", 0.5), ("0.5", 0.9), ("2.5", 0.99), ("+Inf", 1)):
            add(sample("http_request_duration_seconds_bucket", share * requests, le=le, **route))
        add(sample("http_request_duration_seconds_sum", 0.15 * requests, **route))
        add(sample("http_request_duration_seconds_count", requests, **route))
        add(sample("videos_processed_total", 120 + 0.05 * t))
        add(sample("video_processing_cost_dollars", 1.84, video_id="6f1c0a52"))
        add(sample("video_processing_cost_dollars", 2.31, video_id="9b27e4d0"))
        for status, jobs, age in (("queued", 3, 42), ("running", 1, 310)):
            add(sample("ytvideo_jobs", jobs, status=status))
            add(sample("ytvideo_oldest_job_age_seconds", age, status=status))
        add(sample("ytvideo_job_store_up", 1))
    elif job == "postgres":
        add(sample("pg_up", 1))
    elif job == "redis":
        add(sample("redis_up", 1))
        add(sample("redis_key_size", 2, db="db0", key="celery"))
        add(sample("redis_memory_used_bytes", 52e6))
    elif job == "containers":
        for name, service, color, running, cpus, memory, healthcheck in CONTAINERS:
            c = {"name": name, "service": service, "color": color}
            add(sample("ytempire_container_up", int(running), **c))
            add(sample("ytempire_container_restarts_total", 0, **c))
            add(sample("ytempire_container_oom_killed", 0, **c))
            add(sample("ytempire_container_started_timestamp_seconds", started - 3600, **c))
            if cpus is not None:
                add(sample("ytempire_container_cpu_limit_cores", cpus, **c))
                add(sample("ytempire_container_memory_limit_bytes", memory * 2**30, **c))
            if running:
                add(sample("ytempire_container_cpu_seconds_total", 900 + 0.4 * t, **c))
                add(sample("ytempire_container_memory_usage_bytes", 0.7 * 2**30, **c))
                if healthcheck:
                    add(sample("ytempire_container_healthy", 1, **c))
        add(sample("ytempire_docker_up", 1))
        add(sample("ytempire_gpu_up", 1))
        add(sample("ytempire_gpu_count", 1))
        g = {"gpu": "0", "uuid": "GPU-5c1e8f2a-0d4b-4e9a-9a51-3f0c2b7d6e11", "model": "RTX A5000"}
        add(sample("ytempire_gpu_utilization_ratio", 0.63, **g))
        add(sample("ytempire_gpu_memory_used_bytes", 9.8e9, **g))
        add(sample("ytempire_gpu_memory_total_bytes", 25.4e9, **g))
        add(sample("ytempire_gpu_temperature_celsius", 67, **g))
        add(sample("ytempire_gpu_power_watts", 161.5, **g))
    elif job == "blackbox":
        add(sample("probe_success", 1))
        add(sample("probe_http_status_code", 200))
        add(sample("probe_duration_seconds", 0.042))
    return "\n".join(lines) + "\n"


class Platform(ThreadingHTTPServer):
    """Serves /metrics/<job>, what that scrape job's targets export, on 127.0.0.1."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), PlatformHandler)
        self.started = time.time()
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class PlatformHandler(BaseHTTPRequestHandler):
    server: Platform

    def do_GET(self) -> None:  # noqa: N802  http.server's name
        job = urlsplit(self.path).path.removeprefix("/metrics/")  # blackbox: ?target=URL
        if job not in CONTRACT:
            self.send_error(404)
            return
        body = exposition(job, self.server.started).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  the base's name
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape_config(platform: str, prometheus_port: int, closed_port: int) -> dict[str, Any]:
    """The contract's scrape jobs, every one at the fake platform, every second."""
    itself = {"targets": [f"127.0.0.1:{prometheus_port}"]}
    jobs: list[dict[str, Any]] = [{"job_name": "prometheus", "static_configs": [itself]}]
    for job in CONTRACT:
        entry: dict[str, Any] = {"job_name": job, "metrics_path": f"/metrics/{job}"}
        if job == "ytempire-api":  # the active color answers, the other one is down
            entry["static_configs"] = [
                {"targets": [platform], "labels": {"color": "green"}},
                {"targets": [f"127.0.0.1:{closed_port}"], "labels": {"color": "blue"}},
            ]
        elif job == "blackbox":  # probes: the URL is the instance, the exporter the address
            entry["static_configs"] = [
                {"targets": ["https://ytempire.test/health", "https://ytempire.test/"]}
            ]
            entry["relabel_configs"] = [
                {"source_labels": ["__address__"], "target_label": "__param_target"},
                {"source_labels": ["__param_target"], "target_label": "instance"},
                {"target_label": "__address__", "replacement": platform},
            ]
        else:
            entry["static_configs"] = [{"targets": [platform]}]
        jobs.append(entry)
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": jobs,
    }


def query(prometheus: str, expr: str) -> dict[str, Any]:
    """Prometheus' answer to an instant query, an error's too (400 bad_data: no PromQL)."""
    url = f"{prometheus}/api/v1/query?{urlencode({'query': expr})}"
    try:
        with urlopen(url, timeout=10) as answer:  # noqa: S310  a local http URL
            return json.load(answer)
    except HTTPError as error:
        return json.load(error)


def error(answer: dict[str, Any]) -> str | None:
    if answer.get("status") == "success":
        return None
    return f"{answer.get('errorType')}: {answer.get('error')}"


def returns_data(prometheus: str, expr: str, deadline: float) -> bool:
    """Whether the query answers with at least one series (or a scalar) before the deadline."""
    while True:
        answer = query(prometheus, expr)
        assert error(answer) is None, f"{expr}: {error(answer)}"
        if answer["data"]["resultType"] == "scalar" or answer["data"]["result"]:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    server = Platform()
    server.thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def prometheus(platform: Platform, tmp_path_factory) -> Iterator[str]:
    """The base URL of a real Prometheus that scrapes the fake platform every second."""
    if not Path(PROMETHEUS).is_file():
        pytest.fail(f"{PROMETHEUS} checks the dashboards' queries: apt-get install prometheus")
    work = tmp_path_factory.mktemp("prometheus")
    port, closed = free_port(), free_port()
    config = work / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config(platform.address, port, closed)))
    log = (work / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urlopen(f"{base}/-/ready", timeout=2):  # noqa: S310  a local http URL
                    break
            except (URLError, ConnectionError):
                if process.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(f"Prometheus did not start:\n{Path(log.name).read_text()}")
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def scraped(prometheus: str) -> float:
    """Waits until every target was scraped three times; gives the deadline for data."""
    deadline = time.monotonic() + 20
    while True:
        answer = query(prometheus, "count(count_over_time(up[1m]) >= 3)")
        result = answer["data"]["result"]
        expected = query(prometheus, "count(up)")["data"]["result"]
        if result and expected and result[0]["value"][1] == expected[0]["value"][1]:
            break
        assert time.monotonic() < deadline, f"targets not scraped: {answer}"
        time.sleep(0.5)
    return time.monotonic() + DATA_WAIT


# --- the JSON as Grafana reads it -----------------------------------------------------------


def test_committed_dashboards_are_what_the_code_builds():
    done = subprocess.run(
        [sys.executable, str(BUILDER), "--check"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def test_check_refuses_a_hand_edit_a_missing_and_a_stale_file(tmp_path):
    build = [sys.executable, str(BUILDER), "--output", str(tmp_path)]
    subprocess.run(build, capture_output=True, check=True)
    overview = tmp_path / "ytempire-overview.json"
    overview.write_text(overview.read_text().replace("Videos per minute", "Videos per second"))
    (tmp_path / "ytempire-gpu.json").unlink()
    (tmp_path / "old.json").write_text("{}")
    done = subprocess.run([*build, "--check"], capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert "ytempire-overview.json: differs from the code" in done.stderr
    assert '-      "title": "Videos per second",' in done.stderr
    assert '+      "title": "Videos per minute",' in done.stderr
    assert "ytempire-gpu.json: missing" in done.stderr
    assert "old.json: not built by the code" in done.stderr
    subprocess.run(build, capture_output=True, check=True)
    assert not (tmp_path / "old.json").exists()
    assert subprocess.run([*build, "--check"], capture_output=True, check=False).returncode == 0


def test_there_are_the_dashboards_of_issue_13():
    uids = [d["uid"] for d in DASHBOARDS.values()]
    assert sorted(uids) == sorted(
        {
            "ytempire-overview",
            "ytempire-host",
            "ytempire-containers",
            "ytempire-gpu",
            "ytempire-data",
            "ytempire-backups-deploys",
        }
    )
    assert len(set(uids)) == len(uids)
    overview = next(d for d in DASHBOARDS.values() if d["uid"] == "ytempire-overview")
    assert [p["title"] for p in overview["panels"]] == [
        "System overview",
        "API response time (p95)",
        "Videos per minute",
        "Cost per video",
    ]


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def test_dashboard_is_provisionable(path):
    board = DASHBOARDS[path]
    assert path.stem == board["uid"], "name each file after its dashboard's uid"
    assert len(board["uid"]) <= 40, "Grafana's limit for a uid"
    assert board["title"]
    assert board["tags"][0] == "ytempire"
    assert board["schemaVersion"] >= 36
    assert board["time"] == {"from": "now-6h", "to": "now"}
    assert board["refresh"] == "30s"
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), f"panel ids repeat: {sorted(ids)}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def test_panels_fit_the_grid_and_do_not_overlap(path):
    board = DASHBOARDS[path]
    # A collapsed row keeps its panels inside it: they share the grid with each other only.
    groups = [board["panels"]] + [p["panels"] for p in board["panels"] if p.get("panels")]
    for group in groups:
        boxes = [(p["title"], p["gridPos"]) for p in group]
        for title, g in boxes:
            assert min(g["w"], g["h"]) > 0, f"{title} has no size: {g}"
            assert min(g["x"], g["y"]) >= 0, f"{title} lies outside the grid: {g}"
            assert g["x"] + g["w"] <= 24, f"{title} runs past the 24 columns: {g}"
        for i, (a, ga) in enumerate(boxes):
            for b, gb in boxes[i + 1 :]:
                apart = (
                    ga["x"] + ga["w"] <= gb["x"]
                    or gb["x"] + gb["w"] <= ga["x"]
                    or ga["y"] + ga["h"] <= gb["y"]
                    or gb["y"] + gb["h"] <= ga["y"]
                )
                assert apart, f"{a} {ga} overlaps {b} {gb}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def test_every_panel_queries_the_provisioned_prometheus(path):
    for panel in panels(DASHBOARDS[path]):
        if panel["type"] == "row":
            continue
        datasource = {"type": "prometheus", "uid": DATASOURCE_UID}
        assert panel["datasource"] == datasource, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"] == datasource, panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_only_the_gpu_dashboard_needs_a_gpu():
    """A host without a GPU still has ytempire_gpu_up (0); every other GPU series it lacks."""
    for q in QUERIES:
        gpu_series = {n for n in metric_names(q.expr) if n.startswith("ytempire_gpu_")}
        if gpu_series - {"ytempire_gpu_up"}:
            assert q.needs_gpu, f"{q.dashboard}/{q.panel} needs a GPU: move it to the GPU board"
    boards = {q.dashboard for q in QUERIES if q.needs_gpu}
    assert boards == {"ytempire-gpu"}


def test_loader_finds_the_panels_a_row_holds(tmp_path):
    target = {"refId": "A", "expr": "pg_up"}
    board = {
        "uid": "nested",
        "tags": ["ytempire"],
        "panels": [
            {"id": 1, "type": "row", "title": "Data", "collapsed": True, "panels": [
                {"id": 2, "type": "stat", "title": "PostgreSQL", "targets": [target]}
            ]},
            {"id": 3, "type": "stat", "title": "Redis", "targets": [{"expr": "redis_up"}]},
        ],
    }  # fmt: skip
    (tmp_path / "nested.json").write_text(json.dumps(board))
    assert [(q.dashboard, q.panel, q.expr) for q in queries(tmp_path)] == [
        ("nested", "PostgreSQL", "pg_up"),
        ("nested", "Redis", "redis_up"),
    ]


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            "histogram_quantile(0.95, sum by (le) "
            "(rate(http_request_duration_seconds_bucket[5m])))",
            {"http_request_duration_seconds_bucket"},
        ),
        ('sum by (mode) (rate(node_cpu_seconds_total{mode!="idle"}[5m])) / scalar(count(up))',
         {"node_cpu_seconds_total", "up"}),
        ("sum(x_total) without (cpu) or vector(0) > bool 1e3", {"x_total"}),
        ("a / on (name) group_left (color) b offset 5m and c unless d", set("abcd")),
        ('time() - max(last{scope="a b"}[1h:1m])', {"last"}),
    ],
)  # fmt: skip
def test_metric_names_are_read_from_an_expression(expr, names):
    assert metric_names(expr) == names


def test_the_fake_platform_exports_the_contract():
    """Every metric of the contract, from its job, but those that exist after a failure."""
    for job, names in CONTRACT.items():
        served = {line.split("{")[0].split(" ")[0] for line in exposition(job, 0).splitlines()}
        histogram = {"http_request_duration_seconds_sum", "http_request_duration_seconds_count"}
        assert served - histogram == names - AFTER_FAILURE, job


# --- every query against a real Prometheus --------------------------------------------------


@pytest.mark.parametrize("q", QUERIES, ids=[q.id for q in QUERIES])
def test_query_is_promql_over_contract_metrics(q, prometheus):
    unknown = {n for n in metric_names(q.expr) if not contract_name(n)}
    assert not unknown, f"not in the monitoring contract: {sorted(unknown)}"
    answer = query(prometheus, q.expr)
    assert error(answer) is None, f"Prometheus refused {q.expr!r}: {error(answer)}"


@pytest.mark.parametrize("q", QUERIES, ids=[q.id for q in QUERIES])
def test_query_returns_data_from_a_working_platform(q, prometheus, scraped):
    assert returns_data(prometheus, q.expr, scraped), (
        f"{q.dashboard}/{q.panel}: {q.expr!r} is empty; a metric or label name differs from "
        "the contract, or the series exists only after a failure (add `or vector(0)`)"
    )


def test_the_overview_answers_what_the_platform_does(prometheus, scraped):
    """The guide's four panels, corrected: the fake platform's numbers come out."""
    targets = "sum by (job) (up)"
    p95 = "histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))"
    videos = "sum(rate(videos_processed_total[5m])) * 60"
    cost = ["max(video_processing_cost_dollars)", "avg(video_processing_cost_dollars)"]
    assert [q.expr for q in QUERIES if q.dashboard == "ytempire-overview"] == [
        targets,
        p95,
        videos,
        *cost,
    ]

    def value(expr: str) -> float:
        assert returns_data(prometheus, expr, scraped), expr
        return float(query(prometheus, expr)["data"]["result"][0]["value"][1])

    up = query(prometheus, targets)["data"]["result"]
    assert {r["metric"]["job"]: r["value"][1] for r in up} == {
        "prometheus": "1",
        **{job: "1" for job in CONTRACT if job != "blackbox"},  # ytempire-api: green, not blue
        "blackbox": "2",  # two probes
    }
    # 90 % of the requests under 0.5 s, 99 % under 2.5 s: the p95 interpolates to 0.5 + 2 * 5/9.
    assert value(p95) == pytest.approx(0.5 + 2 * 5 / 9, rel=0.01)
    # One video every 20 s and 2 requests a second. A 5-minute rate of a series seconds old
    # comes out low (Prometheus extrapolates only so far), by the same factor for both
    # counters: their ratio shows that the panel counts per minute.
    requests = "sum(rate(http_request_duration_seconds_count[5m]))"
    assert value(f"({videos}) / {requests}") == pytest.approx(0.05 * 60 / 2, rel=0.05)
    assert value(cost[0]) == pytest.approx(2.31)
    assert value(cost[1]) == pytest.approx((1.84 + 2.31) / 2)


def test_the_checks_refuse_a_broken_query(prometheus, scraped):
    # The guide's p95 with a parenthesis lost: not PromQL.
    broken = "histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket[5m]))"
    answer = query(prometheus, broken)
    assert answer["status"] == "error"
    assert answer["errorType"] == "bad_data", answer
    # A metric the contract does not have.
    assert {n for n in metric_names("rate(node_network_receive_bytes_total[5m])")} == {
        "node_network_receive_bytes_total"
    }
    assert not contract_name("node_network_receive_bytes_total")
    # A label value other than the contract's: valid, and empty.
    assert not returns_data(prometheus, 'redis_key_size{key="celery_queue"}', time.monotonic() + 2)
    # A series that exists only after a failure, without its fallback.
    assert not returns_data(prometheus, "sum(ytempire_gpu_xid_errors_total)", time.monotonic())
    assert returns_data(prometheus, "sum(ytempire_gpu_xid_errors_total) or vector(0)", scraped)
