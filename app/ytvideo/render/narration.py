"""Narration providers: espeak-ng offline by default, ElevenLabs and OpenAI when keyed.

Each provider turns text into an audio file and says what it cost. The cloud
providers speak their public HTTP APIs (ElevenLabs ``POST /v1/text-to-speech/
{voice_id}``, OpenAI ``POST /v1/audio/speech``); their base URLs are settings,
which is how the tests point them at a local emulator.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
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


class _HttpProvider:
    name = "http"
    suffix = ".mp3"

    def __init__(self, base_url: str, api_key: str, timeout: float, per_1k_chars: float) -> None:
        self.base_url, self.api_key = base_url.rstrip("/"), api_key
        self.timeout, self.per_1k_chars = timeout, per_1k_chars

    def _request(self, text: str) -> httpx.Request:
        raise NotImplementedError

    def synthesize(self, text: str, workdir: Path) -> Narration:
        request = self._request(text)
        try:
            with httpx.Client(timeout=self.timeout) as client:
                response = client.send(request)
        except httpx.HTTPError as exc:
            raise NarrationError(f"{self.name}: request to {request.url} failed: {exc}") from exc
        if response.status_code != 200:
            raise NarrationError(
                f"{self.name}: {request.url} answered HTTP {response.status_code}: "
                f"{response.text[:300]}"
            )
        out = workdir / f"narration{self.suffix}"
        out.write_bytes(response.content)
        cost = round(len(text) / 1000 * self.per_1k_chars, 6)
        return Narration(out, audio_seconds(out), self.name, len(text), cost)


class ElevenLabsProvider(_HttpProvider):
    name = "elevenlabs"

    def __init__(self, settings: Settings) -> None:
        super().__init__(
            settings.elevenlabs_base_url,
            settings.elevenlabs_api_key,
            settings.provider_timeout_seconds,
            settings.rates.elevenlabs_per_1k_chars,
        )
        self.voice_id = settings.elevenlabs_voice_id
        self.model_id = settings.elevenlabs_model_id

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

    def __init__(self, settings: Settings) -> None:
        super().__init__(
            settings.openai_base_url,
            settings.openai_api_key,
            settings.provider_timeout_seconds,
            settings.rates.openai_tts_per_1k_chars,
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
    choice = settings.narration_provider
    if choice == "auto":
        if settings.elevenlabs_api_key:
            choice = "elevenlabs"
        elif settings.openai_api_key:
            choice = "openai"
        else:
            choice = "espeak"
    if choice == "elevenlabs":
        if not settings.elevenlabs_api_key:
            raise NarrationError("NARRATION_PROVIDER=elevenlabs needs ELEVENLABS_API_KEY")
        return ElevenLabsProvider(settings)
    if choice == "openai":
        if not settings.openai_api_key:
            raise NarrationError("NARRATION_PROVIDER=openai needs OPENAI_API_KEY")
        return OpenAIProvider(settings)
    return EspeakProvider(settings.espeak_binary)
