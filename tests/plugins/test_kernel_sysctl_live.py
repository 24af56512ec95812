"""kernel_sysctl_live: the pure helper on a real directory tree shaped like
/proc/sys, the module run through Ansible against that tree (check, real,
check, real), the module against this kernel, and its documentation."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.plugins.ansible_doc import ansible_doc

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "plugins/modules/kernel_sysctl_live.py"
ANSIBLE = shutil.which("ansible", path=str(Path(sys.executable).parent)) or shutil.which("ansible")
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


# The module reads and writes the fixed path /proc/sys. To run it through
# Ansible against the `proc` tree above, `ansible` runs in a private mount
# namespace where that tree is bind-mounted on /proc/sys (the host's /proc/sys
# is untouched); without root, in a user namespace too.
NAMESPACE = ["unshare", "--mount", "--propagation", "private"]
if os.geteuid() != 0:
    NAMESPACE[1:1] = ["--user", "--map-root-user"]


def ansible_on_tree(tree: Path, tmp_path: Path, settings: dict, check: bool) -> dict:
    """`ansible localhost -m kernel_sysctl_live` with `tree` as /proc/sys: the result."""
    assert ANSIBLE, "ansible is not installed next to this Python"
    assert shutil.which("unshare"), "unshare (util-linux) runs the module against the tree"
    command = [ANSIBLE, "localhost", "-i", "localhost,", "-c", "local", "-M", "plugins/modules",
               "-m", "kernel_sysctl_live", "-a", json.dumps({"settings": settings}),
               "-e", f"ansible_python_interpreter={sys.executable}"]  # fmt: skip
    if check:
        command.append("--check")
    script = 'mount --bind "$1" /proc/sys && shift && exec "$@"'
    env = {
        **os.environ,
        "ANSIBLE_CACHE_PLUGIN": "memory",
        "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
        "ANSIBLE_LOCALHOST_WARNING": "false",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-local"),
        "ANSIBLE_REMOTE_TEMP": str(tmp_path / "ansible-remote"),
    }
    done = subprocess.run([*NAMESPACE, "sh", "-c", script, "sh", str(tree), *command],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    head, _, result = done.stdout.partition(" => ")
    assert head.split("|")[-1].strip() in ("SUCCESS", "CHANGED"), done.stdout
    return json.loads(result)


def test_module_through_ansible_check_real_check_real(proc, tmp_path):
    (proc / "vm/dirty_ratio").write_text("20\n")
    settings = {
        "vm.swappiness": 10,
        "vm.dirty_ratio": 15,
        "net.ipv4.tcp_rmem": "4096 131072 6291456",
        "net.core.rmem_max": 134217728,
    }
    before = {p: p.read_text() for p in proc.rglob("*") if p.is_file()}

    check = ansible_on_tree(proc, tmp_path, settings, check=True)
    assert check["changed"] is True
    assert check["applied"] == ["vm.dirty_ratio", "vm.swappiness"]
    assert {p: p.read_text() for p in proc.rglob("*") if p.is_file()} == before

    real = ansible_on_tree(proc, tmp_path, settings, check=False)
    for field in ("changed", "applied", "current", "not_applied"):
        assert real[field] == check[field], field
    assert (proc / "vm/swappiness").read_text() == "10"
    assert (proc / "vm/dirty_ratio").read_text() == "15"
    assert real["current"] == ["net.ipv4.tcp_rmem"]
    assert real["not_applied"]["net.core.rmem_max"]["reason"].startswith("not present")

    check_again = ansible_on_tree(proc, tmp_path, settings, check=True)
    real_again = ansible_on_tree(proc, tmp_path, settings, check=False)
    for again in (check_again, real_again):
        assert again["changed"] is False
        assert again["applied"] == []
        assert again["current"] == ["net.ipv4.tcp_rmem", "vm.dirty_ratio", "vm.swappiness"]
        assert list(again["not_applied"]) == ["net.core.rmem_max"]


def test_ansible_doc_renders_the_module():
    rendered, doc = ansible_doc("kernel_sysctl_live")
    for text in ("settings", "/proc/sys", "not_applied", "read-only", "vm.swappiness"):
        assert text in rendered, text
    assert doc["doc"]["options"]["settings"]["type"] == "dict"
    assert doc["doc"]["options"]["settings"]["required"] is True
    assert set(doc["doc"]["attributes"]) == {"check_mode", "diff_mode", "idempotent"}
    assert set(doc["return"]) == {"applied", "current", "not_applied"}
