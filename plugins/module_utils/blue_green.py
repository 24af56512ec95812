"""The pure parts of the blue-green switch: state files, the nginx upstream,
the color files, image references, the schema rule, the watch decision and
the textfile metrics. No I/O here, so all of it is unit-tested on its own;
``plugins/modules/blue_green.py`` does the work on the server.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

COLORS = ("blue", "green")

# The labels a ytvideo image carries (app/Dockerfile): the schema it migrates
# the database to, and the oldest schema an image may have and still run
# against that database.
SCHEMA_LABEL = "org.ytempire.schema.version"
COMPATIBLE_FROM_LABEL = "org.ytempire.schema.compatible-from"


class StateError(ValueError):
    """A state file, upstream file or color file that cannot be read as ours."""


def other(color: str) -> str:
    """The color that is not ``color``."""
    if color not in COLORS:
        raise StateError(f"{color!r} is not a color ({' or '.join(COLORS)})")
    return COLORS[1 - COLORS.index(color)]


def parse_color(text: str | None, source: str) -> str | None:
    """The color a state file (current_env, previous_env) names; None for no file."""
    if text is None:
        return None
    color = text.strip()
    if color not in COLORS:
        raise StateError(f"{source} says {color!r}, not {' or '.join(COLORS)}")
    return color


# --- nginx --------------------------------------------------------------------

_UPSTREAM = re.compile(r"upstream\s+(?P<name>[A-Za-z0-9_]+)\s*\{(?P<body>[^}]*)\}", re.S)
_SERVER = re.compile(r"^\s*server\s+(?P<host>[^\s:;]+):(?P<port>[0-9]+)\b[^;]*;", re.M)


def parse_upstream(text: str, name: str, ports: dict[str, int]) -> str:
    """The color whose port the upstream block ``name`` names (one server line)."""
    blocks = [m for m in _UPSTREAM.finditer(text) if m.group("name") == name]
    if len(blocks) != 1:
        raise StateError(f"the upstream file has {len(blocks)} upstream {name} blocks, not one")
    servers = _SERVER.findall(blocks[0].group("body"))
    if len(servers) != 1:
        raise StateError(f"upstream {name} has {len(servers)} server lines, not one")
    port = int(servers[0][1])
    by_port = {int(p): c for c, p in ports.items()}
    if port not in by_port:
        raise StateError(
            f"upstream {name} points at port {port}, which is no color's "
            f"({', '.join(f'{c} {p}' for c, p in sorted(ports.items()))})"
        )
    return by_port[port]


def render_upstream(name: str, color: str, port: int, keepalive: int, note: str) -> str:
    """The upstream file naming ``color`` (the block the nginx role writes first)."""
    return (
        f"# Written by the blue_green module ({note}): do not edit, deploy or roll back.\n"
        f"# The active API color: {color}.\n"
        f"upstream {name} {{\n"
        f"    server 127.0.0.1:{port};\n"
        f"    keepalive {keepalive};\n"
        "}\n"
    )


_LOG_LINE = re.compile(r"\] (?P<status>[0-9]{3}) .* upstream=(?P<upstream>.+?) rt=")


def count_statuses(lines: list[str], upstream: str) -> tuple[int, int]:
    """(answers, 5xx answers) among access-log lines that ``upstream`` served.

    The log format is the nginx role's ``ytempire`` format; a request nginx
    retried on another server has several upstream addresses, and counts when
    ``upstream`` is the last one (the one that answered).
    """
    total = errors = 0
    for line in lines:
        m = _LOG_LINE.search(line)
        if not m or m.group("upstream").split(",")[-1].strip() != upstream:
            continue
        total += 1
        errors += m.group("status").startswith("5")
    return total, errors


# --- the watch after a switch ---------------------------------------------------


@dataclass
class WatchSample:
    """One look at the new color during the watch: its health and new log lines."""

    healthy: bool
    answers: int = 0
    errors: int = 0


@dataclass
class WatchVerdict:
    ok: bool
    reason: str
    answers: int = 0
    errors: int = 0


def watch_verdict(
    samples: list[WatchSample], max_error_ratio: float, min_answers: int, max_unhealthy: int
) -> WatchVerdict:
    """Whether the new color may stay: revert on ``max_unhealthy`` failed health
    checks in a row, or when at least ``min_answers`` answers came and more than
    ``max_error_ratio`` of them were 5xx."""
    answers = sum(s.answers for s in samples)
    errors = sum(s.errors for s in samples)
    streak = 0
    for s in samples:
        streak = 0 if s.healthy else streak + 1
        if streak >= max_unhealthy:
            return WatchVerdict(
                False, f"its health check failed {streak} times in a row", answers, errors
            )
    if answers >= min_answers and answers and errors / answers > max_error_ratio:
        return WatchVerdict(
            False,
            f"{errors} of {answers} answers through nginx were 5xx "
            f"({errors / answers:.1%} > {max_error_ratio:.1%})",
            answers,
            errors,
        )
    return WatchVerdict(True, f"healthy; {errors} of {answers} answers were 5xx", answers, errors)


# --- images ---------------------------------------------------------------------


def image_repository(ref: str) -> str:
    """The repository of an image reference, without tag or digest."""
    name = ref.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    if not name:
        raise StateError(f"{ref!r} is not an image reference")
    return name


def color_tag(ref: str, color: str) -> str:
    """The per-color tag that keeps a color's image (the prune timer keeps these)."""
    return f"{image_repository(ref)}:{color}"


@dataclass
class SchemaCheck:
    ok: bool
    reason: str


def schema_check(serving: dict[str, str] | None, new: dict[str, str] | None) -> SchemaCheck:
    """May the serving image run against the schema the new image migrates to?

    Each image's labels: SCHEMA_LABEL (its schema) and COMPATIBLE_FROM_LABEL
    (the oldest schema that still runs against it). An image without them is
    taken as compatible, and the reason says so.
    """
    serving, new = serving or {}, new or {}
    try:
        old_version = int(serving[SCHEMA_LABEL]) if SCHEMA_LABEL in serving else None
        new_version = int(new[SCHEMA_LABEL]) if SCHEMA_LABEL in new else None
        floor = int(new[COMPATIBLE_FROM_LABEL]) if COMPATIBLE_FROM_LABEL in new else None
    except ValueError as exc:
        return SchemaCheck(False, f"a schema label is not a number: {exc}")
    if old_version is None or floor is None:
        return SchemaCheck(True, "no schema labels on the images: taken as compatible")
    if old_version < floor:
        return SchemaCheck(
            False,
            f"the new image migrates to schema {new_version}, which needs schema "
            f"{floor} or newer, and the serving color runs schema {old_version}: deploy a "
            "release that keeps the old schema working first",
        )
    return SchemaCheck(True, f"schema {old_version} -> {new_version} (compatible from {floor})")


# --- the color files --------------------------------------------------------------


def render_color_file(color: str, image: str, source: str, image_id: str, note: str) -> str:
    """docker-compose.<color>.yml: which image the color's API and worker run.

    ``image`` is the per-color tag; ``x-ytempire`` says where it came from."""
    meta = json.dumps({"source": source, "id": image_id, "note": note})
    return (
        f"# The image the {color} color runs, written by the blue_green module.\n"
        f"x-ytempire: {meta}\n"
        "services:\n"
        f"  api-{color}:\n"
        f"    image: {image}\n"
        f"  worker-{color}:\n"
        f"    image: {image}\n"
    )


_IMAGE_LINE = re.compile(r"^\s+image:\s*(?P<image>\S+)\s*$", re.M)
_META_LINE = re.compile(r"^x-ytempire:\s*(?P<meta>\{.*\})\s*$", re.M)


def parse_color_file(text: str) -> tuple[str, dict[str, str]]:
    """(image, x-ytempire metadata) of a color file; metadata is empty for the
    stack role's first files."""
    images = set(_IMAGE_LINE.findall(text))
    if len(images) != 1:
        raise StateError(f"a color file names {len(images)} images, not one")
    meta = _META_LINE.search(text)
    return images.pop(), (json.loads(meta.group("meta")) if meta else {})


# --- records and metrics ------------------------------------------------------------


@dataclass
class Step:
    name: str
    seconds: float = 0.0
    changed: bool = False
    detail: str = ""


@dataclass
class Outcome:
    """What a run did: the module returns it as ``deploy``."""

    action: str
    result: str = "unchanged"
    from_color: str | None = None
    to_color: str | None = None
    image: str | None = None
    image_id: str | None = None
    previous_image: str | None = None
    started: str = ""
    duration_seconds: float = 0.0
    switch_seconds: float | None = None
    switched_at: float | None = None
    message: str = ""
    record: str | None = None
    steps: list[Step] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "action": self.action,
            "result": self.result,
            "from_color": self.from_color,
            "to_color": self.to_color,
            "image": self.image,
            "image_id": self.image_id,
            "previous_image": self.previous_image,
            "started": self.started,
            "duration_seconds": round(self.duration_seconds, 3),
            "switch_seconds": None
            if self.switch_seconds is None
            else round(self.switch_seconds, 3),
            "switched_at": self.switched_at,
            "message": self.message,
            "record": self.record,
            "steps": [
                {
                    "name": s.name,
                    "seconds": round(s.seconds, 3),
                    "changed": s.changed,
                    "detail": s.detail,
                }
                for s in self.steps
            ],
        }


def render_metrics(last: dict[str, dict], active: str | None, now: float) -> str:
    """Node exporter textfile metrics from the last record of each action
    (``deploy``, ``rollback``), for the monitoring's alerts."""
    lines = [
        "# HELP ytempire_deploy_last_timestamp_seconds When the last deploy or rollback ended.",
        "# TYPE ytempire_deploy_last_timestamp_seconds gauge",
    ]
    body: list[tuple[str, str, float]] = []
    for action in ("deploy", "rollback"):
        record = last.get(action)
        if not record:
            continue
        body.append(
            ("ytempire_deploy_last_timestamp_seconds", f'action="{action}"', record["ended"])
        )
    lines += [f"{n}{{{labels}}} {value:.3f}" for n, labels, value in body]
    lines += [
        "# HELP ytempire_deploy_last_success Whether the last deploy or rollback succeeded.",
        "# TYPE ytempire_deploy_last_success gauge",
    ]
    for action in ("deploy", "rollback"):
        record = last.get(action)
        if record:
            ok = record["result"] in ("succeeded", "unchanged")
            lines.append(f'ytempire_deploy_last_success{{action="{action}"}} {int(ok)}')
    lines += [
        "# HELP ytempire_deploy_switch_duration_seconds Seconds from the rename of the upstream"
        " file to traffic on the new color, in the last switch.",
        "# TYPE ytempire_deploy_switch_duration_seconds gauge",
    ]
    for action in ("deploy", "rollback"):
        record = last.get(action)
        if record and record.get("switch_seconds") is not None:
            lines.append(
                f'ytempire_deploy_switch_duration_seconds{{action="{action}"}} '
                f"{record['switch_seconds']:.3f}"
            )
    lines += [
        "# HELP ytempire_rollback_duration_seconds Seconds the last rollback took in all.",
        "# TYPE ytempire_rollback_duration_seconds gauge",
    ]
    if last.get("rollback"):
        lines.append(
            f"ytempire_rollback_duration_seconds {last['rollback']['duration_seconds']:.3f}"
        )
    lines += [
        "# HELP ytempire_deploy_active_color The color nginx sends traffic to (1).",
        "# TYPE ytempire_deploy_active_color gauge",
    ]
    for color in COLORS:
        lines.append(f'ytempire_deploy_active_color{{color="{color}"}} {int(color == active)}')
    lines += [
        "# HELP ytempire_deploy_metrics_written_timestamp_seconds When these metrics were written.",
        "# TYPE ytempire_deploy_metrics_written_timestamp_seconds gauge",
        f"ytempire_deploy_metrics_written_timestamp_seconds {now:.3f}",
    ]
    return "\n".join(lines) + "\n"
