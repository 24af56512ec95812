"""A local stand-in for the ElevenLabs and OpenAI speech APIs.

It speaks their request shapes (ElevenLabs ``POST /v1/text-to-speech/{voice}``
with ``xi-api-key``; OpenAI ``POST /v1/audio/speech`` with a Bearer token and
``{"model", "voice", "input"}``), checks the key, refuses text over the
API's per-request limit with 400 as the real ones do, and answers with real
MP3 speech made by espeak-ng and ffmpeg. Tests can make it fail with a status
(every request, or the next few with headers such as ``Retry-After``), or hold
a request open until released (to kill a worker mid-job). Each request is
recorded with the monotonic time it arrived and the seconds of speech sent back.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import threading
import time
import wave
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

# Per-request input limits of the real APIs: OpenAI's speech "input" takes at most
# 4096 characters; ElevenLabs' depends on the model (help.elevenlabs.io article
# 13298164480913), 5,000 for one not listed here.
OPENAI_MAX_CHARS = 4096
ELEVENLABS_MAX_CHARS = {
    "eleven_multilingual_v2": 10_000,
    "eleven_flash_v2_5": 40_000,
    "eleven_turbo_v2_5": 40_000,
}
ELEVENLABS_DEFAULT_MAX_CHARS = 5_000


def speech_mp3(text: str) -> tuple[bytes, float]:
    """MP3 speech of ``text`` and the seconds of speech in it."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        text_file = Path(tmp) / "speech.txt"  # long texts do not fit on a command line
        text_file.write_text(text, encoding="utf-8")
        subprocess.run(
            ["espeak-ng", "-w", str(wav), "-f", str(text_file)], check=True, capture_output=True
        )
        with wave.open(str(wav)) as w:
            seconds = w.getnframes() / w.getframerate()
        mp3 = subprocess.run(
            ["ffmpeg", "-v", "error", "-i", str(wav), "-codec:a", "libmp3lame", "-f", "mp3", "-"],
            check=True,
            capture_output=True,
        ).stdout
        return mp3, seconds


@dataclass
class EmulatorState:
    elevenlabs_key: str = "el-test-key"
    openai_key: str = "sk-test-key"
    fail_status: int | None = None
    # Answers for the next requests, in order, before any normal one: (status, headers).
    next_failures: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    hold: threading.Event | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    received: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(self, status: int, headers: dict[str, str] | None = None) -> None:
        """Answer the next request not yet scripted with ``status`` (then as normal)."""
        with self.lock:
            self.next_failures.append((status, headers or {}))

    def take_failure(self) -> tuple[int, dict[str, str]] | None:
        with self.lock:
            return self.next_failures.pop(0) if self.next_failures else None

    def reset(self) -> None:
        self.fail_status = None
        self.next_failures.clear()
        self.hold = None
        self.requests.clear()
        self.received.clear()


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  signature of the base
        pass

    def _reply(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps({"detail": message}).encode()
        self._reply(status, body, "application/json", headers)

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
        record["at"] = time.monotonic()
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
            limit = ELEVENLABS_MAX_CHARS.get(body.get("model_id"), ELEVENLABS_DEFAULT_MAX_CHARS)
        elif path == "/v1/audio/speech":
            if self.headers.get("authorization") != f"Bearer {state.openai_key}":
                self._error(401, "Incorrect API key provided")
                return
            if not body.get("model") or not body.get("voice"):
                self._error(400, "model and voice are required")
                return
            text = body.get("input")
            limit = OPENAI_MAX_CHARS
        else:
            self._error(404, f"no route {path}")
            return
        scripted = state.take_failure()
        if scripted is not None:
            self._error(scripted[0], "emulated failure", scripted[1])
            return
        if state.fail_status is not None:
            self._error(state.fail_status, "emulated failure")
            return
        if not isinstance(text, str) or not text.strip():
            self._error(422, "text is required")
            return
        if len(text) > limit:
            self._too_long(path, len(text), limit)
            return
        mp3, seconds = speech_mp3(text)
        record["audio_seconds"] = seconds
        self._reply(200, mp3, "audio/mpeg")

    def _too_long(self, path: str, length: int, limit: int) -> None:
        """400 in the shape each API uses for an over-long input."""
        if path == "/v1/audio/speech":
            message = f"String should have at most {limit} characters (got {length})"
            error = {"message": message, "type": "invalid_request_error", "param": "input"}
            self._reply(400, json.dumps({"error": error}).encode(), "application/json")
            return
        self._error(
            400,
            {
                "status": "max_character_limit_exceeded",
                "message": f"Text is {length} characters; this model takes at most {limit}.",
            },
        )


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
