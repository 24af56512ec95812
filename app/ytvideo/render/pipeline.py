"""One video from one job: narration, frames, encoding, cost.

Stages: ``narration`` (the voice, first, so the encoder can mux it in one
pass), ``images`` (decode), ``render`` (torch frames), ``encode`` (ffmpeg).
A failure raises PipelineError naming its stage. Frames are produced on the
device while a writer thread feeds the previous batch to ffmpeg, so synthesis
and encoding overlap. The MP4 is written under a temporary name and renamed
into place, so a crash never leaves a half file under the final name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import Settings
from .encode import EncodeError, Encoder, FrameEncoder, detect_encoder
from .frames import FrameRenderer, RenderError, load_image, select_device
from .narration import NarrationError, NarrationProvider, choose_provider
from .timeline import narration_text, plan

log = logging.getLogger(__name__)


class PipelineError(RuntimeError):
    def __init__(self, stage: str, message: str) -> None:
        super().__init__(f"{stage}: {message}")
        self.stage = stage
        self.message = message


@dataclass(frozen=True)
class RenderSpec:
    job_id: uuid.UUID
    title: str
    script: str
    width: int
    height: int
    duration: float
    fps: int
    images: list[bytes]
    # Why the job must stop now (its lease was lost or cancelled, its deadline
    # passed), or None to go on; checked between steps and every second.
    stop_reason: Callable[[], str | None] = lambda: None


class Stopped(PipelineError):
    """The job stopped for ``stop_reason``: stage ``lease`` (another worker or its owner
    has it now: nothing of it is written) or ``deadline``."""


@dataclass(frozen=True)
class RenderTools:
    """What a worker works out once: the device, the encoder, the voice."""

    device: torch.device
    encoder: Encoder
    narrator: NarrationProvider

    @classmethod
    def detect(cls, settings: Settings) -> RenderTools:
        try:
            device = select_device(settings.render_device)
        except RenderError as exc:
            raise PipelineError("setup", str(exc)) from exc
        try:
            encoder = detect_encoder(
                settings.ffmpeg_binary, settings.video_encoder, settings.feature_video_optimization
            )
        except EncodeError as exc:
            raise PipelineError("setup", str(exc)) from exc
        try:
            narrator = choose_provider(settings)
        except NarrationError as exc:
            raise PipelineError("setup", str(exc)) from exc
        return cls(device, encoder, narrator)


@dataclass(frozen=True)
class RenderResult:
    path: Path
    frames: int
    encoder: str
    device: str
    narration_provider: str
    compute_seconds: float
    cost_dollars: float
    cost_breakdown: dict[str, Any]


def cost_breakdown(
    settings: Settings,
    device: str,
    compute_seconds: float,
    provider: str,
    chars: int,
    dollars: float,
) -> dict[str, Any]:
    """Appendix D's cost per video: compute seconds times the device rate, plus the voice."""
    rate = settings.rates.gpu_second if device == "cuda" else settings.rates.cpu_second
    compute = compute_seconds * rate
    return {
        "device": device,
        "compute_seconds": round(compute_seconds, 3),
        "compute_rate_per_second": rate,
        "compute_dollars": round(compute, 6),
        "narration_provider": provider,
        "narration_characters": chars,
        "narration_dollars": round(dollars, 6),
        "total_dollars": round(compute + dollars, 6),
    }


def check_narration_cost(settings: Settings, narrator: object, text: str) -> None:
    """The cap holds for the actual cost: a voice whose price for this text would pass
    COST_CAP_DOLLARS stops the job before it is paid for (the API's estimate may have
    used other rates, or another provider)."""
    rate = float(getattr(narrator, "per_1k_chars", 0.0))
    dollars = len(text) / 1000 * rate
    if dollars > settings.cost_cap_dollars:
        raise PipelineError(
            "cost",
            f"the narration of {len(text)} characters would cost ${dollars:.2f} at "
            f"{getattr(narrator, 'name', 'the provider')}'s ${rate:g} per 1,000, over the cap of "
            f"${settings.cost_cap_dollars:.2f} a video (COST_CAP_DOLLARS): nothing was spent",
        )


def _check(spec: RenderSpec) -> None:
    reason = spec.stop_reason()
    if reason is not None:
        stage = "deadline" if "deadline" in reason else "lease"
        raise Stopped(stage, reason)


class _Watchdog(threading.Thread):
    """Kills the encoder when the job must stop, even while a write to it blocks."""

    def __init__(self, spec: RenderSpec, encoder: FrameEncoder) -> None:
        super().__init__(name="render-watchdog", daemon=True)
        self.spec, self.encoder = spec, encoder
        self.done = threading.Event()
        self.fired: str | None = None

    def run(self) -> None:
        while not self.done.wait(1.0):
            reason = self.spec.stop_reason()
            if reason is not None:
                self.fired = reason
                self.encoder.abort()
                return


class _Writer(threading.Thread):
    """Feeds batches to ffmpeg while the next batch renders."""

    def __init__(self, encoder: FrameEncoder) -> None:
        super().__init__(name="frame-writer", daemon=True)
        self.encoder = encoder
        self.inbox: queue.Queue[tuple[torch.Tensor, Any] | None] = queue.Queue(maxsize=2)
        self.error: EncodeError | None = None

    def run(self) -> None:
        while (item := self.inbox.get()) is not None:
            if self.error is not None:
                continue  # keep draining so the producer never blocks
            host, ready = item
            if ready is not None:
                ready.synchronize()
            try:
                self.encoder.write(host.numpy().data)
            except EncodeError as exc:
                self.error = exc
            except Exception as exc:  # anything else must not leave the producer blocked
                self.error = EncodeError(f"writing frames failed: {type(exc).__name__}: {exc}")


def _to_host(batch: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """Copy a device batch to (pinned) host memory without waiting for it."""
    if batch.device.type != "cuda":
        return batch, None
    host = torch.empty(batch.shape, dtype=batch.dtype, pin_memory=True)
    host.copy_(batch, non_blocking=True)
    ready = torch.cuda.Event()
    ready.record()
    return host, ready


def render_frames_to(
    renderer: FrameRenderer, encoder: FrameEncoder, batch_size: int | None = None
) -> int:
    """Render every frame into ``encoder``; returns the frame count."""
    writer = _Writer(encoder)
    writer.start()
    frames = 0
    try:
        for batch in renderer.batches(batch_size):
            if writer.error is not None:
                break
            writer.inbox.put(_to_host(batch))
            frames += batch.shape[0]
    except (RuntimeError, ValueError) as exc:
        raise PipelineError("render", f"frame synthesis failed at frame {frames}: {exc}") from exc
    finally:
        writer.inbox.put(None)
        writer.join()
    if writer.error is not None:
        raise PipelineError("encode", str(writer.error))
    return frames


def render_video(spec: RenderSpec, settings: Settings, tools: RenderTools) -> RenderResult:
    started = time.monotonic()
    media = settings.media_dir
    media.mkdir(parents=True, exist_ok=True)
    final = media / f"{spec.job_id}.mp4"
    # Unique per attempt (the PID is 1 in every container): two workers on one job
    # never write the same file, and neither touches the other's.
    partial = media / f".{spec.job_id}.{uuid.uuid4().hex}.partial.mp4"
    scenes = plan(spec.title, spec.script, len(spec.images), spec.duration)
    text = narration_text(spec.title, spec.script)
    check_narration_cost(settings, tools.narrator, text)
    _check(spec)
    with tempfile.TemporaryDirectory(prefix="ytvideo-") as work:
        try:
            narration = tools.narrator.synthesize(text, Path(work))
        except NarrationError as exc:
            raise PipelineError("narration", str(exc)) from exc
        narrated = time.monotonic()
        _check(spec)
        try:
            images = [
                load_image(d, i, (spec.width, spec.height)) for i, d in enumerate(spec.images)
            ]
        except RenderError as exc:
            raise PipelineError("images", str(exc)) from exc
        try:
            renderer = FrameRenderer(
                scenes,
                images,
                spec.width,
                spec.height,
                spec.fps,
                spec.duration,
                tools.device,
                enhance=settings.feature_ai_enhancement,
            )
        except (RenderError, RuntimeError) as exc:
            raise PipelineError("render", f"could not prepare the scenes: {exc}") from exc
        try:
            encoder = FrameEncoder(
                settings.ffmpeg_binary,
                tools.encoder,
                partial,
                spec.width,
                spec.height,
                spec.fps,
                spec.duration,
                audio=narration.path,
                audio_seconds=narration.seconds,
                faststart=settings.feature_video_optimization,
            )
        except EncodeError as exc:
            raise PipelineError("encode", str(exc)) from exc
        prepared = time.monotonic()
        watchdog = _Watchdog(spec, encoder)
        watchdog.start()
        try:
            frames = render_frames_to(renderer, encoder)
            encoder.close()
            _check(spec)
        except (EncodeError, PipelineError) as exc:
            encoder.abort()
            partial.unlink(missing_ok=True)
            if watchdog.fired is not None:
                stage = "deadline" if "deadline" in watchdog.fired else "lease"
                raise Stopped(stage, watchdog.fired) from exc
            if isinstance(exc, PipelineError):
                raise
            raise PipelineError("encode", str(exc)) from exc
        except BaseException:
            encoder.abort()
            partial.unlink(missing_ok=True)
            raise
        finally:
            watchdog.done.set()
    os.replace(partial, final)
    # Partials of attempts that died, idle for longer than a live writer ever is.
    for leftover in media.glob(f".{spec.job_id}.*.partial.mp4"):
        with contextlib.suppress(OSError):
            if time.time() - leftover.stat().st_mtime > settings.stale_job_seconds:
                leftover.unlink()
    finished = time.monotonic()
    seconds = finished - started
    breakdown = cost_breakdown(
        settings,
        tools.device.type,
        seconds,
        narration.provider,
        narration.characters,
        narration.cost_dollars,
    )
    breakdown["stage_seconds"] = {
        "narration": round(narrated - started, 3),
        "prepare": round(prepared - narrated, 3),
        "frames_and_encode": round(finished - prepared, 3),
    }
    log.info(
        "rendered %s: %d frames %dx%d in %.2f s on %s with %s, $%.6f",
        spec.job_id,
        frames,
        spec.width,
        spec.height,
        seconds,
        tools.device.type,
        tools.encoder.name,
        breakdown["total_dollars"],
    )
    return RenderResult(
        final,
        frames,
        tools.encoder.name,
        tools.device.type,
        narration.provider,
        seconds,
        breakdown["total_dollars"],
        breakdown,
    )
