#!/usr/bin/env python3
"""Render benchmark: frames per second of the whole pipeline against encoding alone.

    python bench/render_bench.py [--width 1280 --height 720 --seconds 4 --fps 30]

Measures, on the same frames:
  * frame synthesis alone (torch, including the copy to host memory),
  * encoding alone (those frames, already in memory, piped to the same ffmpeg encoder),
  * the whole pipeline (narration, images, synthesis, enhancement, encoding and muxing
    into an MP4, exactly as the worker runs it),
and prints the ratio pipeline / encoding. With CUDA it also times synthesis on the
CPU against the GPU. Uses the service's settings (FEATURE_AI_ENHANCEMENT,
VIDEO_ENCODER, RENDER_DEVICE, ...) from the environment.
"""

from __future__ import annotations

import argparse
import io
import json
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
from ytvideo.render.pipeline import RenderSpec, RenderTools, render_video  # noqa: E402
from ytvideo.render.timeline import plan  # noqa: E402

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


def encode(frames: list[np.ndarray], tools: RenderTools, spec: RenderSpec, out: Path) -> float:
    encoder = FrameEncoder(
        "ffmpeg", tools.encoder, out, spec.width, spec.height, spec.fps, spec.duration
    )
    start = time.perf_counter()
    for batch in frames:
        encoder.write(batch.data)
    encoder.close()
    return time.perf_counter() - start


def make_renderer(spec: RenderSpec, device: torch.device, enhance: bool) -> FrameRenderer:
    scenes = plan(spec.title, spec.script, len(spec.images), spec.duration)
    images = [load_image(d, i, (spec.width, spec.height)) for i, d in enumerate(spec.images)]
    return FrameRenderer(
        scenes, images, spec.width, spec.height, spec.fps, spec.duration, device, enhance
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="render-bench-") as tmp:
        settings = replace(Settings.from_env(), media_dir=Path(tmp))
        tools = RenderTools.detect(settings)
        spec = RenderSpec(
            uuid.uuid4(),
            "Render benchmark",
            SCRIPT,
            args.width,
            args.height,
            args.seconds,
            args.fps,
            sample_images(args.images),
        )
        enhance = settings.feature_ai_enhancement
        n = max(1, round(args.seconds * args.fps))

        # Warm up (allocator, CUDA context, ffmpeg and espeak caches) on a short clip.
        warm = replace(spec, duration=min(1.0, args.seconds), job_id=uuid.uuid4())
        render_video(warm, settings, tools)

        frames, synth_s = synthesise(make_renderer(spec, tools.device, enhance))
        encode_s = encode(frames, tools, spec, Path(tmp) / "encode-only.mp4")
        del frames
        start = time.perf_counter()
        result = render_video(spec, settings, tools)
        pipeline_s = time.perf_counter() - start
        assert result.frames == n

        figures: dict[str, object] = {
            "resolution": f"{args.width}x{args.height}",
            "frames": n,
            "device": tools.device.type,
            "encoder": tools.encoder.name,
            "enhancement": enhance,
            "synthesis_fps": n / synth_s,
            "encode_only_fps": n / encode_s,
            "pipeline_fps": n / pipeline_s,
            "pipeline_to_encode_ratio": (n / pipeline_s) / (n / encode_s),
            "pipeline_stage_seconds": result.cost_breakdown["stage_seconds"],
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

    print(
        f"render benchmark: {figures['resolution']}, {n} frames at {args.fps} fps, "
        f"device {figures['device']}, encoder {figures['encoder']}, "
        f"enhancement {'on' if enhance else 'off'}, {torch.get_num_threads()} CPU threads"
    )
    print(f"  frame synthesis alone : {figures['synthesis_fps']:8.1f} frames/s")
    print(f"  encoding alone        : {figures['encode_only_fps']:8.1f} frames/s")
    print(f"  whole pipeline        : {figures['pipeline_fps']:8.1f} frames/s")
    print(f"  pipeline / encoding   : {figures['pipeline_to_encode_ratio']:8.2f}")
    print(f"  pipeline stages (s)   : {figures['pipeline_stage_seconds']}")
    if "gpu_speedup" in figures:
        print(f"  synthesis CPU         : {figures['synthesis_cpu_fps']:8.1f} frames/s")
        print(
            f"  synthesis GPU         : {figures['synthesis_gpu_fps']:8.1f} frames/s "
            f"({figures['gpu_name']})"
        )
        print(f"  GPU / CPU synthesis   : {figures['gpu_speedup']:8.2f}x")
    else:
        print("  GPU vs CPU synthesis  : no CUDA device here")
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
