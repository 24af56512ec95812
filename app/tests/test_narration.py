"""Narration: real offline speech, and the cloud providers against an emulator."""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from ytvideo.config import Settings
from ytvideo.render.narration import (
    ElevenLabsProvider,
    EspeakProvider,
    NarrationError,
    OpenAIProvider,
    RetryPolicy,
    choose_provider,
    parse_retry_after,
    split_text,
)
from ytvideo_emulator import SpeechEmulator
from ytvideo_services import ffprobe

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
    assert len(speech_api.state.requests) == 1  # a 4xx other than 429 is not retried


FAST = RetryPolicy(attempts=3, base_seconds=0.05, cap_seconds=0.1, retry_after_cap_seconds=5)


def test_a_429_is_retried_after_its_retry_after(speech_api: SpeechEmulator, tmp_path: Path) -> None:
    speech_api.state.fail_next(429, {"Retry-After": "1"})
    narration = OpenAIProvider(cloud_settings(speech_api)).synthesize(TEXT, tmp_path)
    first, second = speech_api.state.requests
    assert second["at"] - first["at"] >= 1.0  # the emulator's clock: the wait it asked for
    assert second["body"]["input"] == TEXT
    assert narration.seconds > 2.0
    assert narration.cost_dollars == pytest.approx(len(TEXT) / 1000 * 0.015)  # billed once


def test_a_long_retry_after_is_capped(speech_api: SpeechEmulator, tmp_path: Path) -> None:
    speech_api.state.fail_next(429, {"Retry-After": "3600"})
    policy = RetryPolicy(attempts=2, retry_after_cap_seconds=0.3)
    ElevenLabsProvider(cloud_settings(speech_api), policy).synthesize(TEXT, tmp_path)
    first, second = speech_api.state.requests
    assert 0.3 <= second["at"] - first["at"] < 60


def test_server_errors_are_retried_until_one_succeeds(
    speech_api: SpeechEmulator, tmp_path: Path
) -> None:
    speech_api.state.fail_next(500)
    speech_api.state.fail_next(503)
    narration = ElevenLabsProvider(cloud_settings(speech_api), FAST).synthesize(TEXT, tmp_path)
    assert len(speech_api.state.requests) == 3
    assert narration.seconds > 2.0


def test_a_persistent_500_fails_after_the_bounded_attempts(
    speech_api: SpeechEmulator, tmp_path: Path
) -> None:
    speech_api.state.fail_status = 500
    with pytest.raises(NarrationError, match=r"openai: .* answered HTTP 500 \(attempt 3 of 3\)"):
        OpenAIProvider(cloud_settings(speech_api), FAST).synthesize(TEXT, tmp_path)
    assert len(speech_api.state.requests) == 3
    gaps = [
        b["at"] - a["at"]
        for a, b in zip(speech_api.state.requests, speech_api.state.requests[1:], strict=False)
    ]
    assert all(gap >= 0.025 for gap in gaps), gaps  # backed off (at least half the base)


def long_script(characters: int) -> str:
    sentences = []
    n = 0
    while sum(len(s) + 1 for s in sentences) < characters:
        n += 1
        sentences.append(f"Sentence {n} of the long script tells a little more of the story.")
    return " ".join(sentences)[:characters].rstrip() + "."


def test_a_script_over_openais_limit_is_sent_in_pieces_and_joined(
    speech_api: SpeechEmulator, tmp_path: Path
) -> None:
    script = long_script(9000)
    narration = OpenAIProvider(cloud_settings(speech_api)).synthesize(script, tmp_path)
    requests = speech_api.state.requests
    inputs = [r["body"]["input"] for r in requests]
    assert len(requests) >= 3
    assert all(len(text) <= 4096 for text in inputs), [len(t) for t in inputs]
    assert " ".join(inputs) == script  # every word, in order, cut only at spaces
    assert all(text.endswith(".") for text in inputs)  # at sentence ends
    info = ffprobe(narration.path)
    assert [s["codec_type"] for s in info["streams"]] == ["audio"]  # one file, one track
    spoken = sum(r["audio_seconds"] for r in requests)
    assert narration.seconds == pytest.approx(spoken, abs=1.0)
    assert float(info["format"]["duration"]) == pytest.approx(spoken, abs=1.0)
    assert narration.characters == sum(len(text) for text in inputs)
    assert narration.cost_dollars == pytest.approx(narration.characters / 1000 * 0.015)


def test_the_emulator_refuses_input_over_the_limit_like_the_api(
    speech_api: SpeechEmulator,
) -> None:
    response = httpx.post(
        f"{speech_api.url}/v1/audio/speech",
        headers={"authorization": f"Bearer {speech_api.state.openai_key}"},
        json={"model": "tts-1", "voice": "alloy", "input": "x" * 4097},
        timeout=30,
    )
    assert response.status_code == 400
    assert "at most 4096 characters" in response.json()["error"]["message"]


def test_split_text_cuts_at_sentences_then_spaces_then_anywhere() -> None:
    assert split_text(TEXT, 4096) == [TEXT]
    text = "First sentence here. Second one. Third sentence is here."
    assert split_text(text, 35) == ["First sentence here. Second one.", "Third sentence is here."]
    assert split_text("alpha beta gamma delta", 11) == ["alpha beta", "gamma delta"]
    assert split_text("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]
    for limit in (7, 50, 333):
        pieces = split_text(long_script(2000), limit)
        assert all(0 < len(p) <= limit for p in pieces)


def test_retry_after_reads_seconds_and_dates() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    later = parse_retry_after(
        (datetime.now(UTC) + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    )
    assert later is not None
    assert 25 < later <= 30


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
