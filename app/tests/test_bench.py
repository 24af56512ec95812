"""bench/render_bench.py runs and prints the figures it promises."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from ytvideo_services import REPO_DIR


def test_render_bench_prints_both_paths_and_their_ratio_per_resolution(tmp_path) -> None:
    env = os.environ | {"HOME": str(tmp_path), "OPENAI_API_KEY": "", "ELEVENLABS_API_KEY": ""}
    result = subprocess.run(
        [sys.executable, str(REPO_DIR / "bench" / "render_bench.py")]
        + ["--resolutions", "192x108,256x144", "--seconds", "1.5", "--fps", "10"]
        + ["--images", "1", "--runs", "3", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    for label in ("encoding alone (audio)", "frames plus encoding", "frames+encoding / enc."):
        assert sum(line.strip().startswith(label) for line in lines) == 2, result.stdout
    figures = json.loads(lines[-1])
    assert [f["resolution"] for f in figures] == ["192x108", "256x144"]
    for f in figures:
        assert f["frames"] == 15
        assert f["runs"] == 3
        ratio = f["frames_and_encode_fps"] / f["encode_only_fps"]
        assert abs(f["frames_and_encode_to_encode_ratio"] - ratio) < 1e-9


def test_generate_bench_prints_both_loads_and_their_ratio(tmp_path) -> None:
    """bench/generate_bench.py: ab on generate?dry_run and /health/live, all 2xx, no job."""
    result = subprocess.run(
        [sys.executable, str(REPO_DIR / "bench" / "generate_bench.py"), "-n", "60", "-c", "6"]
        + ["--json"],
        capture_output=True,
        text=True,
        env=os.environ | {"HOME": str(tmp_path)},
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    for label in ("GET /health/live", "POST generate?dry_run", "generate / live"):
        assert any(line.strip().startswith(label) for line in lines), result.stdout
    figures = json.loads(lines[-1])
    for load in ("health_live", "generate_dry_run"):
        assert figures[load]["requests_per_second"] > 0
        assert figures[load]["p50_ms"] <= figures[load]["p95_ms"] <= figures[load]["p99_ms"]
        assert figures[load]["non_2xx"] == 0
    ratio = (
        figures["generate_dry_run"]["requests_per_second"]
        / figures["health_live"]["requests_per_second"]
    )
    assert abs(figures["generate_to_live_rps_ratio"] - ratio) < 1e-9
