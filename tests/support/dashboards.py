"""The Grafana dashboards in roles/monitoring/files/grafana/dashboards, as tests read them.

``queries()`` gives every PromQL expression of every target of every panel (a row's nested
panels too), so a panel added to build_dashboards.py is checked without touching a test.
A dashboard tagged ``gpu`` needs a GPU: a check on a host without one skips it (``needs_gpu``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "roles/monitoring/files/grafana"
DASHBOARDS = GRAFANA / "dashboards"
BUILDER = GRAFANA / "build_dashboards.py"
GPU_TAG = "gpu"
DATASOURCE_UID = "prometheus"  # the datasource the monitoring role provisions


class Query(NamedTuple):
    """One target of one panel."""

    dashboard: str  # the dashboard's uid
    tags: tuple[str, ...]  # the dashboard's tags
    panel: str  # the panel's title
    expr: str

    @property
    def needs_gpu(self) -> bool:
        return GPU_TAG in self.tags

    @property
    def id(self) -> str:
        return f"{self.dashboard}/{self.panel}/{self.expr}"


def load(directory: Path = DASHBOARDS) -> dict[Path, dict[str, Any]]:
    """Every dashboard file of a directory, parsed."""
    return {path: json.loads(path.read_text()) for path in sorted(directory.glob("*.json"))}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, and the panels a row holds (a collapsed row keeps them)."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def queries(directory: Path = DASHBOARDS) -> list[Query]:
    found = []
    for dashboard in load(directory).values():
        tags = tuple(dashboard.get("tags", []))
        for panel in panels(dashboard):
            found.extend(
                Query(dashboard["uid"], tags, panel.get("title", ""), target["expr"])
                for target in panel.get("targets", [])
                if target.get("expr")
            )
    return found


# PromQL words that look like metric names but are not.
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
_LABEL_LISTS = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads (not functions, labels, keywords or durations).

    A small scanner, enough for the queries of these dashboards: strings, label matchers,
    range and subquery brackets and grouping label lists are blanked out first.
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(_LABEL_LISTS, " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        before = text[match.start() - 1] if match.start() else " "
        if before.isdigit() or before == ".":  # 5m, 1e9, 0.5
            continue
        if text[match.end() :].lstrip().startswith("("):  # a function or an aggregation
            continue
        if match.group().lower() not in _KEYWORDS:
            names.add(match.group())
    return names
