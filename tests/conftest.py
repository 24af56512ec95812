"""Shared fixtures. Integration tests get real systemd hosts to run playbooks on."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.targets import ROOT, Target, start_target, stop_target


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
