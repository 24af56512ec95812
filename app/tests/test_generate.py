"""Acceptance: a generate request becomes a real MP4, and the metrics move."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw
from ytvideo_services import Stack, ffprobe, metric_value


def photo(width: int = 480, height: int = 320) -> str:
    image = Image.new("RGB", (width, height), (30, 90, 160))
    draw = ImageDraw.Draw(image)
    for i in range(0, width, 40):
        draw.ellipse((i, height // 3, i + 30, height // 3 + 30), fill=(240, 200, 40))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize(
    ("resolution", "duration", "images"),
    [("320x180", 2.5, 1), ("256x144", 2.0, 0)],
    ids=["with-image", "cards-only"],
)
def test_generate_yields_the_requested_mp4(
    stack: Stack, resolution: str, duration: float, images: int
) -> None:
    before = stack.metrics()
    response = stack.generate(
        title="Empire Weekly",
        script="Welcome back. Today we look at three ideas. Each one fits in a sentence.",
        images=[photo() for _ in range(images)],
        resolution=resolution,
        duration=duration,
        fps=10,
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert response.json()["status_url"] == f"/api/videos/{job_id}"

    job = stack.wait_finished(job_id)
    assert job["status"] == "completed", f"{job}\n{stack.logs()}"
    assert job["resolution"] == resolution
    assert job["attempts"] == 1
    assert job["narration_provider"] == "espeak-ng"
    assert job["encoder"] in ("libx264", "h264_nvenc")

    path = Path(job["output_path"])
    assert path.parent == stack.base / "media"
    info = ffprobe(path)
    streams = {s["codec_type"]: s for s in info["streams"]}
    width, height = (int(v) for v in resolution.split("x"))
    assert streams["video"]["codec_name"] == "h264"
    assert (streams["video"]["width"], streams["video"]["height"]) == (width, height)
    assert "audio" in streams
    assert abs(float(info["format"]["duration"]) - duration) <= 0.5

    breakdown: dict[str, Any] = job["cost_breakdown"]
    assert job["cost_dollars"] > 0
    assert job["cost_dollars"] == pytest.approx(breakdown["total_dollars"])
    assert breakdown["compute_seconds"] > 0
    assert breakdown["narration_dollars"] == 0.0  # the offline voice is free

    download = stack.client.get(job["output_url"])
    assert download.status_code == 200
    assert download.headers["content-type"] == "video/mp4"
    assert download.content == path.read_bytes()

    after = stack.metrics()
    assert (
        metric_value(after, "videos_processed_total")
        >= metric_value(before, "videos_processed_total") + 1
    )
    assert metric_value(after, "video_processing_cost_dollars", video_id=job_id) == pytest.approx(
        job["cost_dollars"]
    )
    generate = {"method": "POST", "path": "/api/videos/generate"}
    assert (
        metric_value(after, "http_requests_total", status="202", **generate)
        == metric_value(before, "http_requests_total", status="202", **generate) + 1
    )
    assert metric_value(after, "http_request_duration_seconds_count", **generate) > metric_value(
        before, "http_request_duration_seconds_count", **generate
    )


def test_a_video_that_is_not_finished_cannot_be_downloaded(stack: Stack) -> None:
    response = stack.generate(title="Later", script="Not yet.", resolution="128x72", duration=1)
    job_id = response.json()["id"]
    early = stack.client.get(f"/api/videos/{job_id}/file")
    if early.status_code != 200:  # the worker may already have finished it
        assert early.status_code == 409
        assert "not completed" in early.json()["detail"]
    assert stack.wait_finished(job_id)["status"] == "completed"
    assert stack.client.get(f"/api/videos/{job_id}/file").status_code == 200
