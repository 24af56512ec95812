"""bench/render_bench.py runs and prints the figures it promises."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from ytvideo_services import REPO_DIR


def test_render_bench_prints_pipeline_encoding_and_ratio(tmp_path) -> None:
    env = os.environ | {"HOME": str(tmp_path), "OPENAI_API_KEY": "", "ELEVENLABS_API_KEY": ""}
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_DIR / "bench" / "render_bench.py"),
            "--width",
            "192",
            "--height",
            "108",
            "--seconds",
            "1.5",
            "--fps",
            "10",
            "--images",
            "1",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    for label in (
        "frame synthesis alone",
        "encoding alone",
        "whole pipeline",
        "pipeline / encoding",
    ):
        assert any(line.strip().startswith(label) for line in lines), result.stdout
    figures = json.loads(lines[-1])
    assert figures["frames"] == 15
    assert figures["pipeline_fps"] > 0
    assert figures["encode_only_fps"] > 0
    ratio = figures["pipeline_fps"] / figures["encode_only_fps"]
    assert abs(figures["pipeline_to_encode_ratio"] - ratio) < 1e-9
