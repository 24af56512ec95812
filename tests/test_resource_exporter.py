"""The resource exporter (roles/monitoring/files/ytempire-resource-exporter)
against this machine's real Docker engine: containers appear with their
labels and limits, a stopped one reads 0, restarts by the restart policy are
counted, an engine that does not answer is a metric and not a crash, no GPU
reads 0, and a listen address that is not host:port is refused. (This
engine's own stats are empty here; CPU and memory usage are shown by the site
scenario, whose nested engine has them.)"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPORTER = ROOT / "roles/monitoring/files/ytempire-resource-exporter"
IMAGE = "ytempire/systemd-debian12:latest"

pytestmark = pytest.mark.docker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def docker(*args: str) -> str:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=True, timeout=120
    ).stdout.strip()


def start_exporter(*args: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(EXPORTER), "--listen-address", f"127.0.0.1:{port}", *args],
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    for _ in range(50):
        try:
            urllib.request.urlopen(url, timeout=5).close()  # noqa: S310  our own exporter
            return proc, url
        except OSError:
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.2)
    raise AssertionError("the exporter did not answer")


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=30) as answer:  # noqa: S310  our own exporter
        text = answer.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


@pytest.fixture(scope="module")
def exporter() -> Iterator[str]:
    images = docker("images", "-q", IMAGE)
    assert images, f"{IMAGE} is missing: molecule/images/build.sh debian12 builds it"
    proc, url = start_exporter()
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def name() -> Iterator[str]:
    name = f"ytempire-rexp-test-{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def series(name: str, metric: str, service: str | None = None) -> str:
    return f'{metric}{{color="blue",name="{name}",service="{service or "exporter-test"}"}}'


def test_a_container_with_its_labels_limits_and_stop(exporter, name):
    docker(
        "run", "-d", "--name", name, "--memory", "96m", "--cpus", "0.5",
        "--label", "com.docker.compose.service=exporter-test", "--label", "ytempire.color=blue",
        "--entrypoint", "sleep", IMAGE, "infinity",
    )  # fmt: skip
    samples = scrape(exporter)
    assert samples["ytempire_docker_up"] == 1
    assert samples[series(name, "ytempire_container_up")] == 1
    assert samples[series(name, "ytempire_container_memory_limit_bytes")] == 96 * 1024**2
    assert samples[series(name, "ytempire_container_cpu_limit_cores")] == 0.5
    started = samples[series(name, "ytempire_container_started_timestamp_seconds")]
    assert abs(started - time.time()) < 120
    assert samples[series(name, "ytempire_container_oom_killed")] == 0
    docker("stop", "-t", "1", name)
    samples = scrape(exporter)
    assert samples[series(name, "ytempire_container_up")] == 0
    assert series(name, "ytempire_container_cpu_seconds_total") not in samples


def test_restarts_by_the_policy_are_counted(exporter, name):
    docker(
        "run", "-d", "--name", name, "--restart", "on-failure:3",
        "--label", "com.docker.compose.service=exporter-test", "--label", "ytempire.color=blue",
        "--entrypoint", "sh", IMAGE, "-c", "sleep 0.5; exit 1",
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while docker("inspect", "-f", "{{.RestartCount}} {{.State.Running}}", name) != "3 false":
        assert time.monotonic() < deadline, "the restart policy did not give up"
        time.sleep(1)
    samples = scrape(exporter)
    assert samples[series(name, "ytempire_container_restarts_total")] == 3
    assert samples[series(name, "ytempire_container_up")] == 0


def test_no_gpu_reads_zero(exporter):
    samples = scrape(exporter)
    assert samples["ytempire_gpu_up"] == 0
    assert samples["ytempire_gpu_count"] == 0
    assert not [s for s in samples if s.startswith("ytempire_gpu_utilization")]


def test_an_engine_that_does_not_answer_is_a_metric(tmp_path):
    proc, url = start_exporter("--docker-url", f"unix://{tmp_path}/no-engine.sock")
    try:
        samples = scrape(url)
        assert samples["ytempire_docker_up"] == 0
        assert not [s for s in samples if s.startswith("ytempire_container_")]
        assert samples["ytempire_gpu_up"] == 0
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize("address", ["9417", "http://127.0.0.1:9417", "127.0.0.1:99999"])
def test_a_listen_address_that_is_not_host_port_is_refused(address):
    done = subprocess.run(
        [sys.executable, str(EXPORTER), "--listen-address", address],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "is not host:port" in done.stderr
