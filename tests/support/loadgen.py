#!/usr/bin/env python3
"""Load generator that proves a blue-green deploy through nginx drops nothing.

It runs on a client host (Debian 12's own ``python3``, standard library only, this one
file) in the background while a deploy happens, and writes a JSON report when it stops:

    python3 loadgen.py --base-url https://10.0.0.5 --report /tmp/load.json \\
        --path /health --path 3:/api/videos/<uuid> --workers 4 \\
        --max-requests 20000 --max-seconds 300 --stop-file /tmp/load.stop \\
        --long-every 5 --long-seconds 6 --long-body '{"title": "t", ...}' \\
        --log /tmp/load.jsonl

Steady load: ``--workers`` threads take the paths of ``--path`` in turn (``WEIGHT:PATH``
repeats a path WEIGHT times per round, interleaved), each request a GET on a new
connection with ``Connection: close``. No connection is reused, so no request can lose
the keep-alive race with nginx's graceful reload (an idle kept-alive connection that the
old worker closes just as a request is sent on it): every error in the report is one a
new client would have seen. The run stops at ``--max-requests`` steady requests, after
``--max-seconds``, when ``--stop-file`` appears, or on SIGTERM or SIGINT; requests in
flight then finish (each is bounded by ``--timeout``) and the report is written.

Long requests: every ``--long-every`` seconds (the first at once) a thread POSTs the
JSON body to ``--long-path`` slowly: the headers with Content-Length and the body's first
byte at once, the rest in ten pieces spread over ``--long-seconds``, then it reads the
answer. They overlap the deploy and each other; the report lists each one.

Times are ``time.time()`` (wall clock, seconds), so that a test can compare them with
other hosts' clocks on the same kernel. ``--timeout`` bounds the connect and each send
and read of a request. The exit status is 0 whenever it ran (the report says how the
load fared; the test judges it) and 2 on bad arguments.

The report (``--report``, JSON): ``started``, ``ended``, ``duration_seconds``,
``stop_reason`` (max-requests, max-seconds, stop-file, SIGTERM, SIGINT), ``base_url``,
``paths``, ``workers``; over the steady requests: ``requests``, ``ok`` (2xx),
``by_status`` ("200" -> count), ``non_2xx``, ``socket_errors`` (no HTTP answer) and
``errors_by_kind`` (exception name -> count), ``latency_seconds`` (p50, p95, p99, max of
the answered ones), ``max_gap_seconds`` and ``max_gap_between`` (see ``max_gap``),
``by_color`` (color -> count, first_end, last_end), ``color_timeline`` (see
``color_runs``), ``unfinished_requests`` (still running when the report was written);
``long_requests`` (start, end, status, error, color, sent_bytes each); and
``requests_log_file``, the ``--log`` file (every steady request as a JSON line: start,
end, status, error, color, path), or null.

The pure functions below (``max_gap``, ``color_runs``, ``first_time_all``,
``last_time_any``, ``in_flight_at``, ``read_log``) work on the report's and the log's
records, and a test on the controller imports them.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import signal
import ssl
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from itertools import pairwise
from pathlib import Path
from typing import Any, TypedDict
from urllib.parse import urlsplit

COLOR_HEADER = "X-Deployment-Color"
USER_AGENT = "ytempire-loadgen/1"
# A request for the API's generate endpoint that passes its validation.
DEFAULT_LONG_BODY = {
    "title": "Zero-downtime check",
    "script": "A request that spans a blue-green deploy.",
    "resolution": "360p",
    "duration": 1,
}
LONG_PIECES = 10  # pieces of a long request's body after its first byte
POLL_SECONDS = 0.05  # how often the main thread looks for a stop file, signal or deadline
MAX_WEIGHT = 1000


class Record(TypedDict):
    """One request: wall-clock start and end, status or error, the color that answered."""

    start: float
    end: float | None  # None: still in flight when the report was written
    status: int | None  # None: no HTTP answer; ``error`` says why
    error: str | None  # the exception's class name: ConnectionRefusedError, TimeoutError, ...
    color: str | None  # the X-Deployment-Color response header, if any
    path: str
    sent_bytes: int  # how much of the body went out (0 for a GET)


# ---------------------------------------------------------------------------------------
# Pure helpers on records (the report's ``long_requests``, the ``--log`` lines).
# ---------------------------------------------------------------------------------------


def is_success(record: Mapping[str, Any]) -> bool:
    """True when the request got a 2xx answer."""
    status = record.get("status")
    return status is not None and 200 <= status <= 299


def percentile(sorted_values: Sequence[float], pct: float) -> float | None:
    """The nearest-rank percentile ``pct`` (0-100] of ascending values; None if empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def latency_summary(records: Iterable[Mapping[str, Any]]) -> dict[str, float | None]:
    """p50, p95, p99 and max of end - start over the requests that got an HTTP answer."""
    values = sorted(r["end"] - r["start"] for r in records if r["status"] is not None)
    return {
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": values[-1] if values else None,
    }


def max_gap(records: Iterable[Mapping[str, Any]]) -> tuple[float, float, float] | None:
    """The longest time without a successful (2xx) answer, as ``(gap, since, until)``.

    The moments compared are the first request's start, the end of every 2xx answer in
    order, and the last request's end: a load that never succeeds reports its whole
    span, and one that stops succeeding reports the time since its last success.
    None when there are no finished requests.
    """
    finished = [r for r in records if r["end"] is not None]
    if not finished:
        return None
    marks = [
        min(r["start"] for r in finished),
        *sorted(r["end"] for r in finished if is_success(r)),
        max(r["end"] for r in finished),
    ]
    since, until = max(pairwise(marks), key=lambda pair: pair[1] - pair[0])
    return until - since, since, until


def _by_end(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted((r for r in records if r["end"] is not None), key=lambda r: r["end"])


def color_counts(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Color -> {count, first_end, last_end} over the answers that carried a color."""
    colors: dict[str, dict[str, Any]] = {}
    for record in _by_end(records):
        color = record["color"]
        if color is None:
            continue
        entry = colors.setdefault(color, {"count": 0, "first_end": record["end"]})
        entry["count"] += 1
        entry["last_end"] = record["end"]
    return colors


def color_runs(records: Iterable[Mapping[str, Any]]) -> list[list[Any]]:
    """Runs of one color in end-time order: ``[[color, first_end, last_end, count], ...]``.

    Answers without a color header (and requests without an answer) are left out, so a
    clean switch from blue to green is exactly two runs.
    """
    runs: list[list[Any]] = []
    for record in _by_end(records):
        color = record["color"]
        if color is None:
            continue
        if runs and runs[-1][0] == color:
            runs[-1][2] = record["end"]
            runs[-1][3] += 1
        else:
            runs.append([color, record["end"], record["end"], 1])
    return runs


def first_time_all(
    records: Iterable[Mapping[str, Any]], color: str, after: float = 0.0
) -> float | None:
    """The earliest end time t >= ``after`` from which every request was answered by ``color``.

    t is the end of a request answered by ``color``, and every request that ended at or
    after t was answered by ``color`` too (any status; an error or an answer without the
    header breaks it). None when the last request to end was not answered by ``color``
    or none ended at or after ``after``.
    """
    moment = None
    for record in reversed(_by_end(records)):
        if record["end"] < after or record["color"] != color:
            break
        moment = record["end"]
    return moment


def last_time_any(records: Iterable[Mapping[str, Any]], color: str) -> float | None:
    """The end time of the last request answered by ``color``; None if none was."""
    ends = [r["end"] for r in records if r["end"] is not None and r["color"] == color]
    return max(ends, default=None)


def in_flight_at(
    long_requests: Iterable[Mapping[str, Any]], moment: float
) -> list[Mapping[str, Any]]:
    """The requests whose [start, end] contains ``moment`` (end None: still running)."""
    return [
        r
        for r in long_requests
        if r["start"] <= moment and (r["end"] is None or moment <= r["end"])
    ]


def read_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The steady requests of a ``--log`` file, one JSON object a line, in end-time order."""
    with open(path, encoding="utf-8") as log:
        return [json.loads(line) for line in log if line.strip()]


def weighted_sequence(weights: Sequence[tuple[str, int]]) -> list[str]:
    """One round of smooth weighted round robin (nginx's): each item ``weight`` times,
    spread out, e.g. a:3, b:1 gives a a b a."""
    current = dict.fromkeys(range(len(weights)), 0)
    total = sum(weight for _, weight in weights)
    sequence = []
    for _ in range(total):
        for index, (_, weight) in enumerate(weights):
            current[index] += weight
        chosen = max(current, key=lambda index: current[index])
        current[chosen] -= total
        sequence.append(weights[chosen][0])
    return sequence


def slow_body(body: bytes, seconds: float, pieces: int = LONG_PIECES) -> list[tuple[float, bytes]]:
    """When to send which part of a body: ``[(offset_seconds, bytes), ...]``.

    The first byte at once, the rest in up to ``pieces`` parts evenly spaced, the last at
    ``seconds``. A one-byte body goes out at ``seconds``, an empty one sends nothing.
    """
    if len(body) <= 1:
        return [(seconds, body)] if body else []
    rest = body[1:]
    count = min(pieces, len(rest))
    size = math.ceil(len(rest) / count)
    parts = [rest[i : i + size] for i in range(0, len(rest), size)]
    return [(0.0, body[:1])] + [
        (seconds * (n + 1) / len(parts), part) for n, part in enumerate(parts)
    ]


# ---------------------------------------------------------------------------------------
# Requests.
# ---------------------------------------------------------------------------------------


@cache
def insecure_tls_context() -> ssl.SSLContext:
    """TLS without certificate checks: the target's certificate is self-signed."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@dataclass(frozen=True)
class Target:
    """Where requests go: scheme, host, port and a path prefix from ``--base-url``."""

    scheme: str
    host: str
    port: int
    prefix: str
    # Sent with every request ("Authorization: Bearer ..." for the API).
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, url: str, headers: Sequence[str] = ()) -> Target:
        """The target of an http:// or https:// URL; ValueError says what is wrong."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http:// or https:// URL with a host")
        if parts.query or parts.fragment:
            raise ValueError(f"{url!r}: a base URL has no query or fragment")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        pairs = []
        for header in headers:
            name, sep, value = header.partition(":")
            if not sep or not name.strip() or any(c in header for c in "\r\n"):
                raise ValueError(f"{header!r} is not a header such as 'Authorization: Bearer x'")
            pairs.append((name.strip(), value.strip()))
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"), tuple(pairs))

    def connection(self, timeout: float) -> http.client.HTTPConnection:
        """A new, not yet connected connection to the target."""
        if self.scheme == "https":
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=timeout, context=insecure_tls_context()
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)


def _send_pieces(
    connection: http.client.HTTPConnection, pieces: Sequence[tuple[float, bytes]]
) -> tuple[int, OSError | None]:
    """Send each piece at its offset from now; the bytes sent and the error that stopped it."""
    began = time.monotonic()
    sent = 0
    for offset, piece in pieces:
        delay = began + offset - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        try:
            connection.send(piece)
        except OSError as exc:
            return sent, exc
        sent += len(piece)
    return sent, None


def exchange(
    target: Target,
    path: str,
    timeout: float,
    body: bytes | None = None,
    pieces: Sequence[tuple[float, bytes]] = (),
) -> Record:
    """One request on a new connection: a GET, or with ``body`` a JSON POST sent as ``pieces``.

    Socket, TLS, timeout and HTTP protocol errors end up in the record, by class name. A
    server that answers before the body is complete (and closes) still has its answer
    recorded.
    """
    start = time.time()
    status: int | None = None
    color: str | None = None
    error: str | None = None
    sent = 0
    connection = target.connection(timeout)
    try:
        connection.putrequest(
            "GET" if body is None else "POST", target.prefix + path, skip_accept_encoding=True
        )
        connection.putheader("Connection", "close")
        connection.putheader("User-Agent", USER_AGENT)
        for name, value in target.headers:
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Type", "application/json")
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders()
        sent, send_error = _send_pieces(connection, pieces)
        try:
            response = connection.getresponse()
        except (OSError, http.client.HTTPException):
            if send_error is not None:
                raise send_error from None
            raise
        response.read()
        status, color = response.status, response.getheader(COLOR_HEADER)
    except (OSError, http.client.HTTPException) as exc:
        error = type(exc).__name__
    finally:
        connection.close()
    return {
        "start": start,
        "end": time.time(),
        "status": status,
        "error": error,
        "color": color,
        "path": path,
        "sent_bytes": sent,
    }


# ---------------------------------------------------------------------------------------
# The run.
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """What the command line asked for, checked."""

    target: Target
    base_url: str
    sequence: tuple[str, ...]  # one round of the steady request mix
    workers: int
    max_requests: int
    max_seconds: float
    rate: float
    timeout: float
    stop_file: Path | None
    long_every: float
    long_seconds: float
    long_path: str
    long_body: bytes
    report: Path
    log: Path | None
    progress_file: Path | None = None


class LoadRun:
    """Steady workers and long requests against one target, until something stops them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.signalled: str | None = None  # set by the signal handler, read by the main loop
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._left = settings.max_requests
        self._next_path = 0
        self._running = 0  # steady requests in flight
        self._steady: list[Record] = []
        self._long: list[Record] = []
        self._deadline = 0.0

    # -- steady load ----------------------------------------------------------------------

    def _take(self) -> str | None:
        """The next path of the mix, or None when the request budget is spent."""
        with self._lock:
            if self._stop.is_set() or self._left <= 0 or time.monotonic() >= self._deadline:
                return None
            self._left -= 1
            self._running += 1
            path = self.settings.sequence[self._next_path % len(self.settings.sequence)]
            self._next_path += 1
            return path

    def _steady_worker(self) -> None:
        interval = 1 / self.settings.rate if self.settings.rate else 0.0
        next_at = time.monotonic()
        while (path := self._take()) is not None:
            record = exchange(self.settings.target, path, self.settings.timeout)
            with self._lock:
                self._steady.append(record)
                self._running -= 1
            if interval:
                next_at = max(next_at + interval, time.monotonic())
                self._stop.wait(max(0.0, next_at - time.monotonic()))

    # -- long requests --------------------------------------------------------------------

    def _long_request(self, record: Record) -> None:
        body = self.settings.long_body
        result = exchange(
            self.settings.target,
            self.settings.long_path,
            self.settings.timeout,
            body=body,
            pieces=slow_body(body, self.settings.long_seconds),
        )
        with self._lock:
            record.update(result)

    def _long_scheduler(self, threads: list[threading.Thread]) -> None:
        began = time.monotonic()
        started = 0
        while not self._stop.is_set():
            record: Record = {
                "start": time.time(),
                "end": None,
                "status": None,
                "error": None,
                "color": None,
                "path": self.settings.long_path,
                "sent_bytes": 0,
            }
            with self._lock:
                self._long.append(record)
            thread = threading.Thread(target=self._long_request, args=(record,), daemon=True)
            thread.start()
            threads.append(thread)
            started += 1
            self._stop.wait(max(0.0, began + started * self.settings.long_every - time.monotonic()))

    # -- the whole run --------------------------------------------------------------------

    def _stop_reason(self, workers: Sequence[threading.Thread]) -> str | None:
        if self.signalled:
            return self.signalled
        if self.settings.stop_file is not None and self.settings.stop_file.exists():
            return "stop-file"
        if time.monotonic() >= self._deadline:
            return "max-seconds"
        if workers and not any(worker.is_alive() for worker in workers):
            return "max-requests"
        return None

    def execute(self) -> tuple[dict[str, Any], list[Record]]:
        """Run until a bound, the stop file or a signal; the report and the steady requests."""
        settings = self.settings
        started = time.time()
        self._deadline = time.monotonic() + settings.max_seconds
        workers = [
            threading.Thread(target=self._steady_worker, name=f"steady-{n}", daemon=True)
            for n in range(settings.workers)
        ]
        for worker in workers:
            worker.start()
        long_threads: list[threading.Thread] = []
        scheduler = None
        if settings.long_every > 0:
            scheduler = threading.Thread(
                target=self._long_scheduler, args=(long_threads,), daemon=True
            )
            scheduler.start()
        progress_at = 0.0
        while (reason := self._stop_reason(workers)) is None:
            if settings.progress_file is not None and time.monotonic() - progress_at >= 1:
                progress_at = time.monotonic()
                with self._lock:
                    done = len(self._steady)
                write_atomically(settings.progress_file, f"{done}\n")
            time.sleep(POLL_SECONDS)
        self._stop.set()
        # Requests in flight finish: each is bounded by the timeout (connect, each send
        # and read) and a long one also by its body's pace. Past that, the report says
        # what was still running.
        give_up = time.monotonic() + 2 * settings.timeout + settings.long_seconds + 1
        if scheduler is not None:
            scheduler.join()
        for thread in (*workers, *long_threads):
            thread.join(max(0.0, give_up - time.monotonic()))
        with self._lock:
            steady = list(self._steady)
            long_requests = [dict(r) for r in self._long]
            unfinished = self._running
        for record in long_requests:
            if record["end"] is None and record["error"] is None:
                record["error"] = "Unfinished"
        report = build_report(settings, steady, long_requests, started, time.time(), reason)
        report["unfinished_requests"] = unfinished
        return report, steady


def build_report(
    settings: Settings,
    steady: Sequence[Mapping[str, Any]],
    long_requests: Sequence[Mapping[str, Any]],
    started: float,
    ended: float,
    stop_reason: str,
) -> dict[str, Any]:
    """The report (its keys are in the module's docstring)."""
    errors = Counter(r["error"] for r in steady if r["status"] is None)
    gap = max_gap(steady)
    return {
        "base_url": settings.base_url,
        "paths": sorted(set(settings.sequence)),
        "workers": settings.workers,
        "started": started,
        "ended": ended,
        "duration_seconds": ended - started,
        "stop_reason": stop_reason,
        "requests": len(steady),
        "ok": sum(1 for r in steady if is_success(r)),
        "by_status": dict(
            sorted(Counter(str(r["status"]) for r in steady if r["status"] is not None).items())
        ),
        "non_2xx": sum(1 for r in steady if r["status"] is not None and not is_success(r)),
        "socket_errors": sum(errors.values()),
        "errors_by_kind": dict(sorted(errors.items())),
        "latency_seconds": latency_summary(steady),
        "max_gap_seconds": gap[0] if gap else None,
        "max_gap_between": list(gap[1:]) if gap else None,
        "by_color": color_counts(steady),
        "color_timeline": color_runs(steady),
        "long_requests": [
            {key: r[key] for key in ("start", "end", "status", "error", "color", "sent_bytes")}
            for r in long_requests
        ],
        "requests_log_file": str(settings.log) if settings.log else None,
    }


def summary_line(report: Mapping[str, Any]) -> str:
    """The report in one line, for a human reading the client's output."""
    gap = report["max_gap_seconds"]
    p99 = report["latency_seconds"]["p99"]
    colors = " -> ".join(run[0] for run in report["color_timeline"]) or "none"
    longs = report["long_requests"]
    long_ok = sum(1 for r in longs if is_success(r))
    return (
        f"loadgen: {report['requests']} requests in {report['duration_seconds']:.1f}s "
        f"({report['ok']} 2xx, {report['non_2xx']} non-2xx, "
        f"{report['socket_errors']} without an answer), "
        f"max gap {'-' if gap is None else f'{gap:.3f}s'}, "
        f"p99 {'-' if p99 is None else f'{p99:.3f}s'}, colors {colors}, "
        f"{len(longs)} long requests ({long_ok} 2xx); stopped by {report['stop_reason']}"
    )


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader never sees half of it."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def write_log(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Every steady request as one JSON line, in end-time order."""
    lines = (
        json.dumps({key: r[key] for key in ("start", "end", "status", "error", "color", "path")})
        + "\n"
        for r in _by_end(records)
    )
    write_atomically(path, "".join(lines))


# ---------------------------------------------------------------------------------------
# The command line.
# ---------------------------------------------------------------------------------------


def _parse_path(value: str) -> tuple[str, int]:
    weight_text, _, path = ("1", "", value) if value.startswith("/") else value.partition(":")
    weight = int(weight_text) if weight_text.isdigit() else 0
    if not 1 <= weight <= MAX_WEIGHT or not path.startswith("/"):
        raise argparse.ArgumentTypeError(
            f"{value!r}: use /path or WEIGHT:/path with WEIGHT from 1 to {MAX_WEIGHT}"
        )
    return path, weight


def _number(
    kind: type[int] | type[float], minimum: float, strict: bool = False
) -> Callable[[str], int | float]:
    """An argparse type: a finite ``kind`` of at least (or, ``strict``, above) ``minimum``."""

    def parse(value: str) -> int | float:
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
        if not math.isfinite(number) or number < minimum or (strict and number == minimum):
            relation = "above" if strict else "at least"
            raise argparse.ArgumentTypeError(f"{value!r}: must be {relation} {minimum}")
        return number

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The command line (see the module's docstring)."""
    parser = argparse.ArgumentParser(
        prog="loadgen.py",
        description="Steady and slow requests against a URL while a deploy happens; "
        "a JSON report at the end.",
    )
    add = parser.add_argument
    add("--base-url", required=True, help="http:// or https:// (certificates are not checked)")
    add(
        "--path",
        dest="paths",
        action="append",
        type=_parse_path,
        metavar="[WEIGHT:]PATH",
        help="a path of the steady mix, repeatable (default /health)",
    )
    add("--workers", type=_number(int, 0), default=4, help="steady threads (default 4)")
    add(
        "--max-requests",
        type=_number(int, 1),
        default=20000,
        help="stop after this many steady requests (default 20000)",
    )
    add(
        "--max-seconds",
        type=_number(float, 0, strict=True),
        default=300.0,
        help="stop after this many seconds (default 300)",
    )
    add("--stop-file", type=Path, help="stop when this file exists")
    add(
        "--header",
        dest="headers",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="a header sent with every request, repeatable",
    )
    add("--rate", type=_number(float, 0), default=0.0, help="per-worker requests/s, 0: no limit")
    add(
        "--timeout",
        type=_number(float, 0, strict=True),
        default=30.0,
        help="seconds for the connect and each send and read of a request (default 30)",
    )
    add(
        "--long-every",
        type=_number(float, 0),
        default=0.0,
        help="start a long request every this many seconds (default 0: none)",
    )
    add(
        "--long-seconds",
        type=_number(float, 0),
        default=6.0,
        help="spread a long request's body over this many seconds (default 6)",
    )
    add("--long-path", default="/api/videos/generate", help="(default /api/videos/generate)")
    body = parser.add_mutually_exclusive_group()
    body.add_argument(
        "--long-body", help="the long requests' JSON body (default: a valid generate request)"
    )
    body.add_argument("--long-body-file", type=Path, help="a file with that JSON body")
    add("--report", type=Path, required=True, help="where the JSON report goes")
    add("--log", type=Path, help="every steady request as a JSON line")
    add(
        "--progress-file", type=Path, help="the steady requests done so far, rewritten every second"
    )
    return parser


def _long_body(parser: argparse.ArgumentParser, args: argparse.Namespace) -> bytes:
    if args.long_body_file is not None:
        try:
            text = args.long_body_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            parser.error(f"--long-body-file {args.long_body_file}: {exc}")
    elif args.long_body is not None:
        text = args.long_body
    else:
        return json.dumps(DEFAULT_LONG_BODY).encode()
    try:
        json.loads(text)
    except ValueError as exc:
        parser.error(f"the long requests' body is not JSON: {exc}")
    return text.encode()


def parse_settings(argv: Sequence[str] | None = None) -> Settings:
    """Settings from the command line; bad arguments exit with status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        target = Target.parse(args.base_url, args.headers)
    except ValueError as exc:
        parser.error(f"--base-url: {exc}")
    if not args.long_path.startswith("/"):
        parser.error(f"--long-path {args.long_path!r}: a path starts with /")
    if args.workers == 0 and args.long_every == 0:
        parser.error("nothing to do: --workers 0 and no --long-every")
    for option, path in (
        ("--report", args.report),
        ("--log", args.log),
        ("--progress-file", args.progress_file),
    ):
        if path is not None and not path.parent.is_dir():
            parser.error(f"{option} {path}: {path.parent} is not a directory")
    return Settings(
        target=target,
        base_url=args.base_url,
        sequence=tuple(weighted_sequence(args.paths or [("/health", 1)])),
        workers=args.workers,
        max_requests=args.max_requests,
        max_seconds=args.max_seconds,
        rate=args.rate,
        timeout=args.timeout,
        stop_file=args.stop_file,
        long_every=args.long_every,
        long_seconds=args.long_seconds,
        long_path=args.long_path,
        long_body=_long_body(parser, args),
        report=args.report,
        log=args.log,
        progress_file=args.progress_file,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the load, write the report (and the log), print the summary."""
    settings = parse_settings(argv)
    run = LoadRun(settings)

    def on_signal(signum: int, _frame: object) -> None:
        # Only a flag: the main loop sees it within POLL_SECONDS (taking a lock here
        # could deadlock with the main thread).
        run.signalled = signal.Signals(signum).name

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    report, steady = run.execute()
    if settings.log is not None:
        write_log(settings.log, steady)
    write_atomically(settings.report, json.dumps(report, indent=2) + "\n")
    print(summary_line(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
