"""nvidia_gpu_facts: the pure XML parser on real `nvidia-smi -q -x` outputs (see
data/nvidia-smi/SOURCES.md), the NVML probe, and the module run as Ansible runs it
(`ansible localhost`).

No GPU exists here, so the module glue tests put an executable stand-in for nvidia-smi on
the PATH that prints one of the real samples: they prove the command line, LC_ALL=C, the
options and the failure handling, not anything about a GPU. Likewise the NVML probe runs
its real ctypes calls against a stand-in libnvidia-ml.so.1 built here with gcc from
data/nvml-stub/nvml_stub.c, which answers as the test tells it: that proves the calls,
their arguments, the UUID matching and the fallbacks, not what a real driver answers
(scripts/gpu-check.sh asks the real one on a GPU machine)."""

import ctypes.util
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.plugins.ansible_doc import ansible_doc

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "plugins/modules/nvidia_gpu_facts.py"
DATA = Path(__file__).resolve().parent / "data/nvidia-smi"
# plugins/ is Ansible's, not a Python package: load the module from its file.
_spec = importlib.util.spec_from_file_location("nvidia_gpu_facts", MODULE)
nvidia_gpu_facts = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nvidia_gpu_facts)
parse_nvidia_smi_xml = nvidia_gpu_facts.parse_nvidia_smi_xml


def sample(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


def gpu(**values: object) -> dict[str, object]:
    """The facts every GPU carries, with the values read from the sample by hand."""
    keys = ("index", "name", "uuid", "pci_bus_id", "minor_number", "memory_total_mib",
            "memory_used_mib", "memory_free_mib", "persistence_mode", "ecc", "compute_mode",
            "mig_mode", "encoder_util_percent", "encoder_sessions", "nvenc_available")  # fmt: skip
    assert set(values) == set(keys)
    return values


# file: (driver_version, cuda_version, host-wide nvenc_available, [GPU facts])
EXPECTED = {
    "a100-sxm4-80gb-mig.xml": ("535.54.03", "12.2", False, [
        gpu(index=0, name="NVIDIA A100-SXM4-80GB", uuid="GPU-513536b6-7d19-9063-b049-1e69664bb298",
            pci_bus_id="00000000:01:00.0", minor_number=1, memory_total_mib=81920,
            memory_used_mib=50, memory_free_mib=80999, persistence_mode=False,
            ecc={"current": True, "pending": True}, compute_mode="Default", mig_mode=True,
            encoder_util_percent=None, encoder_sessions=0, nvenc_available=False),
    ]),
    "tesla-p100-pcie-16gb.xml": ("510.47.03", "11.6", None, [
        gpu(index=0, name="Tesla P100-PCIE-16GB", uuid="GPU-d3da8716-eaab-75db-efc1-60e88e1cd55e",
            pci_bus_id="00000000:00:04.0", minor_number=0, memory_total_mib=16384,
            memory_used_mib=0, memory_free_mib=16280, persistence_mode=False,
            ecc={"current": True, "pending": True}, compute_mode="Default", mig_mode=None,
            encoder_util_percent=0, encoder_sessions=0, nvenc_available=None),
    ]),
    "gt-1030.xml": ("470.74", "11.4", False, [
        gpu(index=0, name="NVIDIA GeForce GT 1030", uuid="GPU-857c6374-f681-cf3a-f99f-9063a87b8ac0",
            pci_bus_id="00000000:2D:00.0", minor_number=0, memory_total_mib=1998,
            memory_used_mib=875, memory_free_mib=1123, persistence_mode=False,
            ecc={"current": None, "pending": None}, compute_mode="Default", mig_mode=None,
            encoder_util_percent=None, encoder_sessions=0, nvenc_available=False),
    ]),
    "rtx-pro-6000-blackwell-maxq.xml": ("590.44.01", "13.1", None, [
        gpu(index=0, name="NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition",
            uuid="GPU-12345678-aaaa-bbbb-cccc-0123456789ab", pci_bus_id="00000000:61:00.0",
            minor_number=0, memory_total_mib=97887, memory_used_mib=65720,
            memory_free_mib=31531, persistence_mode=True,
            ecc={"current": False, "pending": False}, compute_mode="Default", mig_mode=None,
            encoder_util_percent=0, encoder_sessions=0, nvenc_available=None),
    ]),
    "dual-rtx-a5000.xml": ("590.44.01", "13.1", None, [
        gpu(index=0, name="NVIDIA RTX A5000", uuid="GPU-12345678-aaaa-bbbb-cccc-0123456789ab",
            pci_bus_id="00000000:81:00.0", minor_number=1, memory_total_mib=24564,
            memory_used_mib=22437, memory_free_mib=1678, persistence_mode=True,
            ecc={"current": False, "pending": False}, compute_mode="Default", mig_mode=None,
            encoder_util_percent=0, encoder_sessions=0, nvenc_available=None),
        gpu(index=1, name="NVIDIA RTX A5000", uuid="GPU-12345678-aaaa-bbbb-cccc-0123456789cd",
            pci_bus_id="00000000:C1:00.0", minor_number=0, memory_total_mib=24564,
            memory_used_mib=17253, memory_free_mib=6862, persistence_mode=True,
            ecc={"current": False, "pending": False}, compute_mode="Default", mig_mode=None,
            encoder_util_percent=0, encoder_sessions=0, nvenc_available=None),
    ]),
    # Cut down upstream: no versions, ECC, persistence or encoder_util; no pci_bus_id either,
    # so the bus id comes from <gpu id="...">.
    "gtx-1070-ti-trimmed.xml": (None, None, None, [
        gpu(index=0, name="GeForce GTX 1070 Ti", uuid="GPU-f9ba66fc-a7f5-94c5-da19-019ef2f9c665",
            pci_bus_id="00000000:01:00.0", minor_number=None, memory_total_mib=4096,
            memory_used_mib=42, memory_free_mib=4054, persistence_mode=None,
            ecc={"current": None, "pending": None}, compute_mode="Default", mig_mode=None,
            encoder_util_percent=None, encoder_sessions=0, nvenc_available=None),
    ]),
}  # fmt: skip


def test_every_sample_has_expectations():
    assert sorted(p.name for p in DATA.glob("*.xml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_facts(name):
    driver, cuda, nvenc, gpus = EXPECTED[name]
    facts = parse_nvidia_smi_xml(sample(name))
    assert facts["present"] is True
    assert facts["reason"] is None
    assert facts["count"] == len(gpus)
    assert (facts["driver_version"], facts["cuda_version"]) == (driver, cuda)
    assert facts["nvenc_available"] is nvenc
    assert [
        {key: got[key] for key in want} for got, want in zip(facts["gpus"], gpus, strict=True)
    ] == gpus


@pytest.mark.parametrize(
    ("name", "evidence"),
    [
        ("a100-sxm4-80gb-mig.xml", "all 4 MIG instances report encoder_count 0"),
        ("gt-1030.xml", "encoder_util is N/A while gpu_util is reported"),
        ("tesla-p100-pcie-16gb.xml", "encoder_util 0 % with no session"),
        ("rtx-pro-6000-blackwell-maxq.xml", "encoder_util 0 % with no session"),
        ("gtx-1070-ti-trimmed.xml", "no utilization/encoder_util in this output"),
    ],
)
def test_encoder_verdict_names_its_evidence(name, evidence):
    assert evidence in parse_nvidia_smi_xml(sample(name))["gpus"][0]["nvenc_evidence"]


def test_idle_gpus_with_and_without_nvenc_read_the_same():
    """Why a 0 % encoder_util is no verdict: the P100 has no NVENC, the A5000 has one."""
    p100 = parse_nvidia_smi_xml(sample("tesla-p100-pcie-16gb.xml"))["gpus"][0]
    a5000 = parse_nvidia_smi_xml(sample("dual-rtx-a5000.xml"))["gpus"][0]
    readings = ("encoder_util_percent", "encoder_sessions", "nvenc_available", "nvenc_evidence")
    assert [p100[key] for key in readings] == [a5000[key] for key in readings]


def changed(name: str, path: str, value: str, gpu_index: int = 0, nth: int = 0) -> str:
    """A real sample with one reading changed, for the rules no sample exercises."""
    root = ET.fromstring(sample(name))  # noqa: S314  our own test data
    root.findall("gpu")[gpu_index].findall(path)[nth].text = value
    return ET.tostring(root, encoding="unicode")


def test_running_encoder_session_shows_nvenc():
    facts = parse_nvidia_smi_xml(
        changed("dual-rtx-a5000.xml", "encoder_stats/session_count", "2", 1)
    )
    assert [g["nvenc_available"] for g in facts["gpus"]] == [None, True]
    assert "2 encoder session(s) running" in facts["gpus"][1]["nvenc_evidence"]
    assert facts["nvenc_available"] is True


def test_busy_encoder_shows_nvenc():
    facts = parse_nvidia_smi_xml(
        changed("tesla-p100-pcie-16gb.xml", "utilization/encoder_util", "37 %")
    )
    assert facts["gpus"][0]["nvenc_available"] is True
    assert facts["gpus"][0]["nvenc_evidence"] == "encoder_util is 37 %"


def test_mig_instance_with_an_encoder_shows_nvenc():
    count = "mig_devices/mig_device/device_attributes/shared/encoder_count"
    text = changed("a100-sxm4-80gb-mig.xml", count, "1", nth=2)
    facts = parse_nvidia_smi_xml(text)
    assert facts["gpus"][0]["nvenc_available"] is True
    assert "1 encoder(s)" in facts["gpus"][0]["nvenc_evidence"]


def test_na_utilization_of_the_whole_gpu_is_no_evidence():
    text = changed("gt-1030.xml", "utilization/gpu_util", "N/A")
    assert parse_nvidia_smi_xml(text)["gpus"][0]["nvenc_available"] is None


@pytest.mark.parametrize(
    ("verdicts", "host"),
    [([False, True], True), ([False, False], False), ([False, None], None), ([], None)],
)
def test_host_verdict(verdicts, host):
    assert nvidia_gpu_facts.any_nvenc([{"nvenc_available": v} for v in verdicts]) is host


def test_readings():
    assert nvidia_gpu_facts.number("81920 MiB") == 81920
    assert nvidia_gpu_facts.number("7 %") == 7
    assert nvidia_gpu_facts.number("N/A") is None
    assert nvidia_gpu_facts.number(None) is None
    assert nvidia_gpu_facts.enabled("Enabled") is True
    assert nvidia_gpu_facts.enabled("Disabled") is False
    assert nvidia_gpu_facts.enabled("N/A") is None
    element = ET.fromstring("<g><a> N/A </a><b>Requested functionality has been deprecated</b></g>")  # noqa: S314
    assert nvidia_gpu_facts.reading(element, "a") is None
    assert nvidia_gpu_facts.reading(element, "b") is None
    assert nvidia_gpu_facts.reading(element, "missing") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (sample("gt-1030.xml")[:4000], "no well-formed XML"),
        ("", "no well-formed XML"),
        ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.",
         "no well-formed XML"),
        ("<html><body>not nvidia-smi</body></html>", "expected <nvidia_smi_log>"),
    ],
)  # fmt: skip
def test_output_that_is_not_nvidia_smi_xml_is_refused(text, message):
    with pytest.raises(ValueError, match=message):
        parse_nvidia_smi_xml(text)


def test_output_listing_no_gpu_is_absent():
    facts = parse_nvidia_smi_xml(
        "<nvidia_smi_log><attached_gpus>0</attached_gpus></nvidia_smi_log>"
    )
    assert facts == nvidia_gpu_facts.absent("nvidia-smi lists no GPU (attached_gpus: 0)")
    assert facts["present"] is False
    assert facts["count"] == 0


# --- the module as Ansible runs it ------------------------------------------------------

ANSIBLE = shutil.which("ansible", path=str(Path(sys.executable).parent)) or shutil.which("ansible")
SYSTEM_PATH = ["/usr/local/bin", "/usr/bin", "/bin"]


def fake_nvidia_smi(directory: Path, output: str, rc: int = 0) -> Path:
    """An executable stand-in for nvidia-smi: checks its call, prints OUTPUT, exits RC."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "output").write_text(output, encoding="utf-8")
    script = directory / "nvidia-smi"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$LC_ALL $*" >> "{directory}/calls"\n'
        '[ "$LC_ALL" = C ] || { echo "LC_ALL is not C" >&2; exit 99; }\n'
        '[ "$*" = "-q -x" ] || { echo "unexpected arguments: $*" >&2; exit 98; }\n'
        f'cat "{directory}/output"\n'
        f"exit {rc}\n",
        encoding="utf-8",
    )
    script.chmod(0o755)
    return directory


def run_module(tmp_path: Path, path: list[str], args: str = "", check: bool = False):
    """`ansible localhost -m nvidia_gpu_facts`: its exit status, SUCCESS or FAILED!, the result."""
    assert ANSIBLE, "ansible is not installed next to this Python"
    env = {
        **os.environ,
        "PATH": os.pathsep.join([*path, str(Path(sys.executable).parent), *SYSTEM_PATH]),
        "ANSIBLE_CACHE_PLUGIN": "memory",
        "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
        "ANSIBLE_LOCALHOST_WARNING": "false",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-local"),
    }
    command = [ANSIBLE, "localhost", "-i", "localhost,", "-c", "local", "-M", "plugins/modules",
               "-m", "nvidia_gpu_facts", "-a", args,
               "-e", f"ansible_python_interpreter={sys.executable}"]  # fmt: skip
    if check:
        command.append("--check")
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert "=> " in done.stdout, done.stdout + done.stderr
    head, _, result = done.stdout.partition(" => ")
    return done.returncode, head.split("|")[-1].strip(), json.loads(result)


def test_module_reports_the_gpus(tmp_path):
    """Without NVML (here a library path that does not exist) the facts are the XML's."""
    fake = fake_nvidia_smi(tmp_path / "bin", sample("dual-rtx-a5000.xml"))
    library = tmp_path / "no-driver/libnvidia-ml.so.1"
    rc, status, result = run_module(tmp_path, [str(fake)], f"nvml_library={library}")
    assert (rc, status) == (0, "SUCCESS")
    assert result["changed"] is False
    facts = result["ansible_facts"]["nvidia_gpu"]
    nvml = facts.pop("nvml")
    assert nvml["library"] == str(library)
    assert nvml["error"].startswith(f"cannot load NVML: {library}: cannot open shared object")
    xml = json.loads(json.dumps(parse_nvidia_smi_xml(sample("dual-rtx-a5000.xml"))))
    assert xml.pop("nvml") is None
    assert facts == xml
    assert facts["count"] == 2
    assert (fake / "calls").read_text() == "C -q -x\n"


def test_module_in_check_mode_reports_the_same(tmp_path):
    fake = fake_nvidia_smi(tmp_path / "bin", sample("a100-sxm4-80gb-mig.xml"))
    rc, status, result = run_module(tmp_path, [str(fake)], check=True)
    assert (rc, status) == (0, "SUCCESS")
    assert result["changed"] is False
    assert result["ansible_facts"]["nvidia_gpu"]["gpus"][0]["name"] == "NVIDIA A100-SXM4-80GB"
    assert result["ansible_facts"]["nvidia_gpu"]["nvenc_available"] is False
    assert result["ansible_facts"]["nvidia_gpu"]["nvml"]["library"] == "libnvidia-ml.so.1"


def test_module_uses_the_given_path(tmp_path):
    fake = fake_nvidia_smi(tmp_path / "elsewhere", sample("gt-1030.xml"))
    rc, status, result = run_module(tmp_path, [], f"nvidia_smi_path={fake / 'nvidia-smi'}")
    assert (rc, status) == (0, "SUCCESS")
    assert result["ansible_facts"]["nvidia_gpu"]["gpus"][0]["name"] == "NVIDIA GeForce GT 1030"


def test_module_without_nvidia_smi_on_the_path_reports_absent(tmp_path):
    search = [str(tmp_path), str(Path(sys.executable).parent), *SYSTEM_PATH]
    if shutil.which("nvidia-smi", path=os.pathsep.join(search)):
        pytest.skip("a real nvidia-smi is installed on this machine")
    rc, status, result = run_module(tmp_path, [])
    assert (rc, status) == (0, "SUCCESS")
    facts = result["ansible_facts"]["nvidia_gpu"]
    assert facts["present"] is False
    assert facts["reason"] == "nvidia-smi not found on the PATH: no NVIDIA driver installed here"
    assert facts["gpus"] == []


def test_module_with_a_missing_path_reports_absent(tmp_path):
    rc, status, result = run_module(tmp_path, [], f"nvidia_smi_path={tmp_path}/nvidia-smi")
    assert (rc, status) == (0, "SUCCESS")
    assert result["ansible_facts"]["nvidia_gpu"]["present"] is False
    assert (
        result["ansible_facts"]["nvidia_gpu"]["reason"]
        == f"nvidia-smi not found at {tmp_path}/nvidia-smi"
    )


def test_module_requiring_a_gpu_fails_without_nvidia_smi(tmp_path):
    rc, status, result = run_module(
        tmp_path, [], f"require=true nvidia_smi_path={tmp_path}/nvidia-smi"
    )
    assert (rc, status) == (2, "FAILED!")
    assert result["msg"] == f"No usable NVIDIA GPU: nvidia-smi not found at {tmp_path}/nvidia-smi"


@pytest.mark.parametrize("require", [False, True])
def test_module_when_nvidia_smi_finds_no_device(tmp_path, require):
    fake = fake_nvidia_smi(tmp_path / "bin", "No devices were found\n", rc=6)
    rc, status, result = run_module(tmp_path, [str(fake)], f"require={require}")
    expected = f"{fake}/nvidia-smi -q -x exited 6: No devices were found"
    if require:
        assert (rc, status) == (2, "FAILED!")
        assert result["msg"] == f"No usable NVIDIA GPU: {expected}"
        assert result["rc"] == 6
    else:
        assert (rc, status) == (0, "SUCCESS")
        assert result["ansible_facts"]["nvidia_gpu"]["reason"] == expected
        assert result["ansible_facts"]["nvidia_gpu"]["present"] is False


def test_module_fails_on_output_that_is_not_xml_even_when_not_required(tmp_path):
    fake = fake_nvidia_smi(tmp_path / "bin", sample("gt-1030.xml")[:3000])
    rc, status, result = run_module(tmp_path, [str(fake)], "require=false")
    assert (rc, status) == (2, "FAILED!")
    assert result["msg"].startswith("nvidia-smi -q -x printed no well-formed XML")


def test_module_refuses_an_unknown_option(tmp_path):
    rc, status, result = run_module(tmp_path, [], "requires=true")
    assert (rc, status) == (2, "FAILED!")
    assert "requires" in result["msg"]


def test_ansible_doc_renders_the_module():
    rendered, doc = ansible_doc("nvidia_gpu_facts")
    options = doc["doc"]["options"]
    assert options["nvml_library"]["type"] == "str"
    assert options["nvml_library"]["default"] == "libnvidia-ml.so.1"
    for text in (
        "nvidia_smi_path",
        "require",
        "nvml_library",
        "libnvidia-ml.so.1",
        "nvmlDeviceGetEncoderCapacity",
        "check_mode",
        "facts",
        "nvenc_available",
        "EXAMPLES",
    ):
        assert text in rendered


# --- NVML, through the stand-in library -------------------------------------------------


@pytest.fixture
def nvml(monkeypatch, tmp_path):
    """Sets what the NVML stand-in answers: nvml(uuids, encoder, init=0); returns the file
    listing the NVML calls made."""
    log = tmp_path / "nvml-calls"

    def answers(uuids: list[str], encoder: list[str], init: int = 0) -> Path:
        monkeypatch.setenv("NVML_STUB_UUIDS", ",".join(uuids))
        monkeypatch.setenv("NVML_STUB_ENCODER", ",".join(encoder))
        monkeypatch.setenv("NVML_STUB_INIT", str(init))
        monkeypatch.setenv("NVML_STUB_LOG", str(log))
        return log

    return answers


def calls(log: Path) -> list[str]:
    return log.read_text(encoding="utf-8").split() if log.exists() else []


def uuids(name: str) -> list[str]:
    return [gpu["uuid"] for gpu in parse_nvidia_smi_xml(sample(name))["gpus"]]


def probed(name: str, library: Path, text: str | None = None) -> dict:
    """The facts of sample NAME (or TEXT) with the verdict of the NVML at LIBRARY."""
    facts = parse_nvidia_smi_xml(text or sample(name))
    return nvidia_gpu_facts.with_nvml(facts, nvidia_gpu_facts.probe_nvml(str(library)))


H264_CAPACITY = "for H.264 (nvmlDeviceGetEncoderCapacity)"


def test_nvml_not_supported_means_no_nvenc_on_a_data_centre_gpu(nvml_stub, nvml):
    """An idle data-centre GPU (the P100 sample; an H100 or H200 reads the same in the XML):
    the XML cannot tell, NVML's NVML_ERROR_NOT_SUPPORTED does."""
    log = nvml(uuids("tesla-p100-pcie-16gb.xml"), ["notsupported"])
    facts = probed("tesla-p100-pcie-16gb.xml", nvml_stub)
    gpu = facts["gpus"][0]
    assert gpu["nvenc_available"] is False
    assert gpu["nvenc_evidence"] == (
        f"NVML encoder capacity {H264_CAPACITY} is NVML_ERROR_NOT_SUPPORTED: no NVENC"
    )
    assert facts["nvenc_available"] is False
    assert facts["nvml"] == {"library": str(nvml_stub), "error": None}
    assert calls(log) == [
        "nvmlInit_v2",
        "nvmlDeviceGetCount_v2",
        "nvmlDeviceGetHandleByIndex_v2",
        "nvmlDeviceGetUUID",
        "nvmlDeviceGetEncoderCapacity",
        "nvmlShutdown",
    ]


def test_nvml_capacity_means_nvenc_on_an_rtx_card(nvml_stub, nvml):
    nvml(uuids("rtx-pro-6000-blackwell-maxq.xml"), ["ok:100"])
    facts = probed("rtx-pro-6000-blackwell-maxq.xml", nvml_stub)
    assert facts["gpus"][0]["nvenc_available"] is True
    assert facts["gpus"][0]["nvenc_evidence"] == (
        f"NVML encoder capacity 100 % {H264_CAPACITY}: this GPU has NVENC"
    )
    assert facts["nvenc_available"] is True


def test_nvml_answers_are_matched_to_the_xml_by_uuid(nvml_stub, nvml):
    """NVML lists the two A5000s in the other order, and a GPU the XML does not show."""
    first, second = uuids("dual-rtx-a5000.xml")
    log = nvml([second, "GPU-00000000-1111-2222-3333-444444444444", first],
               ["ok:37", "ok:100", "notsupported"])  # fmt: skip
    facts = probed("dual-rtx-a5000.xml", nvml_stub)
    assert [(g["uuid"], g["nvenc_available"]) for g in facts["gpus"]] == [
        (first, False),
        (second, True),
    ]
    assert facts["gpus"][0]["nvenc_evidence"].endswith("NVML_ERROR_NOT_SUPPORTED: no NVENC")
    assert facts["gpus"][1]["nvenc_evidence"].startswith("NVML encoder capacity 37 %")
    assert facts["nvenc_available"] is True
    assert calls(log).count("nvmlDeviceGetEncoderCapacity") == 3
    assert calls(log)[-1] == "nvmlShutdown"


def test_a_gpu_nvml_does_not_list_keeps_the_xml_verdict(nvml_stub, nvml):
    first, second = uuids("dual-rtx-a5000.xml")
    nvml([second], ["notsupported"])
    facts = probed("dual-rtx-a5000.xml", nvml_stub)
    xml = parse_nvidia_smi_xml(sample("dual-rtx-a5000.xml"))["gpus"][0]
    assert facts["gpus"][0]["nvenc_available"] is None
    assert facts["gpus"][0]["nvenc_evidence"] == (
        f"{xml['nvenc_evidence']} (NVML answered for no GPU with this UUID)"
    )
    assert facts["gpus"][1]["nvenc_available"] is False
    assert facts["nvenc_available"] is None


def test_without_the_nvml_library_the_verdict_is_the_xml(tmp_path):
    library = tmp_path / "libnvidia-ml.so.1"
    facts = probed("tesla-p100-pcie-16gb.xml", library)
    xml = parse_nvidia_smi_xml(sample("tesla-p100-pcie-16gb.xml"))
    assert facts["nvml"]["library"] == str(library)
    assert facts["nvml"]["error"].startswith(f"cannot load NVML: {library}: cannot open")
    assert {**facts, "nvml": None} == xml
    assert facts["gpus"][0]["nvenc_available"] is None


def test_a_library_that_is_not_nvml_is_no_answer():
    libc = ctypes.util.find_library("c")
    assert libc, "no C library found to stand for a library that is not NVML"
    probe = nvidia_gpu_facts.probe_nvml(libc)
    assert probe["gpus"] == []
    assert "undefined symbol: nvmlInit_v2" in probe["error"]


def test_when_nvml_cannot_initialise_the_verdict_is_the_xml(nvml_stub, nvml):
    log = nvml(uuids("gt-1030.xml"), ["ok:100"], init=9)
    facts = probed("gt-1030.xml", nvml_stub)
    assert facts["nvml"]["error"] == (
        f"{nvml_stub}: nvmlInit_v2 returned NVML_ERROR_DRIVER_NOT_LOADED (9)"
    )
    assert {**facts, "nvml": None} == parse_nvidia_smi_xml(sample("gt-1030.xml"))
    assert facts["gpus"][0]["nvenc_available"] is False  # the XML's: encoder_util N/A
    assert calls(log) == ["nvmlInit_v2"]  # no shutdown of what did not start


def test_zero_capacity_alone_decides_nothing(nvml_stub, nvml):
    """0 % free is an encoder in full use: the XML's running sessions confirm it."""
    nvml(uuids("tesla-p100-pcie-16gb.xml"), ["ok:0"])
    idle = probed("tesla-p100-pcie-16gb.xml", nvml_stub)["gpus"][0]
    assert idle["nvenc_available"] is None
    assert idle["nvenc_evidence"].startswith(
        f"NVML encoder capacity 0 % {H264_CAPACITY}: an encoder with no free capacity left"
    )
    xml = parse_nvidia_smi_xml(sample("tesla-p100-pcie-16gb.xml"))["gpus"][0]
    assert idle["nvenc_evidence"].endswith(f"; from the XML: {xml['nvenc_evidence']}")
    busy_xml = changed("tesla-p100-pcie-16gb.xml", "encoder_stats/session_count", "3")
    busy = probed("tesla-p100-pcie-16gb.xml", nvml_stub, busy_xml)["gpus"][0]
    assert busy["nvenc_available"] is True
    assert "3 encoder session(s) running" in busy["nvenc_evidence"]


def test_an_encoder_at_work_outweighs_not_supported(nvml_stub, nvml):
    nvml(uuids("tesla-p100-pcie-16gb.xml"), ["notsupported"])
    text = changed("tesla-p100-pcie-16gb.xml", "utilization/encoder_util", "37 %")
    gpu = probed("tesla-p100-pcie-16gb.xml", nvml_stub, text)["gpus"][0]
    assert gpu["nvenc_available"] is True
    assert gpu["nvenc_evidence"] == (
        f"NVML encoder capacity {H264_CAPACITY} is NVML_ERROR_NOT_SUPPORTED, yet the XML"
        " shows the encoder at work: encoder_util is 37 %"
    )


@pytest.mark.parametrize(
    ("encoder", "uuid_length", "note"),
    [
        (["error:15"], None, "(NVML: nvmlDeviceGetEncoderCapacity NVML_ERROR_GPU_IS_LOST (15))"),
        (["error:4"], None, "(NVML: nvmlDeviceGetEncoderCapacity NVML_ERROR_NO_PERMISSION (4))"),
        # A UUID longer than NVML_DEVICE_UUID_V2_BUFFER_SIZE leaves the GPU unmatched.
        (["ok:100"], 96, "(NVML answered for no GPU with this UUID)"),
    ],
    ids=["gpu-lost", "no-permission", "uuid-too-long"],
)  # fmt: skip
def test_a_gpu_nvml_fails_on_keeps_the_xml_verdict(nvml_stub, nvml, encoder, uuid_length, note):
    name = "tesla-p100-pcie-16gb.xml"
    uuid = uuids(name)[0]
    nvml([uuid.ljust(uuid_length, "0") if uuid_length else uuid], encoder)
    probe = nvidia_gpu_facts.probe_nvml(str(nvml_stub))
    if uuid_length:
        assert probe["gpus"][0]["failed"] == "nvmlDeviceGetUUID NVML_ERROR_INSUFFICIENT_SIZE (7)"
    xml = parse_nvidia_smi_xml(sample(name))
    gpu = nvidia_gpu_facts.with_nvml(xml, probe)["gpus"][0]
    assert gpu["nvenc_available"] is None  # the XML's: an idle encoder_util 0 %
    assert gpu["nvenc_evidence"] == f"{xml['gpus'][0]['nvenc_evidence']} {note}"


def test_module_asks_nvml_for_the_encoder(tmp_path, nvml_stub, nvml):
    fake = fake_nvidia_smi(tmp_path / "bin", sample("dual-rtx-a5000.xml"))
    first, second = uuids("dual-rtx-a5000.xml")
    log = nvml([second, first], ["notsupported", "ok:100"])
    rc, status, result = run_module(tmp_path, [str(fake)], f"nvml_library={nvml_stub}")
    assert (rc, status) == (0, "SUCCESS")
    assert result["changed"] is False
    facts = result["ansible_facts"]["nvidia_gpu"]
    assert facts["nvml"] == {"library": str(nvml_stub), "error": None}
    assert [(g["uuid"], g["nvenc_available"]) for g in facts["gpus"]] == [
        (first, True),
        (second, False),
    ]
    assert all(g["nvenc_evidence"].startswith("NVML encoder capacity") for g in facts["gpus"])
    assert facts["nvenc_available"] is True
    assert calls(log)[0] == "nvmlInit_v2"
    assert calls(log)[-1] == "nvmlShutdown"


def test_module_in_check_mode_reports_no_nvenc_on_a_data_centre_gpu(tmp_path, nvml_stub, nvml):
    fake = fake_nvidia_smi(tmp_path / "bin", sample("tesla-p100-pcie-16gb.xml"))
    nvml(uuids("tesla-p100-pcie-16gb.xml"), ["notsupported"])
    rc, status, result = run_module(tmp_path, [str(fake)], f"nvml_library={nvml_stub}", check=True)
    assert (rc, status) == (0, "SUCCESS")
    assert result["ansible_facts"]["nvidia_gpu"]["nvenc_available"] is False
    assert result["ansible_facts"]["nvidia_gpu"]["gpus"][0]["nvenc_evidence"].startswith(
        "NVML encoder capacity"
    )


def test_module_falls_back_to_the_xml_when_nvml_cannot_start(tmp_path, nvml_stub, nvml):
    fake = fake_nvidia_smi(tmp_path / "bin", sample("a100-sxm4-80gb-mig.xml"))
    nvml(uuids("a100-sxm4-80gb-mig.xml"), ["ok:100"], init=18)
    rc, status, result = run_module(tmp_path, [str(fake)], f"nvml_library={nvml_stub}")
    assert (rc, status) == (0, "SUCCESS")
    facts = result["ansible_facts"]["nvidia_gpu"]
    assert facts["nvml"]["error"].endswith("NVML_ERROR_LIB_RM_VERSION_MISMATCH (18)")
    assert facts["nvenc_available"] is False  # the XML's: every MIG instance has 0 encoders
    assert facts["gpus"][0]["nvenc_evidence"] == "all 4 MIG instances report encoder_count 0"
