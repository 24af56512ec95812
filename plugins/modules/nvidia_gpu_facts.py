#!/usr/bin/python
# SPDX-License-Identifier: MIT
"""Gather NVIDIA GPU facts from `nvidia-smi -q -x`, and ask NVML what the XML cannot tell."""

from __future__ import annotations

DOCUMENTATION = r"""
module: nvidia_gpu_facts
short_description: Gather NVIDIA GPU facts from nvidia-smi, including whether NVENC is there
description:
  - Runs C(nvidia-smi -q -x) (with C(LC_ALL=C)) and returns the driver and CUDA versions and,
    per GPU, its model, UUID, PCI bus id, memory, persistence mode, ECC mode, compute mode and
    whether it has a hardware video encoder (NVENC), under C(ansible_facts.nvidia_gpu).
  - Whether each GPU has NVENC is asked of NVML itself (C(nvml_library), loaded with
    Python's ctypes; no Python package needed), matched to the XML's GPUs by UUID.
    nvml.h documents C(nvmlDeviceGetEncoderCapacity) as answering
    C(NVML_ERROR_NOT_SUPPORTED) for a device without the encoder asked for (H.264 here),
    as on data-centre GPUs such as the H100 and H200, so that answer is C(false); a
    capacity above 0 % is an encoder, C(true). A capacity of 0 % is an encoder with no
    free capacity left, which alone decides nothing, so that GPU keeps the XML's verdict;
    so does a GPU whose observed encoder use (below) contradicts
    C(NVML_ERROR_NOT_SUPPORTED).
  - Where NVML cannot be loaded or initialised, or gives no answer for a GPU, the verdict
    comes from evidence in the XML only and is null when there is none. C(true) when the
    GPU's MIG instances report encoders (C(encoder_count)), an encoder session is running
    (C(encoder_stats/session_count)) or the encoder is busy (C(encoder_util) above 0 %).
    C(false) when every MIG instance reports C(encoder_count) 0, or when C(encoder_util)
    is N/A while C(gpu_util) is reported (NVML has no encoder to measure, as on a GeForce
    GT 1030).
  - In the XML, an idle GPU reporting C(encoder_util) 0 % is no evidence either way. GPUs
    without NVENC (Tesla P100, H100, H200) report exactly what GPUs with NVENC (RTX A5000,
    RTX PRO 6000) report when idle, so without NVML their verdict is null, not a guess
    from the model name.
  - Changes nothing on the host.
options:
  nvidia_smi_path:
    description:
      - Path of the nvidia-smi executable.
      - Found on the PATH when not given.
    type: path
  require:
    description:
      - Fail when nvidia-smi is missing, fails, or lists no GPU.
      - When false, such a host gets C(present=false) and a C(reason) instead.
      - Output that is not nvidia-smi XML fails the task either way.
    type: bool
    default: false
  nvml_library:
    description:
      - The NVML shared library to ask for the encoder verdict, a file name that the
        dynamic loader searches for or a path.
      - Every NVIDIA driver installs C(libnvidia-ml.so.1); nvidia-smi itself uses it.
      - When it cannot be loaded or answers with an error, the verdict falls back to the
        XML and C(nvml.error) says why.
    type: str
    default: libnvidia-ml.so.1
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  facts:
    support: full
  idempotent:
    support: full
"""

EXAMPLES = r"""
- name: Gather the GPU facts
  nvidia_gpu_facts:

- name: Gather the GPU facts of a host that must have a GPU
  nvidia_gpu_facts:
    require: true

- name: Gather the GPU facts, asking an NVML library outside the loader's search path
  nvidia_gpu_facts:
    nvml_library: /usr/local/nvidia/lib64/libnvidia-ml.so.1

- name: Use NVENC only where NVML or the XML shows an encoder
  ansible.builtin.set_fact:
    video_encoder: >-
      {{ 'h264_nvenc' if ansible_facts['nvidia_gpu']['nvenc_available'] else 'libx264' }}
"""

RETURN = r"""
ansible_facts:
  description: The GPU facts.
  returned: always
  type: dict
  contains:
    nvidia_gpu:
      description: What nvidia-smi reports, or why there is nothing to report.
      returned: always
      type: dict
      contains:
        present:
          description: Whether nvidia-smi ran and listed at least one GPU.
          type: bool
        reason:
          description: Why C(present) is false; null when it is true.
          type: str
        count:
          description: Number of GPUs listed.
          type: int
        driver_version:
          description: NVIDIA driver version; null when the output lacks it.
          type: str
        cuda_version:
          description: Highest CUDA version the driver supports; null when absent.
          type: str
        nvenc_available:
          description:
            - True when any GPU has an encoder, false when every GPU has none,
              null when neither NVML nor the XML tells for some GPU and none has one.
          type: bool
        nvml:
          description:
            - What the NVML probe answered; null when it was not run (no GPU listed).
            - C(library) is the library asked, C(error) why NVML gave no answer at all
              (null when it answered; a single GPU's failure is in its C(nvenc_evidence)).
          type: dict
        gpus:
          description:
            - One entry per GPU in nvidia-smi's order (its index, by PCI bus id).
            - Keys index, name, uuid, pci_bus_id, minor_number, architecture,
              memory_total_mib, memory_used_mib, memory_free_mib, persistence_mode,
              ecc (current and pending, each true, false or null), compute_mode, mig_mode,
              encoder_util_percent, encoder_sessions, nvenc_available and nvenc_evidence
              (what the verdict rests on, starting C(NVML encoder capacity) when NVML
              decided it, else the XML fields behind it).
          type: list
          elements: dict
  sample:
    nvidia_gpu:
      present: true
      reason: null
      count: 1
      driver_version: 590.44.01
      cuda_version: "13.1"
      nvenc_available: true
      nvml: {library: libnvidia-ml.so.1, error: null}
      gpus:
        - index: 0
          name: NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition
          uuid: GPU-12345678-aaaa-bbbb-cccc-0123456789ab
          pci_bus_id: 00000000:61:00.0
          memory_total_mib: 97887
          persistence_mode: true
          ecc: {current: false, pending: false}
          compute_mode: Default
          nvenc_available: true
          nvenc_evidence: >-
            NVML encoder capacity 100 % for H.264 (nvmlDeviceGetEncoderCapacity):
            this GPU has NVENC
"""

import ctypes  # noqa: E402  Ansible module layout: DOCUMENTATION precedes imports
import os  # noqa: E402  as above
import xml.etree.ElementTree as ET  # noqa: E402, S405  parses the local nvidia-smi's output

from ansible.module_utils.basic import AnsibleModule  # noqa: E402  as above

# Values nvidia-smi writes where a reading is unavailable.
UNAVAILABLE = frozenset(
    {
        "",
        "N/A",
        "[N/A]",
        "Not Supported",
        "[Not Supported]",
        "Unknown Error",
        "Requested functionality has been deprecated",
    }
)


def reading(element: ET.Element | None, path: str) -> str | None:
    """The stripped text at path, or None when missing or unavailable."""
    if element is None:
        return None
    found = element.find(path)
    if found is None or found.text is None:
        return None
    value = found.text.strip()
    return None if value in UNAVAILABLE else value


def number(value: str | None) -> int | None:
    """The leading integer of '81920 MiB', '7 %' or '0'; None when there is none."""
    if value is None:
        return None
    head = value.split()[0] if value.split() else ""
    return int(head) if head.isdigit() else None


def enabled(value: str | None) -> bool | None:
    return {"Enabled": True, "Disabled": False}.get(value or "")


def encoder_verdict(gpu: ET.Element) -> tuple[bool | None, str]:
    """Whether this GPU has NVENC, from evidence in its XML only, and the evidence."""
    counts = [number(reading(mig, "device_attributes/shared/encoder_count"))
              for mig in gpu.findall("mig_devices/mig_device")]  # fmt: skip
    counts = [count for count in counts if count is not None]
    if counts:
        if any(counts):
            return True, f"MIG instances report {sum(counts)} encoder(s) (encoder_count)"
        return False, f"all {len(counts)} MIG instances report encoder_count 0"
    sessions = number(reading(gpu, "encoder_stats/session_count"))
    if sessions:
        return True, f"{sessions} encoder session(s) running (encoder_stats/session_count)"
    raw = gpu.find("utilization/encoder_util")
    util = number(reading(gpu, "utilization/encoder_util"))
    if util:
        return True, f"encoder_util is {util} %"
    if raw is None:
        return None, "no utilization/encoder_util in this output"
    if util is None and number(reading(gpu, "utilization/gpu_util")) is not None:
        return False, "encoder_util is N/A while gpu_util is reported: NVML has no encoder"
    if util is None:
        return None, "encoder_util and gpu_util are both N/A (MIG or vGPU): no evidence"
    return None, "encoder_util 0 % with no session: idle GPUs with and without NVENC report that"


def parse_gpu(gpu: ET.Element, index: int) -> dict[str, object]:
    nvenc, evidence = encoder_verdict(gpu)
    return {
        "index": index,
        "name": reading(gpu, "product_name"),
        "uuid": reading(gpu, "uuid"),
        "pci_bus_id": reading(gpu, "pci/pci_bus_id") or gpu.get("id"),
        "minor_number": number(reading(gpu, "minor_number")),
        "architecture": reading(gpu, "product_architecture"),
        "memory_total_mib": number(reading(gpu, "fb_memory_usage/total")),
        "memory_used_mib": number(reading(gpu, "fb_memory_usage/used")),
        "memory_free_mib": number(reading(gpu, "fb_memory_usage/free")),
        "persistence_mode": enabled(reading(gpu, "persistence_mode")),
        "ecc": {
            "current": enabled(reading(gpu, "ecc_mode/current_ecc")),
            "pending": enabled(reading(gpu, "ecc_mode/pending_ecc")),
        },
        "compute_mode": reading(gpu, "compute_mode"),
        "mig_mode": enabled(reading(gpu, "mig_mode/current_mig")),
        "encoder_util_percent": number(reading(gpu, "utilization/encoder_util")),
        "encoder_sessions": number(reading(gpu, "encoder_stats/session_count")),
        "nvenc_available": nvenc,
        "nvenc_evidence": evidence,
    }


def any_nvenc(gpus: list[dict[str, object]]) -> bool | None:
    verdicts = [gpu["nvenc_available"] for gpu in gpus]
    if any(verdict is True for verdict in verdicts):
        return True
    if verdicts and all(verdict is False for verdict in verdicts):
        return False
    return None


def absent(reason: str) -> dict[str, object]:
    """The facts of a host without a usable NVIDIA GPU."""
    return {
        "present": False,
        "reason": reason,
        "count": 0,
        "driver_version": None,
        "cuda_version": None,
        "nvenc_available": None,
        "nvml": None,
        "gpus": [],
    }


def parse_nvidia_smi_xml(text: str) -> dict[str, object]:
    """The facts in the output of `nvidia-smi -q -x`; ValueError when it is not that output."""
    try:
        root = ET.fromstring(text)  # noqa: S314  output of the local nvidia-smi, no DTD fetched
    except ET.ParseError as error:
        raise ValueError(f"nvidia-smi -q -x printed no well-formed XML: {error}") from error
    if root.tag != "nvidia_smi_log":
        raise ValueError(f"nvidia-smi -q -x printed <{root.tag}>, expected <nvidia_smi_log>")
    gpus = [parse_gpu(gpu, index) for index, gpu in enumerate(root.findall("gpu"))]
    if not gpus:
        attached = reading(root, "attached_gpus")
        return absent(f"nvidia-smi lists no GPU (attached_gpus: {attached or 'absent'})")
    return {
        "present": True,
        "reason": None,
        "count": len(gpus),
        "driver_version": reading(root, "driver_version"),
        "cuda_version": reading(root, "cuda_version"),
        "nvenc_available": any_nvenc(gpus),
        "nvml": None,
        "gpus": gpus,
    }


# NVML, as declared in nvml.h (NVML API 12): the return codes named in this module's
# answers, the H.264 member of nvmlEncoderType_t, and the UUID buffer size.
NVML_SUCCESS = 0
NVML_ERROR_NOT_SUPPORTED = 3
NVML_RETURN_NAMES = {
    0: "NVML_SUCCESS",
    1: "NVML_ERROR_UNINITIALIZED",
    2: "NVML_ERROR_INVALID_ARGUMENT",
    3: "NVML_ERROR_NOT_SUPPORTED",
    4: "NVML_ERROR_NO_PERMISSION",
    6: "NVML_ERROR_NOT_FOUND",
    7: "NVML_ERROR_INSUFFICIENT_SIZE",
    9: "NVML_ERROR_DRIVER_NOT_LOADED",
    12: "NVML_ERROR_LIBRARY_NOT_FOUND",
    13: "NVML_ERROR_FUNCTION_NOT_FOUND",
    15: "NVML_ERROR_GPU_IS_LOST",
    17: "NVML_ERROR_OPERATING_SYSTEM",
    18: "NVML_ERROR_LIB_RM_VERSION_MISMATCH",
    999: "NVML_ERROR_UNKNOWN",
}
NVML_ENCODER_QUERY_H264 = 0
NVML_DEVICE_UUID_V2_BUFFER_SIZE = 96


def nvml_return_name(code: int) -> str:
    return f"{NVML_RETURN_NAMES.get(code, 'NVML error')} ({code})"


def bind_nvml(library: str) -> ctypes.CDLL:
    """The NVML library with the signatures of the calls made here; OSError or
    AttributeError when it cannot be loaded or lacks one of them."""
    nvml = ctypes.CDLL(library)
    device = ctypes.c_void_p  # nvmlDevice_t, an opaque pointer
    signatures = {
        "nvmlInit_v2": [],
        "nvmlShutdown": [],
        "nvmlDeviceGetCount_v2": [ctypes.POINTER(ctypes.c_uint)],
        "nvmlDeviceGetHandleByIndex_v2": [ctypes.c_uint, ctypes.POINTER(device)],
        "nvmlDeviceGetUUID": [device, ctypes.c_char_p, ctypes.c_uint],
        # (device, nvmlEncoderType_t encoderQueryType, unsigned int *encoderCapacity)
        "nvmlDeviceGetEncoderCapacity": [device, ctypes.c_int, ctypes.POINTER(ctypes.c_uint)],
    }
    for name, argtypes in signatures.items():
        function = getattr(nvml, name)
        function.argtypes = argtypes
        function.restype = ctypes.c_int  # nvmlReturn_t
    return nvml


def nvml_encoder(nvml: ctypes.CDLL, index: int) -> dict[str, object]:
    """NVML's answer for the GPU at INDEX: its UUID and H.264 encoder capacity."""
    # A GPU whose UUID NVML cannot give is matched to none in the XML: "failed" says why.
    answer: dict[str, object] = {"index": index, "uuid": None, "code": None, "capacity": None}
    handle = ctypes.c_void_p()
    code = nvml.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(handle))
    if code != NVML_SUCCESS:
        return {**answer, "failed": f"nvmlDeviceGetHandleByIndex_v2 {nvml_return_name(code)}"}
    uuid = ctypes.create_string_buffer(NVML_DEVICE_UUID_V2_BUFFER_SIZE)
    code = nvml.nvmlDeviceGetUUID(handle, uuid, NVML_DEVICE_UUID_V2_BUFFER_SIZE)
    if code != NVML_SUCCESS:
        return {**answer, "failed": f"nvmlDeviceGetUUID {nvml_return_name(code)}"}
    capacity = ctypes.c_uint()
    code = nvml.nvmlDeviceGetEncoderCapacity(
        handle, NVML_ENCODER_QUERY_H264, ctypes.byref(capacity)
    )
    return {
        **answer,
        "uuid": uuid.value.decode("ascii", "replace"),
        "code": code,
        "capacity": capacity.value if code == NVML_SUCCESS else None,
        "failed": None,
    }


def probe_nvml(library: str) -> dict[str, object]:
    """Ask NVML through ctypes, for every GPU it lists, its UUID and H.264 encoder capacity.

    {"library", "error": why there is no answer at all or None, "gpus": [one answer per
    GPU: index, uuid, code (nvmlDeviceGetEncoderCapacity's return), capacity (percent
    when it succeeded), failed (the call that failed before it, or None)]}."""

    def no_answer(error: str) -> dict[str, object]:
        return {"library": library, "error": error, "gpus": []}

    try:
        nvml = bind_nvml(library)
    except (OSError, AttributeError) as error:
        return no_answer(f"cannot load NVML: {error}")
    code = nvml.nvmlInit_v2()
    if code != NVML_SUCCESS:
        return no_answer(f"{library}: nvmlInit_v2 returned {nvml_return_name(code)}")
    try:
        count = ctypes.c_uint()
        code = nvml.nvmlDeviceGetCount_v2(ctypes.byref(count))
        if code != NVML_SUCCESS:
            return no_answer(f"{library}: nvmlDeviceGetCount_v2 returned {nvml_return_name(code)}")
        return {
            "library": library,
            "error": None,
            "gpus": [nvml_encoder(nvml, index) for index in range(count.value)],
        }
    finally:
        nvml.nvmlShutdown()


def nvml_verdict(
    xml: tuple[bool | None, str], answer: dict[str, object] | None
) -> tuple[bool | None, str]:
    """A GPU's NVENC verdict and evidence from NVML's answer for it, and from the XML's
    verdict (XML) where NVML does not decide it."""
    verdict, evidence = xml
    if answer is None:
        return verdict, f"{evidence} (NVML answered for no GPU with this UUID)"
    code, capacity = answer["code"], answer["capacity"]
    call = "for H.264 (nvmlDeviceGetEncoderCapacity)"
    if code == NVML_SUCCESS and capacity:
        return True, f"NVML encoder capacity {capacity} % {call}: this GPU has NVENC"
    if code == NVML_SUCCESS:
        return verdict, (
            f"NVML encoder capacity 0 % {call}: an encoder with no free capacity left,"
            f" not decisive alone; from the XML: {evidence}"
        )
    if code == NVML_ERROR_NOT_SUPPORTED and verdict is True:
        return True, (
            f"NVML encoder capacity {call} is NVML_ERROR_NOT_SUPPORTED, yet the XML shows"
            f" the encoder at work: {evidence}"
        )
    if code == NVML_ERROR_NOT_SUPPORTED:
        return False, f"NVML encoder capacity {call} is NVML_ERROR_NOT_SUPPORTED: no NVENC"
    return verdict, f"{evidence} (NVML: nvmlDeviceGetEncoderCapacity {nvml_return_name(code)})"


def with_nvml(facts: dict[str, object], probe: dict[str, object]) -> dict[str, object]:
    """FACTS from the XML with each GPU's NVENC verdict decided by PROBE where it can be,
    matching GPUs by UUID, and the probe's outcome under nvml."""
    outcome = {"library": probe["library"], "error": probe["error"]}
    if probe["error"] is not None or not facts["present"]:
        return {**facts, "nvml": outcome}
    answers = {str(a["uuid"]).lower(): a for a in probe["gpus"] if a["uuid"]}
    gpus = []
    for gpu in facts["gpus"]:
        answer = answers.get(str(gpu["uuid"]).lower()) if gpu["uuid"] else None
        nvenc, evidence = nvml_verdict((gpu["nvenc_available"], gpu["nvenc_evidence"]), answer)
        gpus.append({**gpu, "nvenc_available": nvenc, "nvenc_evidence": evidence})
    return {**facts, "nvenc_available": any_nvenc(gpus), "nvml": outcome, "gpus": gpus}


class NvidiaGpuFacts:
    """Runs nvidia-smi on the host and turns its answer into facts."""

    def __init__(self, module: AnsibleModule) -> None:
        self.module = module

    def executable(self) -> str | None:
        path = self.module.params["nvidia_smi_path"]
        if path is None:
            return self.module.get_bin_path("nvidia-smi")
        return path if os.path.isfile(path) and os.access(path, os.X_OK) else None

    def gather(self) -> dict[str, object]:
        executable = self.executable()
        if executable is None:
            given = self.module.params["nvidia_smi_path"]
            where = f"at {given}" if given else "on the PATH: no NVIDIA driver installed here"
            return self.missing(f"nvidia-smi not found {where}")
        command = [executable, "-q", "-x"]
        rc, stdout, stderr = self.module.run_command(command, environ_update={"LC_ALL": "C"})
        if rc != 0:
            said = " ".join((stderr or stdout).split())[:300] or "no output"
            return self.missing(f"{' '.join(command)} exited {rc}: {said}", rc, stdout, stderr)
        try:
            facts = parse_nvidia_smi_xml(stdout)
        except ValueError as error:
            self.module.fail_json(msg=str(error), rc=rc, stdout=stdout[:2000], stderr=stderr)
        if not facts["present"]:
            return self.missing(str(facts["reason"]), rc, stdout, stderr)
        return with_nvml(facts, probe_nvml(self.module.params["nvml_library"]))

    def missing(self, reason: str, *command_result: object) -> dict[str, object]:
        """Facts saying why there is no GPU, or a failure when one is required."""
        if self.module.params["require"]:
            said = dict(zip(("rc", "stdout", "stderr"), command_result, strict=False))
            self.module.fail_json(msg=f"No usable NVIDIA GPU: {reason}", **said)
        return absent(reason)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "nvidia_smi_path": {"type": "path"},
            "require": {"type": "bool", "default": False},
            "nvml_library": {"type": "str", "default": "libnvidia-ml.so.1"},
        },
        supports_check_mode=True,
    )
    facts = NvidiaGpuFacts(module).gather()
    module.exit_json(changed=False, ansible_facts={"nvidia_gpu": facts})


if __name__ == "__main__":
    main()
