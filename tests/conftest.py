"""Shared fixtures. Integration tests get real systemd hosts to run playbooks on."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.targets import ROOT, Refusals, Target, refuse_all, start_target, stop_target


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="module")
def fresh_host() -> Iterator[Target]:
    """A fresh systemd host, shared by a module's tests that must not change it."""
    target = start_target(f"ytempire-pytest-{uuid.uuid4().hex[:8]}")
    try:
        yield target
    finally:
        stop_target(target)


@pytest.fixture(scope="module")
def refusals(request, fresh_host) -> Refusals:
    """The module's PLAYBOOK (site.yml unless it names one) run once for all of its
    CASES (CASE: (variables, message)), each case a name of the fresh host with its
    variables (tests.support.targets.refuse_all)."""
    playbook = getattr(request.module, "PLAYBOOK", "site.yml")
    cases = {case: variables for case, (variables, _) in request.module.CASES.items()}
    return refuse_all(fresh_host, playbook, cases)


@pytest.fixture(scope="session")
def nvml_stub(tmp_path_factory) -> Path:
    """libnvidia-ml.so.1 built from tests/plugins/data/nvml-stub/nvml_stub.c: a stand-in for
    NVML whose answers come from the NVML_STUB_* environment variables (see that file)."""
    gcc = shutil.which("gcc")
    assert gcc, "gcc builds the NVML stand-in these tests need: install gcc (apt-get install gcc)"
    library = tmp_path_factory.mktemp("nvml-stub") / "libnvidia-ml.so.1"
    source = ROOT / "tests/plugins/data/nvml-stub/nvml_stub.c"
    done = subprocess.run(
        [gcc, "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror", "-o", str(library), str(source)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return library
