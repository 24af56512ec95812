"""The encoder is found by asking ffmpeg, and frames piped to it become H.264."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from ytvideo.render.encode import (
    EncodeError,
    Encoder,
    FrameEncoder,
    detect_encoder,
    listed_encoders,
    trial_encode,
)
from ytvideo_services import ffprobe


def test_listed_encoders_include_libx264() -> None:
    assert "libx264" in listed_encoders("ffmpeg")


def test_auto_takes_nvenc_only_when_a_trial_encode_works() -> None:
    nvenc_listed = "h264_nvenc" in listed_encoders("ffmpeg")
    nvenc_works = nvenc_listed and trial_encode("ffmpeg", "h264_nvenc")[0]
    chosen = detect_encoder("ffmpeg", "auto", optimise=True)
    assert chosen.name == ("h264_nvenc" if nvenc_works else "libx264")


def test_forcing_an_encoder_that_cannot_run_says_why() -> None:
    if trial_encode("ffmpeg", "h264_nvenc")[0]:
        pytest.skip("this host really has NVENC")
    with pytest.raises(EncodeError, match="h264_nvenc: (trial encode failed|not in this ffmpeg)"):
        detect_encoder("ffmpeg", "h264_nvenc", optimise=True)


def test_a_missing_ffmpeg_is_reported() -> None:
    with pytest.raises(EncodeError, match="cannot run '/nonexistent/ffmpeg'"):
        detect_encoder("/nonexistent/ffmpeg", "auto", optimise=True)


def tone(path: Path, seconds: float) -> Path:
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:duration={seconds}",
            str(path),
        ],
        check=True,
    )
    return path


def frames(count: int, width: int = 128, height: int = 72) -> bytes:
    ramp = np.linspace(0, 255, count, dtype=np.uint8)
    return np.broadcast_to(ramp[:, None, None, None], (count, height, width, 3)).tobytes()


@pytest.mark.parametrize("audio_seconds", [1.0, 3.5])
def test_piped_frames_and_narration_become_an_mp4_of_the_video_length(
    tmp_path: Path, audio_seconds: float
) -> None:
    """Short narration is padded with silence, long narration sped up and cut."""
    audio = tone(tmp_path / "voice.wav", audio_seconds)
    out = tmp_path / "out.mp4"
    encoder = FrameEncoder(
        "ffmpeg",
        Encoder("libx264", {"preset": "veryfast"}),
        out,
        128,
        72,
        10,
        2.0,
        audio=audio,
        audio_seconds=audio_seconds,
    )
    encoder.write(frames(20))
    encoder.close()
    info = ffprobe(out)
    kinds = {s["codec_type"]: s for s in info["streams"]}
    assert kinds["video"]["codec_name"] == "h264"
    assert (kinds["video"]["width"], kinds["video"]["height"]) == (128, 72)
    assert kinds["audio"]["codec_name"] == "aac"
    assert abs(float(info["format"]["duration"]) - 2.0) < 0.2


def test_ffmpeg_failure_carries_its_message(tmp_path: Path) -> None:
    encoder = FrameEncoder(
        "ffmpeg",
        Encoder("libx264", {"preset": "no-such-preset"}),
        tmp_path / "x.mp4",
        128,
        72,
        10,
        1.0,
    )

    def feed() -> None:  # ffmpeg may die before or after taking the frames
        encoder.write(frames(10))
        encoder.close()

    with pytest.raises(EncodeError, match="ffmpeg .* x.mp4: .*preset"):
        feed()
    encoder.abort()
