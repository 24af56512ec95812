"""A stand-in for one of the stack's upstreams behind nginx (the API's colors, the
frontend, n8n): it answers every request with JSON naming itself, the method, the
path, the headers it received and the size of the body it read. A path ending in
/login-fail is answered 401, as n8n's login and the API's JWT check answer a
wrong password or token.

    python3 nginx_upstream.py NAME PORT
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    name = "unnamed"

    def _read_body(self) -> int:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            received = 0
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return received
                received += len(self.rfile.read(size))
                self.rfile.readline()
        remaining = int(self.headers.get("Content-Length") or 0)
        received = 0
        while remaining:
            chunk = self.rfile.read(min(remaining, 1 << 16))
            if not chunk:
                break
            received += len(chunk)
            remaining -= len(chunk)
        return received

    def _answer(self) -> None:
        body = json.dumps(
            {
                "upstream": self.name,
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "received": self._read_body(),
            }
        ).encode()
        self.send_response(401 if self.path.split("?")[0].endswith("/login-fail") else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = _answer  # noqa: N815  http.server's naming

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002  the base's signature
        sys.stderr.write(f"{self.name}: {format % args}\n")


def main() -> None:
    name, port = sys.argv[1], int(sys.argv[2])
    Handler.name = name
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
