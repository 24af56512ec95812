"""Narration: real offline speech, and the cloud providers against an emulator."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from ytvideo.config import Settings
from ytvideo.render.narration import (
    ElevenLabsProvider,
    EspeakProvider,
    NarrationError,
    OpenAIProvider,
    choose_provider,
)
from ytvideo_emulator import SpeechEmulator

TEXT = "Welcome to the empire. This is a test of the narration."


def mean_volume_db(path: Path) -> float:
    result = subprocess.run(
        ["ffmpeg", "-hide_banner", "-i", str(path), "-af", "volumedetect", "-f", "null", "-"],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(re.search(r"mean_volume: (-?[\d.]+) dB", result.stderr).group(1))


def test_espeak_produces_audible_speech_for_free(tmp_path: Path) -> None:
    narration = EspeakProvider().synthesize(TEXT, tmp_path)
    assert narration.provider == "espeak-ng"
    assert narration.cost_dollars == 0.0
    assert 2.0 < narration.seconds < 10.0  # about 10 words at 165 wpm
    assert mean_volume_db(narration.path) > -40  # not silence


def test_espeak_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NarrationError, match="espeak-ng could not run"):
        EspeakProvider(binary="/nonexistent/espeak-ng").synthesize(TEXT, tmp_path)


def cloud_settings(api: SpeechEmulator, **overrides: str) -> Settings:
    env = {
        "ELEVENLABS_API_KEY": api.state.elevenlabs_key,
        "ELEVENLABS_BASE_URL": api.url,
        "OPENAI_API_KEY": api.state.openai_key,
        "OPENAI_BASE_URL": api.url,
        "COST_ELEVENLABS_PER_1K_CHARS": "0.30",
        "COST_OPENAI_TTS_PER_1K_CHARS": "0.015",
    }
    return Settings.from_env(env | overrides)


def test_elevenlabs_request_shape_cost_and_audio(
    speech_api: SpeechEmulator, tmp_path: Path
) -> None:
    settings = cloud_settings(speech_api)
    narration = ElevenLabsProvider(settings).synthesize(TEXT, tmp_path)
    (request,) = speech_api.state.requests
    assert request["path"] == f"/v1/text-to-speech/{settings.elevenlabs_voice_id}"
    assert request["headers"]["xi-api-key"] == speech_api.state.elevenlabs_key
    assert request["body"] == {"text": TEXT, "model_id": settings.elevenlabs_model_id}
    assert narration.provider == "elevenlabs"
    assert narration.cost_dollars == pytest.approx(len(TEXT) / 1000 * 0.30)
    assert narration.seconds > 2.0
    assert mean_volume_db(narration.path) > -40


def test_openai_request_shape_cost_and_audio(speech_api: SpeechEmulator, tmp_path: Path) -> None:
    settings = cloud_settings(speech_api)
    narration = OpenAIProvider(settings).synthesize(TEXT, tmp_path)
    (request,) = speech_api.state.requests
    assert request["path"] == "/v1/audio/speech"
    assert request["headers"]["authorization"] == f"Bearer {speech_api.state.openai_key}"
    assert request["body"]["input"] == TEXT
    assert request["body"]["model"] == "tts-1"
    assert narration.cost_dollars == pytest.approx(len(TEXT) / 1000 * 0.015)
    assert narration.seconds > 2.0


def test_a_rejected_key_fails_with_the_status(speech_api: SpeechEmulator, tmp_path: Path) -> None:
    settings = cloud_settings(speech_api, ELEVENLABS_API_KEY="wrong")
    with pytest.raises(NarrationError, match="elevenlabs: .* answered HTTP 401"):
        ElevenLabsProvider(settings).synthesize(TEXT, tmp_path)


def test_an_unreachable_provider_fails_clearly(tmp_path: Path) -> None:
    from ytvideo_services import free_port

    settings = Settings.from_env(
        {"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": f"http://127.0.0.1:{free_port()}"}
    )
    with pytest.raises(NarrationError, match="openai: request to .* failed"):
        OpenAIProvider(settings).synthesize(TEXT, tmp_path)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "espeak-ng"),
        ({"OPENAI_API_KEY": "k"}, "openai"),
        ({"OPENAI_API_KEY": "k", "ELEVENLABS_API_KEY": "k"}, "elevenlabs"),
        ({"ELEVENLABS_API_KEY": "k", "NARRATION_PROVIDER": "espeak"}, "espeak-ng"),
    ],
)
def test_cloud_voices_are_used_only_when_keyed(env: dict[str, str], expected: str) -> None:
    assert choose_provider(Settings.from_env(env)).name == expected


def test_forcing_an_unkeyed_provider_is_an_error() -> None:
    with pytest.raises(NarrationError, match="needs OPENAI_API_KEY"):
        choose_provider(Settings.from_env({"NARRATION_PROVIDER": "openai"}))
