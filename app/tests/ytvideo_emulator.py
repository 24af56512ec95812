"""A local stand-in for the ElevenLabs and OpenAI speech APIs.

It speaks their request shapes (ElevenLabs ``POST /v1/text-to-speech/{voice}``
with ``xi-api-key``; OpenAI ``POST /v1/audio/speech`` with a Bearer token and
``{"model", "voice", "input"}``), checks the key, and answers with real MP3
speech made by espeak-ng and ffmpeg. Tests can make it fail with a status, or
hold a request open until released (to kill a worker mid-job).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def speech_mp3(text: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), text], check=True, capture_output=True)
        return subprocess.run(
            ["ffmpeg", "-v", "error", "-i", str(wav), "-codec:a", "libmp3lame", "-f", "mp3", "-"],
            check=True,
            capture_output=True,
        ).stdout


@dataclass
class EmulatorState:
    elevenlabs_key: str = "el-test-key"
    openai_key: str = "sk-test-key"
    fail_status: int | None = None
    hold: threading.Event | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    received: threading.Event = field(default_factory=threading.Event)

    def reset(self) -> None:
        self.fail_status = None
        self.hold = None
        self.requests.clear()
        self.received.clear()


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  signature of the base
        pass

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        self._reply(status, json.dumps({"detail": message}).encode(), "application/json")

    def do_POST(self) -> None:  # noqa: N802  http.server's naming
        state = self.server.state
        length = int(self.headers.get("content-length", "0"))
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            self._error(400, "body is not JSON")
            return
        path = self.path.split("?", 1)[0]
        record = {"path": path, "query": self.path.partition("?")[2], "body": body}
        record["headers"] = {k.lower(): v for k, v in self.headers.items()}
        state.requests.append(record)
        state.received.set()
        if state.hold is not None:
            state.hold.wait(timeout=300)
        if path.startswith("/v1/text-to-speech/"):
            if self.headers.get("xi-api-key") != state.elevenlabs_key:
                self._error(401, "invalid_api_key")
                return
            text = body.get("text")
        elif path == "/v1/audio/speech":
            if self.headers.get("authorization") != f"Bearer {state.openai_key}":
                self._error(401, "Incorrect API key provided")
                return
            if not body.get("model") or not body.get("voice"):
                self._error(400, "model and voice are required")
                return
            text = body.get("input")
        else:
            self._error(404, f"no route {path}")
            return
        if state.fail_status is not None:
            self._error(state.fail_status, "emulated failure")
            return
        if not isinstance(text, str) or not text.strip():
            self._error(422, "text is required")
            return
        self._reply(200, speech_mp3(text), "audio/mpeg")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: EmulatorState


class SpeechEmulator:
    def __init__(self) -> None:
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.state = EmulatorState()
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def state(self) -> EmulatorState:
        return self.server.state

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        if self.state.hold is not None:
            self.state.hold.set()
        self.server.shutdown()
        self.server.server_close()
