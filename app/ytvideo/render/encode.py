"""H.264 encoding with ffmpeg: raw RGB frames in through a pipe, MP4 out.

The encoder is found by asking ffmpeg, never guessed from the GPU: Debian's
ffmpeg lists ``h264_nvenc`` on machines with no NVIDIA driver, and data-centre
GPUs (H100, H200) have no NVENC block at all, so a listed encoder must also
pass a tiny trial encode before it is used. libx264 is the fallback.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import ffmpeg

TRIAL_SECONDS = 10


class EncodeError(RuntimeError):
    """ffmpeg refused the job; the message carries the end of its log."""


@dataclass(frozen=True)
class Encoder:
    name: str
    options: dict[str, str | int] = field(default_factory=dict)


def listed_encoders(ffmpeg_binary: str) -> set[str]:
    try:
        result = subprocess.run(
            [ffmpeg_binary, "-hide_banner", "-encoders"],
            capture_output=True,
            text=True,
            timeout=TRIAL_SECONDS,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise EncodeError(f"cannot run {ffmpeg_binary!r} -encoders: {exc}") from exc
    names = set()
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and len(parts[0]) == 6 and parts[0][0] == "V":
            names.add(parts[1])
    return names


def trial_encode(ffmpeg_binary: str, codec: str) -> tuple[bool, str]:
    """Encode a fraction of a second of test pattern; (works, ffmpeg's complaint)."""
    try:
        result = subprocess.run(
            [
                ffmpeg_binary,
                "-hide_banner",
                "-loglevel",
                "error",
                "-nostdin",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=256x256:rate=25:duration=0.2",
                "-c:v",
                codec,
                "-f",
                "null",
                "-",
            ],
            capture_output=True,
            text=True,
            timeout=TRIAL_SECONDS,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return False, str(exc)
    return result.returncode == 0, " ".join(result.stderr.split())[-300:]


def options_for(codec: str, optimise: bool) -> dict[str, str | int]:
    """Rate control per encoder. FEATURE_VIDEO_OPTIMIZATION trades speed for size."""
    if codec == "h264_nvenc":
        return {"preset": "p5" if optimise else "p2", "rc": "vbr", "cq": 23, "b:v": 0}
    return {"preset": "medium" if optimise else "veryfast", "crf": 21 if optimise else 23}


def detect_encoder(ffmpeg_binary: str, preference: str, optimise: bool) -> Encoder:
    """``auto``: h264_nvenc when listed and a trial encode works, else libx264."""
    listed = listed_encoders(ffmpeg_binary)
    wanted = ["h264_nvenc", "libx264"] if preference == "auto" else [preference]
    complaints = []
    for codec in wanted:
        if codec not in listed:
            complaints.append(f"{codec}: not in this ffmpeg build")
            continue
        works, why = trial_encode(ffmpeg_binary, codec)
        if works:
            return Encoder(codec, options_for(codec, optimise))
        complaints.append(f"{codec}: trial encode failed ({why})")
    raise EncodeError(
        "no usable H.264 encoder (" + "; ".join(complaints) + "); install an ffmpeg with "
        "libx264, or set VIDEO_ENCODER=auto"
    )


def fitted_audio(
    audio: Path, audio_seconds: float, duration: float
) -> ffmpeg.nodes.FilterableStream:
    """The narration, sped up (at most 2x) when longer than the video, padded
    with silence when shorter, and cut to exactly ``duration`` seconds."""
    stream = ffmpeg.input(str(audio)).audio
    if audio_seconds > duration:
        stream = stream.filter("atempo", f"{min(2.0, audio_seconds / duration):.4f}")
    return (
        stream.filter("apad")
        .filter("atrim", end=f"{duration:.4f}")
        .filter("asetpts", "PTS-STARTPTS")
    )


class FrameEncoder:
    """One ffmpeg process: ``write`` raw rgb24 frames, ``close`` to finish the file.

    With ``audio`` the narration is muxed in (AAC); without it, the output has
    only video (used by the benchmark to time encoding alone).
    """

    def __init__(
        self,
        ffmpeg_binary: str,
        encoder: Encoder,
        output: Path,
        width: int,
        height: int,
        fps: int,
        duration: float,
        audio: Path | None = None,
        audio_seconds: float = 0.0,
        faststart: bool = True,
    ) -> None:
        self.output = output
        video = ffmpeg.input(
            "pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", framerate=fps
        )
        streams = [video]
        out_args: dict[str, str | int] = {
            "vcodec": encoder.name,
            "pix_fmt": "yuv420p",
            "r": fps,
            **encoder.options,
        }
        if audio is not None:
            streams.append(fitted_audio(audio, audio_seconds, duration))
            out_args.update({"acodec": "aac", "b:a": "128k", "ar": 48000, "ac": 2})
        if faststart:
            out_args["movflags"] = "+faststart"
        node = ffmpeg.output(*streams, str(output), format="mp4", **out_args)
        node = node.global_args("-hide_banner", "-loglevel", "error", "-nostats")
        self.args = node.overwrite_output().compile(cmd=ffmpeg_binary)
        self._log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115  lives as long as ffmpeg
        try:
            self.process = subprocess.Popen(
                self.args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log
            )
        except OSError as exc:
            self._log.close()
            raise EncodeError(f"cannot start {ffmpeg_binary!r}: {exc}") from exc
        self._lock = threading.Lock()

    def write(self, frames: bytes | memoryview) -> None:
        try:
            with self._lock:
                self.process.stdin.write(frames)
        except (BrokenPipeError, ValueError):
            self.process.wait()
            raise EncodeError(self._failure("stopped reading frames")) from None

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.close()
        code = self.process.wait()
        if code != 0:
            raise EncodeError(self._failure(f"exited with {code}"))
        self._log.close()

    def abort(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._log.close()

    def _failure(self, what: str) -> str:
        if self._log.closed:  # aborted (a stop or a deadline): its stderr is gone
            return f"ffmpeg {what} while writing {self.output.name}: it was stopped"
        self._log.seek(0)
        tail = " ".join(self._log.read().decode(errors="replace").split())[-800:]
        return f"ffmpeg {what} while writing {self.output.name}: {tail or 'no message'}"
