"""A stand-in for Slack's incoming webhook: an HTTP server on the controller
that records the JSON bodies posted to it (the backup's failure notices,
Alertmanager's notifications)."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def webhook_receiver(port: int = 0) -> Iterator[tuple[int, list[dict]]]:
    """Listen on every address (the containers reach the controller through
    their bridge) on `port` (0: any free one); yield (port, bodies)."""
    bodies: list[dict] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802  http.server's name
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("0.0.0.0", port), Hook)  # noqa: S104  the bridge
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], bodies
    finally:
        server.shutdown()
        server.server_close()
