"""`ansible-doc -M plugins/modules`, as the module tests read it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_DOC = shutil.which("ansible-doc", path=str(Path(sys.executable).parent)) or shutil.which(
    "ansible-doc"
)


def ansible_doc(module: str) -> tuple[str, dict]:
    """The module's documentation as ansible-doc renders it, and as its --json reads it."""
    assert ANSIBLE_DOC, "ansible-doc is not installed next to this Python"
    command = [ANSIBLE_DOC, "-M", "plugins/modules"]
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1"}
    rendered = subprocess.run([*command, module], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=60, check=False)  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    as_json = subprocess.run([*command, "--json", module], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert as_json.returncode == 0, as_json.stderr
    return rendered.stdout, json.loads(as_json.stdout)[module]
