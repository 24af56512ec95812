"""scripts/gpu-check.sh, run here where there is no GPU.

What these tests prove: the script lints, fails fast and clearly without a GPU, and carries
a real `nvidia-smi -q -x` sample (printed by an executable stand-in for nvidia-smi) through
the facts module, by ansible or by plain python3, to the asserted facts, the NVENC verdict,
the log and the JSON summary; with a stand-in NVML (tests/plugins/data/nvml-stub, built
here with gcc) it carries NVML's answers through the module's own probe to the verdict
and the NVML step, and without one it reports the fallback. What they cannot prove:
anything about a real GPU or driver, the toolkit, the device nodes or torch; the script
itself does that on a GPU machine."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts/gpu-check.sh"
DATA = ROOT / "tests/plugins/data/nvidia-smi"
NVML_STEP = "NVML encoder probe (the module's ctypes path)"
VENV_BIN = str(Path(sys.executable).parent)
SYSTEM_PATH = ["/usr/local/bin", "/usr/bin", "/bin"]


def fake_nvidia_smi(directory: Path, sample: str | None, rc: int = 0, said: str = "") -> Path:
    """A stand-in nvidia-smi: a table for no arguments, SAMPLE for -q -x, or SAID and RC."""
    directory.mkdir(parents=True, exist_ok=True)
    body = (
        f'printf "%s\\n" "{said}"; exit {rc}\n'
        if sample is None
        else 'case "$*" in\n'
        '  "") echo "| NVIDIA-SMI stand-in |" ;;\n'
        f'  "-q -x") cat "{DATA / sample}" ;;\n'
        '  *) echo "unexpected arguments: $*" >&2; exit 98 ;;\n'
        "esac\n"
    )
    script = directory / "nvidia-smi"
    script.write_text("#!/bin/sh\n" + body, encoding="utf-8")
    script.chmod(0o755)
    return directory


@pytest.fixture
def python3_without_ansible() -> str:
    """The system python3, on which the script takes its plain-python path."""
    python3 = shutil.which("python3", path=os.pathsep.join(SYSTEM_PATH))
    if python3 is None:
        pytest.skip("no system python3")
    has_ansible = subprocess.run([python3, "-c", "import ansible"], capture_output=True,
                                 check=False).returncode == 0  # fmt: skip
    if has_ansible:
        pytest.skip(f"{python3} can import ansible")
    return python3


def sample_uuids(sample: str) -> list[str]:
    text = (DATA / sample).read_text(encoding="utf-8")
    return [line.split(">")[1].split("<")[0] for line in text.splitlines() if "<uuid>" in line]


def run_check(
    tmp_path: Path, path: list[str], nvml: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess, dict, float]:
    """The script with PATH; NVML is the stand-in answering NVML's variables, or else a
    library that is not there (so that a real driver on this machine does not answer)."""
    out = tmp_path / "out"
    env = {
        **os.environ,
        "PATH": os.pathsep.join(path),
        "OUT": str(out),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-local"),
        "GPU_CHECK_NVML_LIBRARY": str(tmp_path / "no-driver/libnvidia-ml.so.1"),
        **(nvml or {}),
    }
    started = time.monotonic()
    done = subprocess.run(["bash", str(SCRIPT)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300, check=False)  # fmt: skip
    elapsed = time.monotonic() - started
    summary = json.loads((out / "gpu-check.json").read_text(encoding="utf-8"))
    assert (out / "gpu-check.log").read_text(encoding="utf-8").strip() == done.stdout.strip()
    return done, summary, elapsed


def steps(summary: dict) -> dict[str, str]:
    return {step["name"]: step["status"] for step in summary["steps"]}


def no_real_nvidia_smi(path: list[str]) -> None:
    if shutil.which("nvidia-smi", path=os.pathsep.join(path)):
        pytest.skip("a real nvidia-smi is installed on this machine")


def test_script_passes_bash_syntax_check():
    done = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_script_passes_shellcheck():
    # scripts/bootstrap.sh installs it with the dev extras: missing means a broken setup.
    assert shutil.which("shellcheck"), "shellcheck is not installed (scripts/bootstrap.sh dev)"
    done = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout


def test_script_is_executable():
    assert os.access(SCRIPT, os.X_OK)


def test_without_nvidia_smi_it_fails_fast_saying_no_gpu(tmp_path):
    path = [str(tmp_path / "empty"), *SYSTEM_PATH]
    no_real_nvidia_smi(path)
    done, summary, elapsed = run_check(tmp_path, path)
    assert done.returncode == 2
    assert "FAIL: no NVIDIA GPU: nvidia-smi is not on the PATH" in done.stdout
    assert elapsed < 20
    assert summary["exit_code"] == 2
    assert summary["gpu_present"] is False
    assert summary["failed_required"] == ["nvidia-smi"]


def test_when_nvidia_smi_fails_it_says_no_gpu(tmp_path):
    said = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."
    fake = fake_nvidia_smi(tmp_path / "bin", None, rc=9, said=said)
    done, summary, _ = run_check(tmp_path, [str(fake), *SYSTEM_PATH])
    assert done.returncode == 2
    assert said in done.stdout
    assert "FAIL: no NVIDIA GPU: nvidia-smi fails" in done.stdout
    assert summary["steps"] == [{"name": "nvidia-smi", "required": True, "status": "fail",
                                 "rc": 9, "detail": said}]  # fmt: skip


# What a stand-in nvidia-smi cannot give this machine; every other required step must pass.
NEEDS_A_REAL_GPU = {"/dev/nvidia* device nodes", "torch CUDA smoke test"}
# Without the NVML stand-in, the NVML step fails too.
NEEDS_NVML = NEEDS_A_REAL_GPU | {NVML_STEP}


def test_a_real_sample_through_ansible(tmp_path):
    fake = fake_nvidia_smi(tmp_path / "bin", "dual-rtx-a5000.xml")
    done, summary, _ = run_check(tmp_path, [str(fake), VENV_BIN, *SYSTEM_PATH])
    assert summary["facts_via"] == "ansible"
    assert steps(summary)["facts (ansible localhost -m nvidia_gpu_facts)"] == "pass"
    assert steps(summary)["assert GPU, model and driver; NVENC verdict"] == "pass"
    assert steps(summary)[NVML_STEP] == "fail"
    assert NVML_STEP in summary["failed_required"]
    assert set(summary["failed_required"]) <= NEEDS_NVML
    assert done.returncode == summary["exit_code"] == 1
    assert summary["facts"]["count"] == 2
    assert [gpu["pci_bus_id"] for gpu in summary["facts"]["gpus"]] == [
        "00000000:81:00.0",
        "00000000:C1:00.0",
    ]
    assert "NVENC on GPU 1 (NVIDIA RTX A5000): unknown" in done.stdout
    assert (
        "NVENC available on this host: unknown (from nvidia-smi XML; NVML gave no answer:"
        " cannot load NVML: " in done.stdout
    )
    assert "FAIL: NVML gave no answer: cannot load NVML: " in done.stdout
    saved = (tmp_path / "out/nvidia-smi-q.xml").read_text(encoding="utf-8")
    assert saved == (DATA / "dual-rtx-a5000.xml").read_text(encoding="utf-8")


def test_a_real_sample_without_ansible(tmp_path, python3_without_ansible):
    path = [str(tmp_path / "bin"), *SYSTEM_PATH]
    fake_nvidia_smi(tmp_path / "bin", "a100-sxm4-80gb-mig.xml")
    done, summary, _ = run_check(tmp_path, path)
    assert summary["facts_via"] == "python"
    assert steps(summary)["assert GPU, model and driver; NVENC verdict"] == "pass"
    assert set(summary["failed_required"]) <= NEEDS_NVML
    assert summary["facts"]["gpus"][0]["name"] == "NVIDIA A100-SXM4-80GB"
    assert summary["facts"]["nvml"]["error"].startswith("cannot load NVML: ")
    assert summary["nvenc_available"] is False
    assert "NVENC available on this host: no (from nvidia-smi XML; NVML gave no" in done.stdout


def nvml_answers(nvml_stub: Path, tmp_path: Path, uuids: list[str], encoder: list[str]):
    return {
        "GPU_CHECK_NVML_LIBRARY": str(nvml_stub),
        "NVML_STUB_UUIDS": ",".join(uuids),
        "NVML_STUB_ENCODER": ",".join(encoder),
        "NVML_STUB_LOG": str(tmp_path / "nvml-calls"),
    }


def test_nvml_answers_through_ansible(tmp_path, nvml_stub):
    """The GPU run's path: the module asks NVML, and the NVML step asks it again."""
    fake = fake_nvidia_smi(tmp_path / "bin", "dual-rtx-a5000.xml")
    first, second = sample_uuids("dual-rtx-a5000.xml")
    nvml = nvml_answers(nvml_stub, tmp_path, [second, first], ["notsupported", "ok:100"])
    done, summary, _ = run_check(tmp_path, [str(fake), VENV_BIN, *SYSTEM_PATH], nvml)
    assert summary["facts_via"] == "ansible"
    assert steps(summary)[NVML_STEP] == "pass"
    assert set(summary["failed_required"]) <= NEEDS_A_REAL_GPU
    assert summary["facts"]["nvml"] == {"library": str(nvml_stub), "error": None}
    assert [gpu["nvenc_available"] for gpu in summary["facts"]["gpus"]] == [True, False]
    assert summary["nvenc_available"] is True
    assert (
        "NVENC on GPU 0 (NVIDIA RTX A5000): yes - NVML encoder capacity 100 % for H.264"
        in done.stdout
    )
    assert "NVENC on GPU 1 (NVIDIA RTX A5000): no - NVML encoder capacity" in done.stdout
    assert "NVENC available on this host: yes (from NVML where it decided" in done.stdout
    assert f"  GPU 0 {second}: H.264 encoder capacity NVML_ERROR_NOT_SUPPORTED (3)" in done.stdout
    assert f"  GPU 1 {first}: H.264 encoder capacity 100 %" in done.stdout
    probe = json.loads((tmp_path / "out/nvml-probe.json").read_text(encoding="utf-8"))
    assert [gpu["uuid"] for gpu in probe["gpus"]] == [second, first]
    # Once by the module, once by the NVML step.
    assert (tmp_path / "nvml-calls").read_text().split().count("nvmlInit_v2") == 2


def test_nvml_missing_an_answer_for_a_gpu_fails_the_nvml_step(tmp_path, nvml_stub):
    fake = fake_nvidia_smi(tmp_path / "bin", "dual-rtx-a5000.xml")
    first, second = sample_uuids("dual-rtx-a5000.xml")
    nvml = nvml_answers(nvml_stub, tmp_path, [first, second], ["ok:100", "error:15"])
    done, summary, _ = run_check(tmp_path, [str(fake), VENV_BIN, *SYSTEM_PATH], nvml)
    assert steps(summary)[NVML_STEP] == "fail"
    assert NVML_STEP in summary["failed_required"]
    assert f"  GPU 1 {second}: H.264 encoder capacity NVML_ERROR_GPU_IS_LOST (15)" in done.stdout
    assert f"FAIL: NVML gave no encoder answer for {second}" in done.stdout
    # The module kept the XML's verdict for that GPU and said why.
    assert summary["facts"]["gpus"][1]["nvenc_available"] is None
    assert summary["facts"]["gpus"][1]["nvenc_evidence"].endswith("NVML_ERROR_GPU_IS_LOST (15))")


def test_nvml_through_plain_python(tmp_path, nvml_stub, python3_without_ansible):
    path = [str(tmp_path / "bin"), *SYSTEM_PATH]
    fake_nvidia_smi(tmp_path / "bin", "tesla-p100-pcie-16gb.xml")
    nvml = nvml_answers(nvml_stub, tmp_path, sample_uuids("tesla-p100-pcie-16gb.xml"),
                        ["notsupported"])  # fmt: skip
    done, summary, _ = run_check(tmp_path, path, nvml)
    assert summary["facts_via"] == "python"
    assert steps(summary)[NVML_STEP] == "pass"
    assert set(summary["failed_required"]) <= NEEDS_A_REAL_GPU
    assert summary["nvenc_available"] is False
    assert "NVENC on GPU 0 (Tesla P100-PCIE-16GB): no - NVML encoder capacity" in done.stdout


def test_a_sample_without_driver_version_fails_the_assertion(tmp_path):
    fake = fake_nvidia_smi(tmp_path / "bin", "gtx-1070-ti-trimmed.xml")
    done, summary, _ = run_check(tmp_path, [str(fake), VENV_BIN, *SYSTEM_PATH])
    assert done.returncode == 1
    assert steps(summary)["assert GPU, model and driver; NVENC verdict"] == "fail"
    assert "FAIL: no driver_version" in done.stdout
