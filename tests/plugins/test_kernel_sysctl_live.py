"""kernel_sysctl_live: the pure helper on a real directory tree shaped like
/proc/sys, and the module itself run as Ansible runs it, against this kernel."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

MODULE = Path(__file__).resolve().parents[2] / "plugins/modules/kernel_sysctl_live.py"
# plugins/ is Ansible's, not a Python package: load the module from its file.
_spec = importlib.util.spec_from_file_location("kernel_sysctl_live", MODULE)
kernel_sysctl_live = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kernel_sysctl_live)
apply_settings = kernel_sysctl_live.apply_settings
normalise = kernel_sysctl_live.normalise
proc_path = kernel_sysctl_live.proc_path


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    (tmp_path / "vm").mkdir()
    (tmp_path / "vm/swappiness").write_text("60\n")
    (tmp_path / "net/ipv4").mkdir(parents=True)
    (tmp_path / "net/ipv4/tcp_rmem").write_text("4096\t131072\t6291456\n")
    return tmp_path


def test_proc_path_and_normalise():
    assert proc_path("net.ipv4.tcp_rmem") == "/proc/sys/net/ipv4/tcp_rmem"
    assert normalise("4096\t87380   134217728\n") == "4096 87380 134217728"


def test_differing_key_is_written(proc):
    result = apply_settings({"vm.swappiness": 10}, root=str(proc))
    assert result["applied"] == ["vm.swappiness"]
    assert (proc / "vm/swappiness").read_text() == "10"


def test_check_mode_writes_nothing(proc):
    result = apply_settings({"vm.swappiness": 10}, root=str(proc), check_mode=True)
    assert result["applied"] == ["vm.swappiness"]
    assert (proc / "vm/swappiness").read_text() == "60\n"


def test_equal_value_with_other_whitespace_is_current(proc):
    result = apply_settings({"net.ipv4.tcp_rmem": "4096 131072 6291456"}, root=str(proc))
    assert result == {"applied": [], "current": ["net.ipv4.tcp_rmem"], "not_applied": {}}


def test_missing_key_is_reported_not_failed(proc):
    result = apply_settings({"net.core.rmem_max": 134217728}, root=str(proc))
    assert result["not_applied"]["net.core.rmem_max"]["reason"].startswith("not present")


def run_module(args: dict) -> dict:
    payload = {"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": True}}
    done = subprocess.run(
        [sys.executable, str(MODULE)], input=json.dumps(payload), capture_output=True,
        text=True, check=False,
    )  # fmt: skip
    return json.loads(done.stdout)


def test_module_against_this_kernel_in_check_mode():
    live = normalise(Path("/proc/sys/kernel/pid_max").read_text())
    result = run_module({"settings": {"kernel.pid_max": live, "ytempire.no_such_key": 1}})
    assert result["changed"] is False
    assert result["current"] == ["kernel.pid_max"]
    assert "ytempire.no_such_key" in result["not_applied"]


def test_module_refuses_missing_settings():
    result = run_module({})
    assert result["failed"] is True
    assert "settings" in result["msg"]
