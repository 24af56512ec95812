"""tests/support/loadgen.py, the site scenario's load generator, against real local servers.

Each test starts real HTTP (and one HTTPS) servers on 127.0.0.1 in this process and runs
loadgen.py as the client runs it: a subprocess of its own, here ``python -I -S`` so that
nothing but the standard library can be imported. The servers count what they really
received (connections, request headers, every byte of a slow body, when it arrived), and
the tests hold the report and the log against that. The pure helpers are also tested on
records made up here, where the answer is known exactly.
"""

from __future__ import annotations

import ast
import datetime
import json
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support import loadgen

SCRIPT = Path(loadgen.__file__)
PYTHON = [sys.executable, "-I", "-S"]  # no site-packages: the client has only the stdlib
LONG_BODY = {"title": "Zero-downtime check", "script": "x" * 400, "duration": 1}


class AppServer(ThreadingHTTPServer):
    """A stand-in for nginx and the API: counts what it received, answers with a color.

    GET /ok answers 200, GET /fail 500, POST /generate reads its whole Content-Length body
    (noting when the first and the last byte arrived) and answers 202. ``color(n)`` gives
    the X-Deployment-Color header of the n-th answer (1-based), None for no header.
    """

    daemon_threads = True

    def __init__(self, port: int = 0, color: Callable[[int], str | None] = lambda _: None):
        super().__init__(("127.0.0.1", port), Handler)
        self.color = color
        self.lock = threading.Lock()
        self.connections = 0
        self.requests: list[dict[str, Any]] = []  # path, connection header, color, time
        self.stopped = False  # set by stop(): no handler answers after it
        self.bodies: list[dict[str, Any]] = []  # bytes, first_byte_at, last_byte_at
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def start(self) -> AppServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        # Handler threads of keep-alive connections outlive shutdown(): without the
        # flag one answered after stop() returned, inside the outage a test measures.
        with self.lock:
            self.stopped = True
        self.shutdown()
        self.server_close()

    def served(self) -> int:
        with self.lock:
            return len(self.requests)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # as nginx: keep-alive unless the client says close
    server: AppServer

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def answer(self, status: int) -> None:
        body = b"{}"
        with self.server.lock:
            if self.server.stopped:  # the connection drops, as a killed server's would
                self.close_connection = True
                return
            color = self.server.color(len(self.server.requests) + 1)
            self.server.requests.append(
                {
                    "path": self.path,
                    "connection": self.headers.get("Connection"),
                    "authorization": self.headers.get("Authorization"),
                    "color": color,
                    "at": time.time(),
                }
            )
        self.send_response(status)
        if color is not None:
            self.send_header("X-Deployment-Color", color)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802  http.server's name
        self.answer(500 if self.path == "/fail" else 200)

    def do_POST(self) -> None:  # noqa: N802  http.server's name
        length = int(self.headers["Content-Length"])
        first = self.rfile.read(1)
        first_at = time.time()
        rest = self.rfile.read(length - 1)
        with self.server.lock:
            self.server.bodies.append(
                {"bytes": first + rest, "first_byte_at": first_at, "last_byte_at": time.time()}
            )
        self.answer(202)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  the base's name
        """Quiet: the tests look at what the server recorded."""


@pytest.fixture
def servers() -> Iterator[Callable[..., AppServer]]:
    """Start AppServers; every one still running is stopped at the end of the test."""
    started: list[AppServer] = []

    def start(**kwargs: Any) -> AppServer:
        server = AppServer(**kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        if server.thread.is_alive():
            server.stop()


def loadgen_command(tmp_path: Path, base_url: str, *args: str) -> list[str]:
    return [
        *PYTHON,
        str(SCRIPT),
        "--base-url",
        base_url,
        "--report",
        str(tmp_path / "report.json"),
        "--log",
        str(tmp_path / "requests.jsonl"),
        *args,
    ]


def run_loadgen(tmp_path: Path, base_url: str, *args: str) -> dict[str, Any]:
    """Run loadgen.py to its end; its report (it must exit 0 and print its summary)."""
    done = subprocess.run(
        loadgen_command(tmp_path, base_url, *args),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("loadgen: "), done.stdout
    return json.loads((tmp_path / "report.json").read_text())


def start_loadgen(tmp_path: Path, base_url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        loadgen_command(tmp_path, base_url, *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str], tmp_path: Path) -> dict[str, Any]:
    """Wait for a background loadgen.py; its report."""
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert stdout.startswith("loadgen: "), stdout
    return json.loads((tmp_path / "report.json").read_text())


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def url(server: AppServer, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{server.port}"


# -- the module itself ---------------------------------------------------------------------


def test_imports_nothing_but_the_standard_library():
    tree = ast.parse(SCRIPT.read_text(encoding="utf-8"))
    imported = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= sys.stdlib_module_names | {"__future__"}, imported
    assert imported >= {"argparse", "http", "ssl", "threading"}


@pytest.mark.parametrize(
    "bad",
    [
        ["--base-url", "ftp://127.0.0.1/"],
        ["--base-url", "http://"],
        ["--workers", "-1"],
        ["--workers", "0"],  # and no long requests: nothing to do
        ["--max-seconds", "0"],
        ["--max-requests", "0"],
        ["--path", "health"],
        ["--path", "0:/health"],
        ["--long-body", "{not json"],
        ["--rate", "fast"],
        ["--report", "/nonexistent-directory/report.json"],
        ["--header", "no colon"],
        ["--header", "X-Bad: a\r\nInjected: b"],
    ],
)
def test_bad_arguments_exit_2_and_write_nothing(tmp_path: Path, bad: list[str]):
    done = subprocess.run(
        [*loadgen_command(tmp_path, "http://127.0.0.1:9"), *bad],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "error:" in done.stderr
    assert not (tmp_path / "report.json").exists()


# -- steady load ---------------------------------------------------------------------------


def test_counts_statuses_and_one_connection_per_request(tmp_path: Path, servers):
    server = servers()
    report = run_loadgen(
        tmp_path, url(server), "--workers", "3", "--max-requests", "40",
        "--path", "3:/ok", "--path", "/fail",
    )  # fmt: skip
    assert report["stop_reason"] == "max-requests"
    assert report["requests"] == 40 == server.served()
    assert report["by_status"] == {"200": 30, "500": 10}
    assert report["ok"] == 30
    assert report["non_2xx"] == 10
    assert report["socket_errors"] == 0
    assert report["errors_by_kind"] == {}
    # A new connection for every request, each saying so.
    assert server.connections == 40
    assert {r["connection"] for r in server.requests} == {"close"}
    assert sorted(r["path"] for r in server.requests) == ["/fail"] * 10 + ["/ok"] * 30
    latency = report["latency_seconds"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"] < 5
    assert report["started"] <= report["ended"]
    assert report["duration_seconds"] == pytest.approx(report["ended"] - report["started"])
    log = loadgen.read_log(report["requests_log_file"])
    assert len(log) == 40
    assert set(log[0]) == {"start", "end", "status", "error", "color", "path"}
    assert [r["end"] for r in log] == sorted(r["end"] for r in log)
    assert all(report["started"] <= r["start"] <= r["end"] <= report["ended"] for r in log)
    assert report["by_color"] == {}
    assert report["color_timeline"] == []


def test_headers_go_with_every_request(tmp_path: Path, servers):
    server = servers()
    run_loadgen(
        tmp_path, url(server), "--workers", "2", "--max-requests", "6",
        "--header", "Authorization: Bearer token-1",
    )  # fmt: skip
    assert [r["authorization"] for r in server.requests] == ["Bearer token-1"] * 6


def test_https_without_certificate_checks(tmp_path: Path, servers):
    x509 = pytest.importorskip("cryptography.x509", reason="makes the throwaway certificate")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "loadgen-test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server = AppServer(color=lambda _: "blue")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.start()
    try:
        report = run_loadgen(
            tmp_path, url(server, "https"), "--workers", "2", "--max-requests", "10",
            "--path", "/ok",
        )  # fmt: skip
        plain = run_loadgen(tmp_path, url(server), "--max-requests", "2", "--timeout", "2")
    finally:
        server.stop()
    assert report["by_status"] == {"200": 10}
    assert report["by_color"]["blue"]["count"] == 10
    # The same server refuses plain HTTP: the answers above really came over TLS.
    assert plain["ok"] == 0
    assert plain["socket_errors"] + plain["non_2xx"] == 2


def test_max_seconds_bounds_the_run(tmp_path: Path, servers):
    server = servers()
    report = run_loadgen(
        tmp_path, url(server), "--workers", "2", "--rate", "20", "--max-seconds", "1.5",
        "--path", "/ok",
    )  # fmt: skip
    assert report["stop_reason"] == "max-seconds"
    assert 1.5 <= report["duration_seconds"] < 4
    # 2 workers at 20/s for 1.5 s: about 60 (the rate holds, the bound holds).
    assert 30 <= report["requests"] <= 64
    assert report["requests"] == server.served()
    log = loadgen.read_log(tmp_path / "requests.jsonl")
    assert max(r["start"] for r in log) <= report["started"] + 1.5 + 0.1


def test_stop_file_stops_the_run_and_it_reports(tmp_path: Path, servers):
    server = servers()
    stop_file = tmp_path / "stop"
    process = start_loadgen(
        tmp_path, url(server), "--workers", "2", "--rate", "50", "--max-seconds", "30",
        "--path", "/ok", "--stop-file", str(stop_file),
    )  # fmt: skip
    wait_until(lambda: server.served() >= 10)
    assert not (tmp_path / "report.json").exists()
    stopped_at = time.time()
    stop_file.touch()
    report = finish(process, tmp_path)
    assert report["stop_reason"] == "stop-file"
    assert report["ended"] - stopped_at < 2
    assert report["requests"] == server.served() >= 10


def test_progress_file_counts_the_requests_while_it_runs(tmp_path: Path, servers):
    server = servers()
    progress = tmp_path / "progress"
    stop_file = tmp_path / "stop"
    process = start_loadgen(
        tmp_path, url(server), "--workers", "2", "--rate", "50", "--max-seconds", "30",
        "--path", "/ok", "--stop-file", str(stop_file), "--progress-file", str(progress),
    )  # fmt: skip
    wait_until(lambda: progress.exists() and int(progress.read_text()) >= 20)
    seen = int(progress.read_text())
    assert not (tmp_path / "report.json").exists(), "the run is still going"
    stop_file.touch()
    report = finish(process, tmp_path)
    assert 20 <= seen <= report["requests"]


def test_sigterm_stops_the_run_and_it_reports(tmp_path: Path, servers):
    server = servers()
    process = start_loadgen(
        tmp_path, url(server), "--workers", "2", "--rate", "50", "--max-seconds", "30",
        "--path", "/ok",
    )  # fmt: skip
    wait_until(lambda: server.served() >= 10)
    process.send_signal(signal.SIGTERM)
    report = finish(process, tmp_path)
    assert report["stop_reason"] == "SIGTERM"
    assert report["duration_seconds"] < 10
    assert report["requests"] == server.served() >= 10


def test_an_outage_shows_as_socket_errors_and_a_gap(tmp_path: Path, servers):
    server = servers()
    port = server.port
    process = start_loadgen(
        tmp_path, url(server), "--workers", "2", "--rate", "50", "--max-seconds", "30",
        "--timeout", "2", "--path", "/ok", "--stop-file", str(tmp_path / "stop"),
    )  # fmt: skip
    wait_until(lambda: server.served() >= 20)
    server.stop()
    down_at = time.time()
    time.sleep(1.5)
    again = servers(port=port)
    up_at = time.time()
    wait_until(lambda: again.served() >= 20)
    (tmp_path / "stop").touch()
    report = finish(process, tmp_path)

    assert report["by_status"] == {"200": server.served() + again.served()}
    assert report["socket_errors"] > 0
    assert report["errors_by_kind"].get("ConnectionRefusedError", 0) > 0
    assert report["requests"] == report["ok"] + report["socket_errors"]
    assert report["max_gap_seconds"] >= up_at - down_at >= 1.5
    assert report["max_gap_seconds"] < up_at - down_at + 1
    since, until = report["max_gap_between"]
    assert until >= up_at
    log = loadgen.read_log(tmp_path / "requests.jsonl")
    # The gap opens with the last answer before the outage: a request the client sent
    # before the server stopped (its end, on the client's clock, may come after).
    (last,) = [r for r in log if r["status"] == 200 and r["end"] == since]
    assert last["start"] <= down_at
    failed = [r for r in log if r["status"] is None]
    assert all(since <= r["end"] <= until for r in failed)


def test_a_load_that_never_succeeds_reports_its_whole_span(tmp_path: Path, servers):
    server = servers()
    port = server.port
    server.stop()  # nothing listens on the port now
    report = run_loadgen(
        tmp_path, f"http://127.0.0.1:{port}", "--workers", "2", "--rate", "20",
        "--max-seconds", "1",
    )  # fmt: skip
    assert report["requests"] > 0
    assert report["ok"] == 0
    assert report["by_status"] == {}
    assert report["errors_by_kind"] == {"ConnectionRefusedError": report["requests"]}
    assert report["max_gap_seconds"] >= 0.9
    assert report["max_gap_seconds"] <= report["duration_seconds"]
    assert report["latency_seconds"]["p50"] is None


# -- colors --------------------------------------------------------------------------------


def test_a_switch_from_blue_to_green_is_found(tmp_path: Path, servers):
    server = servers(color=lambda n: "blue" if n <= 20 else "green")
    report = run_loadgen(
        tmp_path, url(server), "--workers", "1", "--max-requests", "40", "--path", "/ok"
    )
    blue, green = report["by_color"]["blue"], report["by_color"]["green"]
    assert blue["count"] == 20
    assert green["count"] == 20
    timeline = report["color_timeline"]
    assert [(run[0], run[3]) for run in timeline] == [("blue", 20), ("green", 20)]
    assert timeline[0][1:3] == [blue["first_end"], blue["last_end"]]
    assert timeline[1][1:3] == [green["first_end"], green["last_end"]]

    log = loadgen.read_log(report["requests_log_file"])
    switched = loadgen.first_time_all(log, "green")
    # The client saw green from the end of the 21st request, which the server answered
    # green after it had answered blue for the last time.
    assert switched == green["first_end"] == log[20]["end"]
    first_green_served = server.requests[20]["at"]
    assert server.requests[19]["color"] == "blue"
    assert switched >= first_green_served > server.requests[19]["at"]
    assert loadgen.last_time_any(log, "blue") == blue["last_end"] < switched
    assert loadgen.first_time_all(log, "blue") is None
    assert loadgen.first_time_all(log, "green", after=log[30]["end"]) == log[30]["end"]


# -- long requests -------------------------------------------------------------------------


def test_long_requests_are_slow_complete_and_overlap(tmp_path: Path, servers):
    server = servers(color=lambda _: "blue")
    body = json.dumps(LONG_BODY).encode()
    (tmp_path / "body.json").write_bytes(body)
    report = run_loadgen(
        tmp_path, url(server), "--workers", "1", "--rate", "20", "--path", "/ok",
        "--max-seconds", "1", "--long-every", "0.4", "--long-seconds", "1.2",
        "--long-path", "/generate", "--long-body-file", str(tmp_path / "body.json"),
    )  # fmt: skip
    longs = report["long_requests"]
    assert len(longs) == 3  # at 0, 0.4 and 0.8 s
    for record in longs:
        assert record["status"] == 202
        assert record["error"] is None
        assert record["color"] == "blue"
        assert record["sent_bytes"] == len(body)
        assert record["end"] - record["start"] >= 1.2
    # The server read every body whole, and slowly: its last byte over a second after
    # its first.
    assert len(server.bodies) == 3
    for received in server.bodies:
        assert received["bytes"] == body
        assert received["last_byte_at"] - received["first_byte_at"] >= 1.1
    # They ran side by side, and the steady load went on meanwhile.
    overlap = longs[2]["start"] + 0.05
    assert loadgen.in_flight_at(longs, overlap) == longs
    assert loadgen.in_flight_at(longs, longs[0]["start"] - 0.01) == []
    assert report["ok"] >= 10
    assert report["unfinished_requests"] == 0


def test_the_default_long_body_is_json_sent_whole(tmp_path: Path, servers):
    server = servers()
    report = run_loadgen(
        tmp_path, url(server), "--workers", "0", "--max-seconds", "0.2",
        "--long-every", "10", "--long-seconds", "0.3", "--long-path", "/generate",
    )  # fmt: skip
    assert report["requests"] == 0
    assert report["max_gap_seconds"] is None
    assert [r["status"] for r in report["long_requests"]] == [202]
    assert json.loads(server.bodies[0]["bytes"]) == loadgen.DEFAULT_LONG_BODY


# -- the pure helpers, on made-up records ---------------------------------------------------


def record(end: float, color: str | None, status: int | None = 200) -> dict[str, Any]:
    return {"start": end - 0.5, "end": end, "status": status, "error": None, "color": color}


def test_first_time_all_needs_every_later_answer_in_the_color():
    records = [
        record(1, "blue"),
        record(2, "green"),
        record(3, "blue"),  # a straggler: green is not alone before 4
        record(5, "green"),
        record(4, "green"),
        record(6, "green", 500),  # a green answer all the same
    ]
    assert loadgen.first_time_all(records, "green") == 4
    assert loadgen.first_time_all(records, "green", after=4.5) == 5
    assert loadgen.first_time_all(records, "green", after=7) is None
    assert loadgen.first_time_all(records, "blue") is None
    assert loadgen.first_time_all([*records, record(7, None, None)], "green") is None
    assert loadgen.first_time_all([], "green") is None
    assert loadgen.last_time_any(records, "blue") == 3
    assert loadgen.color_runs(records) == [
        ["blue", 1, 1, 1],
        ["green", 2, 2, 1],
        ["blue", 3, 3, 1],
        ["green", 4, 6, 3],
    ]


def test_in_flight_at_includes_both_ends_and_the_unfinished():
    longs = [
        {"start": 0.0, "end": 6.0},
        {"start": 3.0, "end": 9.0},
        {"start": 7.0, "end": None},
    ]
    assert loadgen.in_flight_at(longs, 3.0) == longs[:2]
    assert loadgen.in_flight_at(longs, 6.5) == [longs[1]]
    assert loadgen.in_flight_at(longs, 100.0) == [longs[2]]
    assert loadgen.in_flight_at(longs, -1.0) == []


def test_max_gap_counts_from_the_first_start_to_the_last_end():
    assert loadgen.max_gap([]) is None
    never = [record(1, None, None), record(3, None, 502)]
    assert loadgen.max_gap(never) == (2.5, 0.5, 3)
    outage = [record(1, None), record(2, None, None), record(4, None), record(4.5, None)]
    assert loadgen.max_gap(outage) == (3, 1, 4)
    ends_down = [record(1, None), record(5, None, None)]
    assert loadgen.max_gap(ends_down) == (4, 1, 5)


def test_weighted_mix_and_slow_body_schedule():
    assert loadgen.weighted_sequence([("/a", 3), ("/b", 1)]) == ["/a", "/a", "/b", "/a"]
    assert loadgen.weighted_sequence([("/a", 1), ("/b", 1)]) == ["/a", "/b"]
    body = bytes(range(101))
    pieces = loadgen.slow_body(body, 6.0)
    assert b"".join(piece for _, piece in pieces) == body
    assert pieces[0] == (0.0, body[:1])
    assert len(pieces) == 11
    assert pieces[-1][0] == 6.0
    assert [offset for offset, _ in pieces] == sorted(offset for offset, _ in pieces)
    assert loadgen.slow_body(b"{", 2.0) == [(2.0, b"{")]
