#!/usr/bin/env python3
"""Render benchmark: frames plus encoding against encoding alone, on the same frames.

    python bench/render_bench.py [--resolutions 1280x720,1920x1080] [--seconds 4]
                                 [--fps 30] [--runs 3] [--json]

For each resolution, on the same scenes and the same narration (audio muxed
in both cases):
  * encoding alone: frames rendered beforehand, held in memory, piped to the
    encoder with the audio (what encoding costs by itself);
  * frames plus encoding: the worker's path, frames synthesised (torch, with the
    enhancement flag) while the previous batch is encoded;
each the median of --runs runs, and their ratio (frames plus encoding / encoding
alone, in frames per second). Also frame synthesis alone and the whole job
(narration included) once. With CUDA it also times synthesis on the CPU against
the GPU. Uses the service's settings (FEATURE_AI_ENHANCEMENT, VIDEO_ENCODER,
RENDER_DEVICE, ...) from the environment.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "app"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from ytvideo.config import Settings  # noqa: E402
from ytvideo.render.encode import FrameEncoder  # noqa: E402
from ytvideo.render.frames import FrameRenderer, load_image  # noqa: E402
from ytvideo.render.pipeline import (  # noqa: E402
    RenderSpec,
    RenderTools,
    render_frames_to,
    render_video,
)
from ytvideo.render.timeline import narration_text, plan  # noqa: E402

SCRIPT = (
    "Every great channel starts with a single video. This one was rendered by the "
    "benchmark, frame by frame. Cards, images in motion, and crossfades between them. "
    "Then ffmpeg turns the frames into H.264 and muxes in the narration."
)


def sample_images(count: int) -> list[bytes]:
    rng = np.random.default_rng(7)
    images = []
    for i in range(count):
        y, x = np.mgrid[0:720, 0:1080]
        base = np.stack([(x + 90 * i) % 256, (y * 2) % 256, (x + y) % 256], axis=-1)
        noise = rng.integers(0, 40, size=base.shape)
        buffer = io.BytesIO()
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(buffer, "JPEG")
        images.append(buffer.getvalue())
    return images


def synthesise(renderer: FrameRenderer) -> tuple[list[np.ndarray], float]:
    """All frames to host memory; returns them and the seconds it took."""
    if renderer.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    frames = [batch.cpu().numpy() for batch in renderer.batches()]
    return frames, time.perf_counter() - start


def encoder_for(tools: RenderTools, spec: RenderSpec, out: Path, audio) -> FrameEncoder:
    return FrameEncoder(
        "ffmpeg",
        tools.encoder,
        out,
        spec.width,
        spec.height,
        spec.fps,
        spec.duration,
        audio=audio.path,
        audio_seconds=audio.seconds,
    )


def encode_alone(frames: list[np.ndarray], tools, spec, out: Path, audio) -> float:
    encoder = encoder_for(tools, spec, out, audio)
    start = time.perf_counter()
    for batch in frames:
        encoder.write(batch.data)
    encoder.close()
    return time.perf_counter() - start


def frames_and_encode(spec, tools, enhance: bool, out: Path, audio) -> float:
    renderer = make_renderer(spec, tools.device, enhance)
    encoder = encoder_for(tools, spec, out, audio)
    start = time.perf_counter()
    render_frames_to(renderer, encoder)
    encoder.close()
    return time.perf_counter() - start


def make_renderer(spec: RenderSpec, device: torch.device, enhance: bool) -> FrameRenderer:
    scenes = plan(spec.title, spec.script, len(spec.images), spec.duration)
    images = [load_image(d, i, (spec.width, spec.height)) for i, d in enumerate(spec.images)]
    return FrameRenderer(
        scenes, images, spec.width, spec.height, spec.fps, spec.duration, device, enhance
    )


def resolution(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    return int(width), int(height)


def bench_one(args, settings, tools, size: tuple[int, int], tmp: Path) -> dict[str, object]:
    width, height = size
    spec = RenderSpec(
        uuid.uuid4(),
        "Render benchmark",
        SCRIPT,
        width,
        height,
        args.seconds,
        args.fps,
        sample_images(args.images),
    )
    enhance = settings.feature_ai_enhancement
    n = max(1, round(args.seconds * args.fps))
    audio = tools.narrator.synthesize(narration_text(spec.title, spec.script), tmp)
    frames, synth_s = synthesise(make_renderer(spec, tools.device, enhance))
    alone = [encode_alone(frames, tools, spec, tmp / "alone.mp4", audio) for _ in range(args.runs)]
    del frames
    both = [
        frames_and_encode(spec, tools, enhance, tmp / "both.mp4", audio) for _ in range(args.runs)
    ]
    start = time.perf_counter()
    result = render_video(spec, settings, tools)
    job_s = time.perf_counter() - start
    assert result.frames == n
    alone_s, both_s = statistics.median(alone), statistics.median(both)
    figures: dict[str, object] = {
        "resolution": f"{width}x{height}",
        "frames": n,
        "runs": args.runs,
        "synthesis_fps": n / synth_s,
        "encode_only_fps": n / alone_s,
        "frames_and_encode_fps": n / both_s,
        "frames_and_encode_to_encode_ratio": (n / both_s) / (n / alone_s),
        "whole_job_fps": n / job_s,
        "job_stage_seconds": result.cost_breakdown["stage_seconds"],
    }
    if torch.cuda.is_available():
        cpu_frames, cpu_s = synthesise(make_renderer(spec, torch.device("cpu"), enhance))
        del cpu_frames
        gpu_frames, gpu_s = synthesise(make_renderer(spec, torch.device("cuda"), enhance))
        del gpu_frames
        figures |= {
            "synthesis_cpu_fps": n / cpu_s,
            "synthesis_gpu_fps": n / gpu_s,
            "gpu_speedup": cpu_s / gpu_s,
            "gpu_name": torch.cuda.get_device_name(0),
        }
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", default="1280x720,1920x1080")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (the median)")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args()
    sizes = [resolution(r) for r in args.resolutions.split(",")]

    with tempfile.TemporaryDirectory(prefix="render-bench-") as tmp:
        settings = replace(Settings.from_env(), media_dir=Path(tmp))
        tools = RenderTools.detect(settings)
        # Warm up (allocator, CUDA context, ffmpeg and espeak caches) on a short clip.
        warm = RenderSpec(
            uuid.uuid4(), "Warm", "Up.", *sizes[0], min(1.0, args.seconds), args.fps, []
        )
        render_video(warm, settings, tools)
        results = [bench_one(args, settings, tools, size, Path(tmp)) for size in sizes]

    print(
        f"render benchmark: {args.seconds:g} s at {args.fps} fps, device {tools.device.type}, "
        f"encoder {tools.encoder.name}, enhancement "
        f"{'on' if settings.feature_ai_enhancement else 'off'}, {torch.get_num_threads()} CPU "
        f"threads, median of {args.runs}"
    )
    for f in results:
        print(f"  {f['resolution']}:")
        print(f"    frame synthesis alone  : {f['synthesis_fps']:8.1f} frames/s")
        print(f"    encoding alone (audio) : {f['encode_only_fps']:8.1f} frames/s")
        print(f"    frames plus encoding   : {f['frames_and_encode_fps']:8.1f} frames/s")
        print(f"    frames+encoding / enc. : {f['frames_and_encode_to_encode_ratio']:8.2f}")
        print(f"    whole job (narration)  : {f['whole_job_fps']:8.1f} frames/s")
        if "gpu_speedup" in f:
            print(
                f"    synthesis GPU / CPU    : {f['gpu_speedup']:8.2f}x ({f['gpu_name']}: "
                f"{f['synthesis_gpu_fps']:.1f} against {f['synthesis_cpu_fps']:.1f} frames/s)"
            )
    if not torch.cuda.is_available():
        print("  GPU vs CPU synthesis: no CUDA device here")
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
