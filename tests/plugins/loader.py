"""Import the plugins as Ansible would, without Ansible running them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load(name: str, path: Path):
    """The module at ``path`` imported as ``name`` (ansible.module_utils.X for module_utils,
    so that the plugins' own imports of each other resolve)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
