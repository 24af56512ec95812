"""Appendix D's cost per video, estimated before a job is queued.

The estimate is what the worker will charge (pipeline.cost_breakdown): the
narration's characters at the provider's rate, plus compute seconds at a
rate. Rendering time is not known in advance, so the estimate takes
COST_ESTIMATE_RENDER_SECONDS_PER_VIDEO_SECOND seconds of rendering per second
of video at 720p, scaled by the frame's pixels, at the GPU rate (the dearer
one): it errs high. A request whose estimate is over COST_CAP_DOLLARS is
refused; the worker holds the cap for the actual cost too.
"""

from __future__ import annotations

from typing import Any

from .config import Settings
from .render.timeline import narration_text

REFERENCE_PIXELS = 1280 * 720


def estimate(
    settings: Settings, title: str, script: str, width: int, height: int, duration: float
) -> dict[str, Any]:
    provider = settings.narration_choice()
    chars = len(narration_text(title, script))
    narration = chars / 1000 * settings.narration_rate_per_1k_chars(provider)
    scale = max(1.0, (width * height) / REFERENCE_PIXELS)
    render_seconds = duration * settings.estimate_render_seconds_per_video_second * scale
    compute = render_seconds * settings.rates.gpu_second
    return {
        "narration_provider": provider,
        "narration_characters": chars,
        "narration_dollars": round(narration, 6),
        "compute_seconds": round(render_seconds, 3),
        "compute_rate_per_second": settings.rates.gpu_second,
        "compute_dollars": round(compute, 6),
        "total_dollars": round(narration + compute, 6),
        "cap_dollars": settings.cost_cap_dollars,
    }
