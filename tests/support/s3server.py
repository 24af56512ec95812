"""A real S3-protocol server for tests, and a proxy in front of it that breaks on request.

``MotoServer`` runs moto in server mode (``python -m moto.server``, the
``moto[server]`` of requirements-dev.txt) as a subprocess on a given host and
port and waits until it answers. ``FaultProxy`` is an HTTP reverse proxy
(standard library, one thread per connection) that forwards each request and
its answer byte for byte, except the requests that a fault rule claims: those
get an S3 ``500 InternalError`` or a stall longer than the client's read
timeout (then the connection is closed, the request never reaches moto).

From pytest here::

    with MotoServer(host="127.0.0.1") as s3, FaultProxy(s3.port) as proxy:
        client = boto3.client("s3", endpoint_url=proxy.endpoint_url, ...)
        proxy.fail_next(2, query="partNumber")        # the next 2 part uploads: 500
        proxy.fail_next(1, method="PUT", after=3)     # the 4th PUT from now: 500
        proxy.stall_next(1, seconds=3, method="GET")  # the next GET: no answer for 3 s

From the Molecule site scenario, whose containers reach this controller over
the Docker bridge: bind to ``0.0.0.0`` (or the bridge's gateway) and give the
containers ``advertise_host``, the address they see this controller at::

    MotoServer(host="0.0.0.0", port=5900, advertise_host="172.17.0.1").start()
    FaultProxy(5900, host="0.0.0.0", advertise_host="172.17.0.1").start()

``endpoint_url`` is then what to give the containers; ``python`` runs moto from
another interpreter than this one; ``reset()`` forgets every bucket.

moto keeps every bucket in memory and takes any credentials; it does not check
Content-MD5, so the tests check ETags themselves.
"""

from __future__ import annotations

import contextlib
import os
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

__all__ = ["FaultProxy", "FaultRule", "MotoServer", "free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _client_host(host: str) -> str:
    """The address to reach a server bound to ``host`` from this machine."""
    return "127.0.0.1" if host in ("", "0.0.0.0") else host  # noqa: S104  a bind address


class MotoServer:
    """moto's S3 in server mode, a subprocess on ``host``:``port`` (0: a free port)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        advertise_host: str | None = None,
        start_timeout: float = 30.0,
        python: str | None = None,
    ) -> None:
        self.host = host
        # The interpreter with moto[server] (this one by default): the clients under
        # test may run elsewhere, under other libraries (the servers' boto3 1.20).
        self.python = python or sys.executable
        self.port = port or free_port(_client_host(host))
        self.advertise_host = advertise_host or _client_host(host)
        self.start_timeout = start_timeout
        self.process: subprocess.Popen | None = None
        self._log = None

    @property
    def endpoint_url(self) -> str:
        """What a client (here, or a container with ``advertise_host``) connects to."""
        return f"http://{self.advertise_host}:{self.port}"

    @property
    def local_url(self) -> str:
        return f"http://{_client_host(self.host)}:{self.port}"

    def start(self) -> MotoServer:
        self._log = tempfile.NamedTemporaryFile(prefix="moto-server-", suffix=".log", delete=False)  # noqa: SIM115  kept open for the subprocess' life
        env = {**os.environ, "MOTO_PORT": str(self.port)}
        self.process = subprocess.Popen(
            [self.python, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"moto's server exited with {self.process.returncode} on "
                    f"{self.host}:{self.port} (is moto[server] installed, the port free?):\n"
                    f"{self.log()}"
                )
            try:
                with urllib.request.urlopen(f"{self.local_url}/moto-api/", timeout=2) as answer:  # noqa: S310  our own http server
                    if answer.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"moto's server did not answer on {self.local_url} within "
                    f"{self.start_timeout:g} s:\n{self.log()}"
                )
            time.sleep(0.1)

    def log(self) -> str:
        """What the server printed so far (its request log and errors)."""
        if self._log is None:
            return ""
        with open(self._log.name, encoding="utf-8", errors="replace") as handle:
            return handle.read()[-4000:]

    def reset(self) -> None:
        """Forget every bucket (moto's reset API)."""
        url = f"{self.local_url}/moto-api/reset"
        request = urllib.request.Request(url, method="POST")  # noqa: S310  our own http server
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310  as above
            pass

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None
        if self._log is not None:
            self._log.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._log.name)
            self._log = None

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# --- the fault-injecting proxy --------------------------------------------------


@dataclass
class FaultRule:
    """Claims ``count`` requests that match, after letting ``after`` matching ones pass.

    A request matches when its method is ``method`` (None: any), its query has
    the parameter ``query`` (``uploadId``, ``partNumber``; None: any) and its
    path contains ``path`` (None: any).
    """

    action: str  # "fail" or "stall"
    count: int
    method: str | None = None
    query: str | None = None
    path: str | None = None
    after: int = 0
    status: int = 500
    seconds: float = 0.0
    hits: int = 0

    def matches(self, method: str, target: str) -> bool:
        parts = urlsplit(target)
        if self.method and method.upper() != self.method.upper():
            return False
        if self.query and self.query not in parse_qs(parts.query, keep_blank_values=True):
            return False
        return not (self.path and self.path not in parts.path)


@dataclass
class _Request:
    method: str
    target: str
    head: bytes  # request line and headers, as received
    body: bytes  # as received (chunked framing included)
    close: bool
    expect_continue: bool
    headers: dict[str, str] = field(default_factory=dict)


def _read_head(stream) -> tuple[bytes, list[bytes]] | None:
    """The raw start line and header block, and the lines; None at a clean EOF."""
    lines = []
    while True:
        line = stream.readline(65537)
        if not line:
            if lines:
                raise ConnectionError("the peer closed the connection inside a header block")
            return None
        if not lines and line in (b"\r\n", b"\n"):
            continue  # stray CRLF between requests
        lines.append(line)
        if line in (b"\r\n", b"\n"):
            return b"".join(lines), lines


def _headers(lines: list[bytes]) -> dict[str, str]:
    found = {}
    for line in lines[1:]:
        name, sep, value = line.decode("latin-1").partition(":")
        if sep:
            found[name.strip().lower()] = value.strip()
    return found


def _read_body(stream, headers: dict[str, str], until_close: bool) -> bytes:
    """The body as it was framed: Content-Length, chunked (raw), or up to EOF."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raw = []
        while True:
            size_line = stream.readline(65537)
            raw.append(size_line)
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, then the blank line
                    trailer = stream.readline(65537)
                    raw.append(trailer)
                    if trailer in (b"\r\n", b"\n", b""):
                        return b"".join(raw)
            raw.append(_read_exact(stream, size + 2))
    if "content-length" in headers:
        return _read_exact(stream, int(headers["content-length"]))
    return stream.read() if until_close else b""


def _read_exact(stream, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise ConnectionError(f"the peer closed the connection after {len(data)} of {size} bytes")
    return data


def _error_body(status: int, target: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>InternalError</Code><Message>fault injected by the test proxy "
        f"(HTTP {status})</Message><Resource>{target}</Resource>"
        "<RequestId>FAULTPROXY</RequestId></Error>"
    ).encode()


class FaultProxy:
    """A reverse proxy to ``upstream_host``:``upstream_port`` listening on ``host``:``port``.

    Every request is forwarded byte for byte on a new upstream connection, and
    its answer sent back byte for byte; one exception: to ``Expect:
    100-continue`` the proxy itself answers ``100 Continue`` (so that it has the
    whole request before it decides), and drops moto's own interim answer.
    ``requests`` records (method, target, outcome) of each request.
    """

    def __init__(
        self,
        upstream_port: int,
        upstream_host: str = "127.0.0.1",
        host: str = "127.0.0.1",
        port: int = 0,
        advertise_host: str | None = None,
    ) -> None:
        self.upstream = (_client_host(upstream_host), upstream_port)
        self.host = host
        self.port = port
        self.advertise_host = advertise_host
        self.requests: list[tuple[str, str, str]] = []
        self._rules: list[FaultRule] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: socketserver.ThreadingTCPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.advertise_host or _client_host(self.host)}:{self.port}"

    # --- faults ---

    def fail_next(
        self,
        count: int,
        method: str | None = None,
        query: str | None = None,
        path: str | None = None,
        after: int = 0,
        status: int = 500,
    ) -> FaultRule:
        """Answer the next ``count`` matching requests (after ``after`` more) with ``status``."""
        return self._add(FaultRule("fail", count, method, query, path, after, status=status))

    def stall_next(
        self,
        count: int,
        seconds: float,
        method: str | None = None,
        query: str | None = None,
        path: str | None = None,
        after: int = 0,
    ) -> FaultRule:
        """Hold the next ``count`` matching requests ``seconds`` unanswered, then hang up."""
        return self._add(FaultRule("stall", count, method, query, path, after, seconds=seconds))

    def clear(self) -> None:
        """No more faults; the record of requests stays."""
        with self._lock:
            self._rules.clear()

    def _add(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def _claim(self, method: str, target: str) -> FaultRule | None:
        """The rule that claims this request, counting it against every rule it matches."""
        with self._lock:
            claimed = None
            for rule in self._rules:
                if rule.hits >= rule.after + rule.count or not rule.matches(method, target):
                    continue
                rule.hits += 1
                if claimed is None and rule.hits > rule.after:
                    claimed = rule
            return claimed

    def injected(self) -> int:
        """How many requests got a fault so far."""
        with self._lock:
            return sum(1 for *_, outcome in self.requests if outcome != "forwarded")

    # --- life ---

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                with contextlib.suppress(ConnectionError, OSError):
                    while proxy._serve_one(self.rfile, self.wfile):
                        pass

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self._server = Server((self.host, self.port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fault-proxy", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes the stalled requests
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- one request ---

    def _serve_one(self, rfile, wfile) -> bool:
        """Read, judge and answer one request; whether the connection stays open."""
        read = _read_head(rfile)
        if read is None:
            return False
        head, lines = read
        start = lines[0].decode("latin-1").split()
        if len(start) < 3:
            return False
        method, target, version = start[0], start[1], start[2]
        headers = _headers(lines)
        if headers.get("expect", "").lower() == "100-continue":
            wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            wfile.flush()
        body = _read_body(rfile, headers, until_close=False)
        close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
        rule = self._claim(method, target)
        if rule is not None and rule.action == "stall":
            with self._lock:
                self.requests.append((method, target, "stalled"))
            self._stopping.wait(rule.seconds)
            return False  # hang up without an answer; moto never saw it
        if rule is not None:
            with self._lock:  # recorded before the answer, which the client may act on
                self.requests.append((method, target, f"failed {rule.status}"))
            payload = _error_body(rule.status, target)
            wfile.write(
                f"HTTP/1.1 {rule.status} Injected Fault\r\n"
                "Content-Type: application/xml\r\n"
                f"Content-Length: {len(payload)}\r\n"
                f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n".encode()
                + (b"" if method == "HEAD" else payload)
            )
            wfile.flush()
            return not close
        with self._lock:
            self.requests.append((method, target, "forwarded"))
        keep = self._forward(method, head + body, wfile)
        return keep and not close

    def _forward(self, method: str, raw: bytes, wfile) -> bool:
        """Send the request upstream on a new connection and its answer back; keep-alive?"""
        with socket.create_connection(self.upstream, timeout=60) as upstream:
            upstream.sendall(raw)
            stream = upstream.makefile("rb")
            while True:
                read = _read_head(stream)
                if read is None:
                    raise ConnectionError("moto closed the connection without an answer")
                head, lines = read
                status = int(lines[0].split()[1])
                if 100 <= status < 200:
                    continue  # moto's 100 Continue: the client had ours
                break
            headers = _headers(lines)
            no_body = method == "HEAD" or status in (204, 304)
            framed = "content-length" in headers or "chunked" in headers.get(
                "transfer-encoding", ""
            )
            body = b"" if no_body else _read_body(stream, headers, until_close=True)
            wfile.write(head + body)
            wfile.flush()
            closing = headers.get("connection", "").lower() == "close"
            return (no_body or framed) and not closing
