"""Narration providers: espeak-ng offline by default, ElevenLabs and OpenAI when keyed.

Each provider turns text into an audio file and says what it cost. The cloud
providers speak their public HTTP APIs (ElevenLabs ``POST /v1/text-to-speech/
{voice_id}``, OpenAI ``POST /v1/audio/speech``); their base URLs are settings,
which is how the tests point them at a local emulator.

A cloud call that answers 429 or 5xx is retried with capped exponential
backoff (or after the ``Retry-After`` it names, capped); a script longer than
the provider takes in one request is sent in pieces cut at sentence ends (else
spaces) and the pieces' audio is joined into one file with ffmpeg.
"""

from __future__ import annotations

import random
import re
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Protocol

import ffmpeg
import httpx

from ..config import Settings


class NarrationError(RuntimeError):
    """The voice could not be produced; the message names the provider and why."""


@dataclass(frozen=True)
class Narration:
    path: Path
    seconds: float
    provider: str
    characters: int
    cost_dollars: float


class NarrationProvider(Protocol):
    name: str

    def synthesize(self, text: str, workdir: Path) -> Narration: ...


def audio_seconds(path: Path) -> float:
    """Length of an audio file as ffprobe reports it."""
    try:
        info = ffmpeg.probe(str(path))
    except ffmpeg.Error as exc:
        stderr = (exc.stderr or b"").decode(errors="replace").strip()
        raise NarrationError(
            f"the narration in {path.name} is not readable audio: {stderr}"
        ) from exc
    streams = [s for s in info.get("streams", []) if s.get("codec_type") == "audio"]
    if not streams:
        raise NarrationError(f"the narration in {path.name} has no audio stream")
    seconds = float(info.get("format", {}).get("duration") or streams[0].get("duration") or 0)
    if seconds <= 0:
        raise NarrationError(f"the narration in {path.name} is empty")
    return seconds


class EspeakProvider:
    """Offline speech with espeak-ng: real, intelligible, free."""

    name = "espeak-ng"

    def __init__(self, binary: str = "espeak-ng", voice: str = "en-us", wpm: int = 165) -> None:
        self.binary, self.voice, self.wpm = binary, voice, wpm

    def synthesize(self, text: str, workdir: Path) -> Narration:
        script = workdir / "narration.txt"
        script.write_text(text, encoding="utf-8")
        out = workdir / "narration.wav"
        command = [self.binary, "-v", self.voice, "-s", str(self.wpm), "-f", str(script)]
        try:
            result = subprocess.run(
                [*command, "-w", str(out)], capture_output=True, text=True, timeout=300
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise NarrationError(f"espeak-ng could not run ({self.binary}): {exc}") from exc
        if result.returncode != 0 or not out.is_file():
            raise NarrationError(
                f"espeak-ng exited with {result.returncode}: {result.stderr.strip()[-300:]}"
            )
        return Narration(out, audio_seconds(out), self.name, len(text), 0.0)


@dataclass(frozen=True)
class RetryPolicy:
    """How often, and after how long, a cloud call that got 429 or 5xx is repeated."""

    attempts: int = 4  # in all, the first included
    base_seconds: float = 0.5  # the first backoff; doubles per attempt
    cap_seconds: float = 8.0  # longest backoff
    retry_after_cap_seconds: float = 30.0  # longest wait a Retry-After may ask for

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait after failed ``attempt`` (1-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.retry_after_cap_seconds)
        backoff = min(self.cap_seconds, self.base_seconds * 2 ** (attempt - 1))
        # Jitter, so workers throttled together do not retry together; not security.
        return backoff * random.uniform(0.5, 1.0)  # noqa: S311


DEFAULT_RETRY = RetryPolicy()


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: delay-seconds or an HTTP-date (RFC 9110 §10.2.3); else None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


_SENTENCE_END = re.compile(r"[.!?\u2026][\"'\u201d\u2019)\]]*(?=\s)")
_SPACE = re.compile(r"\s+")


def split_text(text: str, limit: int) -> list[str]:
    """``text`` in pieces of at most ``limit`` characters, in order.

    Each piece ends at the last sentence end that fits (past half the limit),
    else the last space, else (one word longer than ``limit``) at ``limit``. Text that fits is one
    piece, unchanged.
    """
    if len(text) <= limit:
        return [text]
    pieces: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        window = rest[: limit + 1]  # a space just past the limit still ends a piece
        # A sentence end in the first half would make a needlessly short piece.
        ends = [m.end() for m in _SENTENCE_END.finditer(window) if limit // 2 < m.end() <= limit]
        spaces = [m.start() for m in _SPACE.finditer(window) if m.start() > 0]
        cut = ends[-1] if ends else spaces[-1] if spaces else limit
        pieces.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        pieces.append(rest)
    return pieces


def concat_audio(parts: list[Path], out: Path, ffmpeg_binary: str = "ffmpeg") -> None:
    """Join audio files of one format into ``out`` (ffmpeg's concat demuxer, no re-encode)."""
    listing = out.with_name(f"{out.stem}-parts.txt")
    # Paths in the list are relative to it; the names are ours, so need no quoting.
    listing.write_text("".join(f"file '{p.name}'\n" for p in parts), encoding="utf-8")
    command = [ffmpeg_binary, "-v", "error", "-y", "-f", "concat", "-safe", "0"]
    command += ["-i", str(listing), "-c", "copy", str(out)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as exc:
        raise NarrationError(
            f"cannot join the narration pieces with {ffmpeg_binary}: {exc}"
        ) from exc
    if result.returncode != 0 or not out.is_file():
        raise NarrationError(
            f"joining {len(parts)} narration pieces failed (ffmpeg exited with "
            f"{result.returncode}): {result.stderr.strip()[-300:]}"
        )


class _HttpProvider:
    name = "http"
    suffix = ".mp3"
    max_chars = 4096  # characters one request may carry; subclasses set their API's

    def __init__(
        self,
        base_url: str,
        api_key: str,
        timeout: float,
        per_1k_chars: float,
        retry: RetryPolicy = DEFAULT_RETRY,
        ffmpeg_binary: str = "ffmpeg",
    ) -> None:
        self.base_url, self.api_key = base_url.rstrip("/"), api_key
        self.timeout, self.per_1k_chars = timeout, per_1k_chars
        self.retry, self.ffmpeg_binary = retry, ffmpeg_binary

    def _request(self, text: str) -> httpx.Request:
        raise NotImplementedError

    def _speak(self, client: httpx.Client, text: str) -> bytes:
        """One request's audio; 429 and 5xx are retried as ``self.retry`` says."""
        attempt = 0
        while True:
            attempt += 1
            request = self._request(text)
            try:
                response = client.send(request)
            except httpx.HTTPError as exc:
                raise NarrationError(
                    f"{self.name}: request to {request.url} failed: {exc}"
                ) from exc
            if response.status_code == 200:
                return response.content
            status = response.status_code
            if (status != 429 and status < 500) or attempt >= self.retry.attempts:
                tries = f" (attempt {attempt} of {self.retry.attempts})" if attempt > 1 else ""
                raise NarrationError(
                    f"{self.name}: {request.url} answered HTTP {status}{tries}: "
                    f"{response.text[:300]}"
                )
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            time.sleep(self.retry.delay(attempt, retry_after))

    def synthesize(self, text: str, workdir: Path) -> Narration:
        pieces = split_text(text, self.max_chars)
        out = workdir / f"narration{self.suffix}"
        with httpx.Client(timeout=self.timeout) as client:
            if len(pieces) == 1:
                out.write_bytes(self._speak(client, pieces[0]))
            else:
                parts = []
                for index, piece in enumerate(pieces):
                    part = workdir / f"narration-{index:03d}{self.suffix}"
                    part.write_bytes(self._speak(client, piece))
                    parts.append(part)
                concat_audio(parts, out, self.ffmpeg_binary)
        characters = sum(len(piece) for piece in pieces)  # what was sent, and billed
        cost = round(characters / 1000 * self.per_1k_chars, 6)
        return Narration(out, audio_seconds(out), self.name, characters, cost)


# ElevenLabs' per-request character limit depends on the model ("What's the maximum
# amount of characters and text I can generate?", help.elevenlabs.io, article
# 13298164480913): Flash/Turbo v2.5 40,000, Flash/Turbo v2 30,000, Multilingual and
# English v1/v2 10,000. A model not listed gets 5,000, the website's limit and
# Eleven v3's.
ELEVENLABS_MAX_CHARS = {
    "eleven_flash_v2_5": 40_000,
    "eleven_turbo_v2_5": 40_000,
    "eleven_flash_v2": 30_000,
    "eleven_turbo_v2": 30_000,
    "eleven_multilingual_v2": 10_000,
    "eleven_multilingual_v1": 10_000,
    "eleven_monolingual_v1": 10_000,
    "eleven_english_v2": 10_000,
}
ELEVENLABS_DEFAULT_MAX_CHARS = 5_000
# OpenAI's speech endpoint: "input ... The maximum length is 4096 characters."
# (API reference, POST /v1/audio/speech).
OPENAI_MAX_CHARS = 4_096


class ElevenLabsProvider(_HttpProvider):
    name = "elevenlabs"

    def __init__(self, settings: Settings, retry: RetryPolicy = DEFAULT_RETRY) -> None:
        super().__init__(
            settings.elevenlabs_base_url,
            settings.elevenlabs_api_key,
            settings.provider_timeout_seconds,
            settings.rates.elevenlabs_per_1k_chars,
            retry,
            settings.ffmpeg_binary,
        )
        self.voice_id = settings.elevenlabs_voice_id
        self.model_id = settings.elevenlabs_model_id
        self.max_chars = ELEVENLABS_MAX_CHARS.get(self.model_id, ELEVENLABS_DEFAULT_MAX_CHARS)

    def _request(self, text: str) -> httpx.Request:
        return httpx.Request(
            "POST",
            f"{self.base_url}/v1/text-to-speech/{self.voice_id}",
            params={"output_format": "mp3_44100_128"},
            headers={"xi-api-key": self.api_key, "accept": "audio/mpeg"},
            json={"text": text, "model_id": self.model_id},
        )


class OpenAIProvider(_HttpProvider):
    name = "openai"
    max_chars = OPENAI_MAX_CHARS

    def __init__(self, settings: Settings, retry: RetryPolicy = DEFAULT_RETRY) -> None:
        super().__init__(
            settings.openai_base_url,
            settings.openai_api_key,
            settings.provider_timeout_seconds,
            settings.rates.openai_tts_per_1k_chars,
            retry,
            settings.ffmpeg_binary,
        )
        self.model, self.voice = settings.openai_tts_model, settings.openai_tts_voice

    def _request(self, text: str) -> httpx.Request:
        return httpx.Request(
            "POST",
            f"{self.base_url}/v1/audio/speech",
            headers={"authorization": f"Bearer {self.api_key}"},
            json={
                "model": self.model,
                "voice": self.voice,
                "input": text,
                "response_format": "mp3",
            },
        )


def choose_provider(settings: Settings) -> NarrationProvider:
    """NARRATION_PROVIDER, or (``auto``) the first keyed cloud voice, else espeak-ng."""
    choice = settings.narration_choice()  # the API's cost estimate makes the same choice
    if choice == "elevenlabs":
        if not settings.elevenlabs_api_key:
            raise NarrationError("NARRATION_PROVIDER=elevenlabs needs ELEVENLABS_API_KEY")
        return ElevenLabsProvider(settings)
    if choice == "openai":
        if not settings.openai_api_key:
            raise NarrationError("NARRATION_PROVIDER=openai needs OPENAI_API_KEY")
        return OpenAIProvider(settings)
    return EspeakProvider(settings.espeak_binary)
