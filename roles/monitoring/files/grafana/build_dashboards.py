#!/usr/bin/env python3
"""The platform's Grafana dashboards, defined in code; the JSON in dashboards/ is built from it.

Change a dashboard here, never in its JSON, then rebuild and commit both:

    python3 roles/monitoring/files/grafana/build_dashboards.py            # writes dashboards/*.json
    python3 roles/monitoring/files/grafana/build_dashboards.py --check    # CI: exits 1 on a drift

``--check`` fails when a committed file differs from what this code builds, is missing, or is
one that the code no longer builds (a hand edit, or a forgotten rebuild). Standard library only.

Every query uses only the job and metric names of the monitoring contract (issue 13), and every
one returns data on a live platform that has had some traffic: series that exist only after a
failure are summed with ``or vector(0)``. Panels that need a GPU are all on the dashboard tagged
``gpu``, so a check on a host without one can skip exactly that dashboard. Panels are laid out
left to right in rows of 24 columns; ids are numbered in order. tests/test_dashboards.py checks
all of this against a real Prometheus.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parent / "dashboards"
# The datasource that the monitoring role provisions for Grafana.
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
TAG = "ytempire"
GPU_TAG = "gpu"  # dashboards whose panels need a GPU
COLUMNS = 24  # Grafana's grid width
SCHEMA_VERSION = 39
# Filesystems that hold no data worth a disk alert (node exporter already leaves out overlay,
# proc, sysfs and the like).
NO_DISK_FS = 'fstype!~"tmpfs|ramfs|squashfs"'
CORES = 'count(node_cpu_seconds_total{mode="idle"})'

Thresholds = list[tuple[float, str]]  # (from value, colour) above a green base
Target = tuple[str, str]  # (PromQL expression, legend)
UP: dict[int, tuple[str, str]] = {0: ("down", "red"), 1: ("up", "green")}
OK: dict[int, tuple[str, str]] = {0: ("failed", "red"), 1: ("ok", "green")}
ERROR: dict[int, tuple[str, str]] = {0: ("ok", "green"), 1: ("error", "red")}
HOUR = 3600
DAY = 24 * HOUR


@dataclass
class Panel:
    """A stat or timeseries panel over Prometheus queries; id and place come from the layout."""

    kind: str
    title: str
    targets: list[Target]
    description: str = ""
    unit: str = "short"
    thresholds: Thresholds = field(default_factory=list)
    mappings: dict[int, tuple[str, str]] = field(default_factory=dict)
    overrides: dict[str, Thresholds] = field(default_factory=dict)  # per series (legend)
    width: int = 12
    height: int = 8
    text_mode: str = "auto"
    stack: bool = False
    decimals: int | None = None

    def to_json(self, panel_id: int, grid: dict[str, int]) -> dict[str, Any]:
        defaults: dict[str, Any] = {
            "unit": self.unit,
            "color": {"mode": "thresholds" if self.kind == "stat" else "palette-classic"},
            "thresholds": _thresholds(self.thresholds),
            "mappings": _mappings(self.mappings) if self.mappings else [],
        }
        if self.decimals is not None:
            defaults["decimals"] = self.decimals
        if self.unit == "percentunit":
            defaults.update(min=0, max=1)
        if self.kind == "timeseries":
            defaults["custom"] = {
                "drawStyle": "line",
                "lineWidth": 1,
                "fillOpacity": 10,
                "showPoints": "never",
                "spanNulls": False,
                "stacking": {"mode": "normal" if self.stack else "none", "group": "A"},
                "thresholdsStyle": {"mode": "line" if self.thresholds else "off"},
            }
        return {
            "id": panel_id,
            "type": self.kind,
            "title": self.title,
            "description": self.description,
            "datasource": dict(DATASOURCE),
            "gridPos": grid,
            "targets": [
                {
                    "refId": chr(ord("A") + i),
                    "datasource": dict(DATASOURCE),
                    "editorMode": "code",
                    "expr": expr,
                    "legendFormat": legend,
                    "range": True,
                }
                for i, (expr, legend) in enumerate(self.targets)
            ],
            "fieldConfig": {
                "defaults": defaults,
                "overrides": [
                    {
                        "matcher": {"id": "byName", "options": name},
                        "properties": [{"id": "thresholds", "value": _thresholds(steps)}],
                    }
                    for name, steps in self.overrides.items()
                ],
            },
            "options": self._options(),
        }

    def _options(self) -> dict[str, Any]:
        if self.kind == "stat":
            return {
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "colorMode": "value",
                "graphMode": "none" if self.mappings else "area",
                "justifyMode": "auto",
                "orientation": "auto",
                "textMode": self.text_mode,
            }
        return {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }


@dataclass
class Row:
    """A full-width row header; the panels after it belong to it."""

    title: str


def stat(title: str, *targets: Target, width: int = 6, height: int = 4, **kw: Any) -> Panel:
    return Panel("stat", title, list(targets), width=width, height=height, **kw)


def timeseries(title: str, *targets: Target, width: int = 12, height: int = 8, **kw: Any) -> Panel:
    return Panel("timeseries", title, list(targets), width=width, height=height, **kw)


def _thresholds(steps: Thresholds) -> dict[str, Any]:
    return {
        "mode": "absolute",
        "steps": [{"color": "green", "value": None}]
        + [{"color": color, "value": value} for value, color in steps],
    }


def _mappings(values: dict[int, tuple[str, str]]) -> list[dict[str, Any]]:
    options = {
        str(value): {"text": text, "color": color, "index": i}
        for i, (value, (text, color)) in enumerate(sorted(values.items()))
    }
    return [{"type": "value", "options": options}]


def layout(items: list[Panel | Row]) -> list[dict[str, Any]]:
    """Panels left to right, a new line when the next one does not fit; rows start a line."""
    panels: list[dict[str, Any]] = []
    x = y = line = 0
    for panel_id, item in enumerate(items, start=1):
        if isinstance(item, Row):
            y, x, line = y + line, 0, 0
            panels.append(
                {
                    "id": panel_id,
                    "type": "row",
                    "title": item.title,
                    "collapsed": False,
                    "gridPos": {"h": 1, "w": COLUMNS, "x": 0, "y": y},
                    "panels": [],
                }
            )
            y += 1
            continue
        if not 0 < item.width <= COLUMNS:
            raise ValueError(f"panel {item.title!r} is {item.width} wide; 1 to {COLUMNS} fit")
        if x + item.width > COLUMNS:
            y, x, line = y + line, 0, 0
        panels.append(item.to_json(panel_id, {"h": item.height, "w": item.width, "x": x, "y": y}))
        x += item.width
        line = max(line, item.height)
    return panels


def dashboard(
    uid: str, title: str, description: str, items: list[Panel | Row], tags: tuple[str, ...] = ()
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": [TAG, *tags],
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "timezone": "browser",
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "annotations": {"list": []},
        "templating": {"list": []},
        "links": [
            {
                "type": "dashboards",
                "tags": [TAG],
                "asDropdown": True,
                "title": "YTEMPIRE",
                "includeVars": False,
                "keepTime": True,
            }
        ],
        "panels": layout(items),
    }


def overview() -> dict[str, Any]:
    """The ops guide's four panels (3.1), with the queries it meant."""
    return dashboard(
        "ytempire-overview",
        "YTEMPIRE overview",
        "Targets, API latency, video throughput and cost (ops guide 3.1).",
        [
            stat(
                "System overview",
                ("sum by (job) (up)", "{{job}}"),
                description="Targets up per scrape job. ytempire-api has one target per color "
                "and only the active color runs, so it shows 1 normally.",
                width=12,
                height=8,
                thresholds=[],
                decimals=0,
            ),
            timeseries(
                "API response time (p95)",
                (
                    "histogram_quantile(0.95, sum by (le) "
                    "(rate(http_request_duration_seconds_bucket[5m])))",
                    "95th percentile",
                ),
                description="95th percentile of API request durations over 5 minutes, all "
                "routes and both colors together. Above 2 s: ops guide 5.3, level 1.",
                unit="s",
                thresholds=[(2, "red")],
            ),
            timeseries(
                "Videos per minute",
                ("sum(rate(videos_processed_total[5m])) * 60", "videos/min"),
                description="Videos rendered successfully, per minute, averaged over 5 minutes.",
                decimals=2,
            ),
            timeseries(
                "Cost per video",
                ("max(video_processing_cost_dollars)", "most expensive"),
                ("avg(video_processing_cost_dollars)", "average"),
                description="Cost (compute plus providers) of the videos finished in the API's "
                "cost window (an hour by default); the target is under $3 a video.",
                unit="currencyUSD",
                thresholds=[(3, "red")],
            ),
        ],
    )


def host() -> dict[str, Any]:
    fs = NO_DISK_FS
    return dashboard(
        "ytempire-host",
        "YTEMPIRE host",
        "CPU, memory, disks and load of the server (node exporter), and its reachability "
        "through nginx (blackbox probes). Thresholds: ops guide 5.3.",
        [
            stat(
                "CPU busy",
                ('1 - avg(rate(node_cpu_seconds_total{mode="idle"}[5m]))', "busy"),
                unit="percentunit",
                thresholds=[(0.7, "orange"), (0.85, "red")],
            ),
            stat(
                "Memory used",
                ("1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes", "used"),
                unit="percentunit",
                thresholds=[(0.8, "orange"), (0.9, "red")],
            ),
            stat(
                "Fullest filesystem",
                (
                    f"max(1 - node_filesystem_avail_bytes{{{fs}}} "
                    f"/ node_filesystem_size_bytes{{{fs}}})",
                    "used",
                ),
                unit="percentunit",
                thresholds=[(0.7, "orange"), (0.85, "red")],
            ),
            stat(
                "Load per core",
                (f"node_load1 / scalar({CORES})", "load1 per core"),
                description="1-minute load average divided by the number of CPUs.",
                thresholds=[(1, "orange"), (2, "red")],
                decimals=2,
            ),
            timeseries(
                "CPU by mode",
                (
                    'sum by (mode) (rate(node_cpu_seconds_total{mode!="idle"}[5m])) '
                    f"/ scalar({CORES})",
                    "{{mode}}",
                ),
                unit="percentunit",
                stack=True,
            ),
            timeseries(
                "Memory",
                ("node_memory_MemTotal_bytes - node_memory_MemAvailable_bytes", "used"),
                ("node_memory_MemTotal_bytes", "total"),
                unit="bytes",
            ),
            timeseries(
                "Filesystems used",
                (
                    f"1 - node_filesystem_avail_bytes{{{fs}}} / node_filesystem_size_bytes{{{fs}}}",
                    "{{mountpoint}}",
                ),
                unit="percentunit",
                thresholds=[(0.7, "orange"), (0.85, "red")],
            ),
            timeseries(
                "Load",
                ("node_load1", "load1"),
                (CORES, "CPUs"),
            ),
            stat(
                "Read-only filesystems",
                (f"sum(node_filesystem_readonly{{{fs}}})", "read-only"),
                description="Filesystems mounted read-only; the kernel remounts one so "
                "after disk errors.",
                thresholds=[(1, "red")],
                decimals=0,
            ),
            Row("Network: the platform as a client sees it, through nginx"),
            stat(
                "Probes succeeding",
                ("probe_success", "{{instance}}"),
                mappings=OK,
                width=8,
            ),
            stat(
                "HTTP status",
                ("probe_http_status_code", "{{instance}}"),
                thresholds=[(300, "orange"), (400, "red")],
                width=8,
            ),
            timeseries(
                "Probe duration",
                ("probe_duration_seconds", "{{instance}}"),
                unit="s",
                width=8,
                height=4,
            ),
        ],
    )


def containers() -> dict[str, Any]:
    cpu = "sum by (name) (rate(ytempire_container_cpu_seconds_total[5m]))"
    return dashboard(
        "ytempire-containers",
        "YTEMPIRE containers",
        "The platform's containers (ytempire-resource-exporter) and the Docker engine.",
        [
            stat("Docker engine", ("ytempire_docker_up", "engine"), mappings=UP, width=4),
            stat(
                "Containers by state",
                ("engine_daemon_container_states_containers", "{{state}}"),
                width=8,
                decimals=0,
            ),
            stat(
                "Containers running",
                ("ytempire_container_up", "{{name}}"),
                mappings=UP,
                width=12,
                text_mode="value_and_name",
            ),
            timeseries(
                "CPU per container",
                (cpu, "{{name}}"),
                description="CPU time used per second: 1 is one core.",
            ),
            timeseries(
                "CPU against limit",
                (f"{cpu} / sum by (name) (ytempire_container_cpu_limit_cores)", "{{name}}"),
                description="Containers with a CPU limit only.",
                unit="percentunit",
                thresholds=[(0.9, "red")],
            ),
            timeseries(
                "Memory per container",
                ("ytempire_container_memory_usage_bytes", "{{name}}"),
                description="Usage minus the inactive file cache, as the OOM killer counts it.",
                unit="bytes",
            ),
            timeseries(
                "Memory against limit",
                (
                    "ytempire_container_memory_usage_bytes / ytempire_container_memory_limit_bytes",
                    "{{name}}",
                ),
                description="Containers with a memory limit only; at 1 the kernel kills it.",
                unit="percentunit",
                thresholds=[(0.8, "orange"), (0.9, "red")],
            ),
            stat(
                "Restarts in the last hour",
                ("increase(ytempire_container_restarts_total[1h])", "{{name}}"),
                thresholds=[(1, "orange"), (3, "red")],
                width=8,
                height=6,
                decimals=0,
                text_mode="value_and_name",
            ),
            stat(
                "Killed for memory",
                ("ytempire_container_oom_killed", "{{name}}"),
                mappings={0: ("no", "green"), 1: ("OOM killed", "red")},
                width=8,
                height=6,
                text_mode="value_and_name",
            ),
            stat(
                "Health checks",
                ("ytempire_container_healthy", "{{name}}"),
                description="Containers with a health check that has answered.",
                mappings={0: ("unhealthy", "red"), 1: ("healthy", "green")},
                width=8,
                height=6,
                text_mode="value_and_name",
            ),
        ],
    )


def gpu() -> dict[str, Any]:
    gpu_legend = "GPU {{gpu}} {{model}}"
    return dashboard(
        "ytempire-gpu",
        "YTEMPIRE GPU",
        "The GPUs the renderer uses, through NVML (ytempire-resource-exporter). "
        "Empty on a host without a GPU.",
        [
            stat("NVML", ("ytempire_gpu_up", "NVML"), mappings=UP, width=8),
            stat("GPUs", ("ytempire_gpu_count", "GPUs"), width=8, decimals=0),
            stat(
                "Xid errors since the exporter started",
                ("sum(ytempire_gpu_xid_errors_total) or vector(0)", "Xid errors"),
                description="Driver-reported GPU errors (Xid). Any is worth reading dmesg for.",
                thresholds=[(1, "red")],
                width=8,
                decimals=0,
            ),
            timeseries(
                "Utilisation",
                ("ytempire_gpu_utilization_ratio", gpu_legend),
                unit="percentunit",
            ),
            timeseries(
                "Memory used",
                (
                    "ytempire_gpu_memory_used_bytes / ytempire_gpu_memory_total_bytes",
                    gpu_legend,
                ),
                unit="percentunit",
                thresholds=[(0.9, "red")],
            ),
            timeseries(
                "Temperature",
                ("ytempire_gpu_temperature_celsius", gpu_legend),
                unit="celsius",
                thresholds=[(80, "orange"), (90, "red")],
            ),
            timeseries("Power", ("ytempire_gpu_power_watts", gpu_legend), unit="watt"),
        ],
        tags=(GPU_TAG,),
    )


def data() -> dict[str, Any]:
    return dashboard(
        "ytempire-data",
        "YTEMPIRE data",
        "PostgreSQL, Redis, the Celery queue and the video jobs.",
        [
            stat("PostgreSQL", ("pg_up", "PostgreSQL"), mappings=UP),
            stat("Redis", ("redis_up", "Redis"), mappings=UP),
            stat(
                "Job store (API to PostgreSQL)",
                ("min(ytvideo_job_store_up)", "job store"),
                mappings=UP,
            ),
            stat(
                "Failed videos",
                ("sum(video_processing_failures_total) or vector(0)", "failed"),
                description="Video jobs that failed, all stages, since the platform started.",
                thresholds=[(1, "orange")],
                decimals=0,
            ),
            timeseries(
                "Celery queue length",
                ('redis_key_size{db="db0",key="celery"}', "celery"),
                description="Tasks waiting in the default Celery queue (Redis list db0 celery).",
                decimals=0,
            ),
            timeseries(
                "Redis memory",
                ("redis_memory_used_bytes", "used"),
                unit="bytes",
            ),
            timeseries(
                "Video jobs",
                ("max by (status) (ytvideo_jobs)", "{{status}}"),
                description="Jobs queued and rendering (the API of each color reports the same "
                "database: max, not sum).",
                decimals=0,
            ),
            timeseries(
                "Oldest job",
                ("max by (status) (ytvideo_oldest_job_age_seconds)", "{{status}}"),
                description="Age of the oldest queued job and of the oldest running one.",
                unit="s",
            ),
        ],
    )


def backups_and_deploys() -> dict[str, Any]:
    return dashboard(
        "ytempire-backups-deploys",
        "YTEMPIRE backups and deploys",
        "Backups, restore drills and blue-green deploys, from the node exporter's textfile "
        "collector. Schedules: database hourly, daily 02:00, full Sunday 03:00, drill 05:00.",
        [
            Row("Backups"),
            stat(
                "Age of the last backup",
                ("time() - ytempire_backup_last_success_timestamp_seconds", "{{scope}}"),
                description="Since the last successful backup of each scope; orange after one "
                "missed run, red after two.",
                unit="s",
                overrides={
                    "database": [(2 * HOUR, "orange"), (3 * HOUR, "red")],
                    "daily": [(DAY + 2 * HOUR, "orange"), (2 * DAY + 2 * HOUR, "red")],
                    "full": [(7 * DAY + 2 * HOUR, "orange"), (14 * DAY + 2 * HOUR, "red")],
                },
                width=12,
                text_mode="value_and_name",
            ),
            stat(
                "Textfile collector",
                ("max(node_textfile_scrape_error)", "textfile"),
                description="An error means the backup and deploy metrics on this dashboard "
                "are stale.",
                mappings=ERROR,
                width=12,
            ),
            timeseries(
                "Last backup size",
                ("ytempire_backup_last_size_bytes", "{{scope}}"),
                unit="bytes",
            ),
            timeseries(
                "Last backup duration",
                ("ytempire_backup_last_duration_seconds", "{{scope}}"),
                unit="s",
            ),
            Row("Restore drill"),
            stat(
                "Last drill",
                ("ytempire_restore_drill_success", "drill"),
                mappings=OK,
            ),
            stat(
                "Since the last good drill",
                ("time() - ytempire_restore_drill_last_success_timestamp_seconds", "age"),
                unit="s",
                thresholds=[(DAY + 2 * HOUR, "orange"), (2 * DAY + 2 * HOUR, "red")],
            ),
            stat(
                "Recovery time (RTO)",
                ("ytempire_restore_drill_rto_seconds", "RTO"),
                description="How long the last good drill took to bring the platform back.",
                unit="s",
            ),
            stat(
                "Data at risk (RPO)",
                ("ytempire_restore_drill_rpo_seconds", "RPO"),
                description="Age of the restore point the last good drill recovered.",
                unit="s",
            ),
            Row("Deploys"),
            stat(
                "Active color",
                ("ytempire_deploy_active_color == 1", "{{color}}"),
                text_mode="name",
                thresholds=[],
            ),
            stat(
                "Last deploy and rollback",
                ("ytempire_deploy_last_success", "{{action}}"),
                mappings=OK,
                text_mode="value_and_name",
            ),
            stat(
                "Since the last deploy and rollback",
                ("time() - ytempire_deploy_last_timestamp_seconds", "{{action}}"),
                unit="s",
                text_mode="value_and_name",
            ),
            stat(
                "Traffic switch duration",
                ("ytempire_deploy_switch_duration_seconds", "{{action}}"),
                unit="s",
                text_mode="value_and_name",
            ),
        ],
    )


def build() -> dict[str, str]:
    """File name to JSON text of every dashboard."""
    built = {}
    for board in (overview(), host(), containers(), gpu(), data(), backups_and_deploys()):
        built[f"{board['uid']}.json"] = json.dumps(board, indent=2) + "\n"
    return built


def check(output: Path, built: dict[str, str]) -> list[str]:
    """What differs between the files in output and what the code builds."""
    problems = []
    for name, text in built.items():
        path = output / name
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        current = path.read_text()
        if current != text:
            diff = difflib.unified_diff(
                current.splitlines(), text.splitlines(), f"{name} (committed)", f"{name} (built)"
            )
            problems.append(f"{path}: differs from the code\n" + "\n".join(list(diff)[:20]))
    problems.extend(
        f"{path}: not built by the code (remove it)"
        for path in sorted(output.glob("*.json"))
        if path.name not in built
    )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="default: %(default)s")
    args = parser.parse_args(argv)
    built = build()
    if args.check:
        problems = check(args.output, built)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print(f"rebuild: python3 {Path(__file__).name} and commit the JSON", file=sys.stderr)
            return 1
        print(f"{len(built)} dashboards in {args.output} match the code")
        return 0
    args.output.mkdir(parents=True, exist_ok=True)
    for name, text in built.items():
        (args.output / name).write_text(text)
    for path in args.output.glob("*.json"):
        if path.name not in built:
            path.unlink()
    print(f"wrote {len(built)} dashboards to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
