#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU, run from anywhere in the repository:
#
#   scripts/gpu-check.sh
#
# Prints nvidia-smi and a summary of `nvidia-smi -q -x`; gathers the facts with
# plugins/modules/nvidia_gpu_facts.py against the real nvidia-smi and the real NVML
# (through `ansible localhost` when ansible is importable, else the module's own XML
# parser and NVML probe under plain python3) and asserts a GPU, its model and the driver
# version; prints the NVENC verdict and its evidence; asks NVML again through the
# module's own ctypes probe (probe_nvml) and prints its raw answer per GPU, requiring an
# answer for every GPU nvidia-smi lists; runs whatever of the NVIDIA container toolkit is
# installed (nvidia-ctk, CDI spec, nvidia-container-cli); checks the /dev/nvidia* nodes
# and their /dev/char links; and runs a torch CUDA smoke test where torch is importable.
#
# Writes ${OUT:-/tmp/gpu-check}/gpu-check.log, gpu-check.json (the summary),
# nvidia-smi-q.xml, nvidia_gpu_facts.json and nvml-probe.json. Exit status: 0 every
# required check passed, 1 a required check failed, 2 no NVIDIA GPU (fails fast).
#
# Each step runs under `timeout`; the whole run stays within GPU_CHECK_BUDGET seconds
# (default 270). GPU_CHECK_REQUIRE_TOOLKIT=1 makes the toolkit and /dev/char checks
# required (on a server that runs GPU containers); by default they only warn.
# GPU_CHECK_NVML_LIBRARY is the NVML library the module asks (default libnvidia-ml.so.1,
# which every NVIDIA driver installs).
# shellcheck disable=SC2317  # the step functions run through `bash -c` (export -f)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

export GPU_CHECK_OUT=${OUT:-/tmp/gpu-check}
export GPU_CHECK_NVML_LIBRARY=${GPU_CHECK_NVML_LIBRARY:-libnvidia-ml.so.1}
mkdir -p "$GPU_CHECK_OUT" || exit 1
log=$GPU_CHECK_OUT/gpu-check.log
results=$GPU_CHECK_OUT/steps.tsv
: >"$log"
: >"$results"
budget=${GPU_CHECK_BUDGET:-270}
toolkit_required=no
[ "${GPU_CHECK_REQUIRE_TOOLKIT:-0}" = 1 ] && toolkit_required=yes
facts_via=none
failed=0

say() { printf '%s\n' "$*" | tee -a "$log"; }

# record NAME REQUIRED STATUS RC DETAIL: one line of the summary's step list.
record() {
  local detail=${5//$'\t'/ }
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "${detail//$'\n'/ }" >>"$results"
  if [ "$2" = yes ] && [ "$3" != pass ]; then failed=1; fi
}

# step NAME REQUIRED SECONDS COMMAND...: run COMMAND under timeout, log its output, record it.
step() {
  local name=$1 required=$2 limit=$3 left rc status detail
  shift 3
  left=$((budget - SECONDS))
  if ((left < 5)); then
    say "--- $name: not run, the ${budget}s budget is spent"
    record "$name" "$required" skip "" "time budget spent"
    return 1
  fi
  ((limit > left)) && limit=$left
  say "--- $name"
  timeout --kill-after=5 "$limit" "$@" >"$GPU_CHECK_OUT/step.out" 2>&1
  rc=$?
  tee -a "$log" <"$GPU_CHECK_OUT/step.out"
  status=pass detail=""
  if ((rc != 0)); then
    status=fail
    detail=$(tail -n 3 "$GPU_CHECK_OUT/step.out")
    ((rc == 124 || rc == 137)) && detail="timed out after ${limit}s"
    say "    => ${name}: FAILED (exit $rc)$([ "$required" = yes ] || echo ', not required')"
  fi
  record "$name" "$required" "$status" "$rc" "$detail"
  return "$rc"
}

skip() {
  say "--- $1: skipped, $2"
  record "$1" no skip "" "$2"
}

# finish CODE: write gpu-check.json and exit with CODE.
finish() {
  local code=$1
  python3 - "$results" "$GPU_CHECK_OUT" "$code" "$facts_via" "$SECONDS" <<'PY' | tee -a "$log"
import json
import os
import sys

results, out, code, facts_via, seconds = sys.argv[1:6]
steps = []
for line in open(results, encoding="utf-8"):
    name, required, status, rc, detail = line.rstrip("\n").split("\t")
    steps.append({"name": name, "required": required == "yes", "status": status,
                  "rc": int(rc) if rc else None, "detail": detail})
facts_file = os.path.join(out, "nvidia_gpu_facts.json")
facts = json.load(open(facts_file, encoding="utf-8")) if os.path.exists(facts_file) else None
summary = {
    "ok": code == "0",
    "exit_code": int(code),
    "gpu_present": bool(facts and facts.get("present")),
    "facts_via": facts_via,
    "nvenc_available": facts.get("nvenc_available") if facts else None,
    "failed_required": [s["name"] for s in steps if s["required"] and s["status"] != "pass"],
    "warnings": [s["name"] for s in steps if not s["required"] and s["status"] == "fail"],
    "seconds": int(seconds),
    "steps": steps,
    "facts": facts,
}
json.dump(summary, open(os.path.join(out, "gpu-check.json"), "w", encoding="utf-8"), indent=2)
verdict = "PASS" if summary["ok"] else "FAIL"
print(f"gpu-check: {verdict} in {seconds}s; required failed: {summary['failed_required'] or 'none'};"
      f" warnings: {summary['warnings'] or 'none'}; summary {out}/gpu-check.json")
PY
  rm -f "$GPU_CHECK_OUT/step.out" "$results"  # both are in the log and the summary now
  exit "$code"
}

facts_via_ansible() {
  local result=$GPU_CHECK_OUT/ansible-result.txt
  ANSIBLE_CACHE_PLUGIN=memory ANSIBLE_LOCALHOST_WARNING=false ANSIBLE_CALLBACK_RESULT_FORMAT=json \
    ansible localhost -i localhost, -c local -M plugins/modules -m nvidia_gpu_facts \
    -a "require=true nvml_library=$GPU_CHECK_NVML_LIBRARY" \
    -e "ansible_python_interpreter=$(command -v python3)" >"$result"
  local rc=$?
  cat "$result"
  ((rc == 0)) || return "$rc"
  python3 -c 'import json, sys
text = open(sys.argv[1], encoding="utf-8").read()
result = json.loads(text[text.index("=> ") + 3:])
json.dump(result["ansible_facts"]["nvidia_gpu"], open(sys.argv[2], "w"), indent=2)' \
    "$result" "$GPU_CHECK_OUT/nvidia_gpu_facts.json"
}

# module_helper ACTION ARGS...: the module's own helpers under plain python3, no ansible:
#   facts XML LIBRARY OUT  the facts of nvidia-smi's XML with NVML's verdicts, into OUT
#   probe LIBRARY FACTS OUT  NVML's raw answers (probe_nvml) into OUT, printed; fails unless
#                            NVML answered for every GPU in FACTS
module_helper() {
  python3 - plugins/modules/nvidia_gpu_facts.py "$@" <<'PY'
import importlib.util
import json
import sys
import types

# Stand in for the one ansible import the module makes at load time; its XML parser and
# NVML probe use nothing of ansible.
for name in ("ansible", "ansible.module_utils", "ansible.module_utils.basic"):
    sys.modules.setdefault(name, types.ModuleType(name))
sys.modules["ansible.module_utils.basic"].AnsibleModule = object
spec = importlib.util.spec_from_file_location("nvidia_gpu_facts", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
action, args = sys.argv[2], sys.argv[3:]

if action == "facts":
    xml, library, out = args
    with open(xml, encoding="utf-8") as handle:
        facts = module.parse_nvidia_smi_xml(handle.read())
    facts = module.with_nvml(facts, module.probe_nvml(library))
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(facts, handle, indent=2)
    sys.exit(0)

library, facts_file, out = args
probe = module.probe_nvml(library)
with open(out, "w", encoding="utf-8") as handle:
    json.dump(probe, handle, indent=2)
print(f"NVML ({library}) through the module's ctypes probe:")
if probe["error"] is not None:
    print(f"FAIL: NVML gave no answer: {probe['error']}")
    sys.exit(1)
answered = set()
for gpu in probe["gpus"]:
    if gpu["failed"]:
        said = f"no answer: {gpu['failed']}"
    elif gpu["code"] == module.NVML_SUCCESS:
        said = f"H.264 encoder capacity {gpu['capacity']} %"
        answered.add(gpu["uuid"].lower())
    else:  # NVML_ERROR_NOT_SUPPORTED answers (no encoder); any other code does not
        said = f"H.264 encoder capacity {module.nvml_return_name(gpu['code'])}"
        if gpu["code"] == module.NVML_ERROR_NOT_SUPPORTED:
            answered.add(gpu["uuid"].lower())
    print(f"  GPU {gpu['index']} {gpu['uuid']}: {said}")
with open(facts_file, encoding="utf-8") as handle:
    listed = [gpu["uuid"] for gpu in json.load(handle).get("gpus", [])]
missing = [uuid for uuid in listed if not uuid or uuid.lower() not in answered]
for uuid in missing:
    print(f"FAIL: NVML gave no encoder answer for {uuid}, which nvidia-smi lists")
if not listed:
    print("FAIL: the facts list no GPU to compare NVML's answers with")
sys.exit(1 if missing or not listed else 0)
PY
}

facts_via_python() {
  module_helper facts "$GPU_CHECK_OUT/nvidia-smi-q.xml" "$GPU_CHECK_NVML_LIBRARY" \
    "$GPU_CHECK_OUT/nvidia_gpu_facts.json"
}

nvml_probe() {
  module_helper probe "$GPU_CHECK_NVML_LIBRARY" "$GPU_CHECK_OUT/nvidia_gpu_facts.json" \
    "$GPU_CHECK_OUT/nvml-probe.json"
}

assert_facts() {
  python3 - "$GPU_CHECK_OUT/nvidia_gpu_facts.json" <<'PY'
import json
import sys

facts = json.load(open(sys.argv[1], encoding="utf-8"))
print(json.dumps(facts, indent=2))
problems = []
if not facts.get("present"):
    problems.append(f"no GPU: {facts.get('reason')}")
if (facts.get("count") or 0) < 1:
    problems.append(f"count is {facts.get('count')}")
if not facts.get("driver_version"):
    problems.append("no driver_version")
for gpu in facts.get("gpus", []):
    if not gpu.get("name"):
        problems.append(f"GPU {gpu.get('index')} has no model name")
    verdict = {True: "yes", False: "no", None: "unknown"}[gpu.get("nvenc_available")]
    print(f"NVENC on GPU {gpu.get('index')} ({gpu.get('name')}): {verdict}"
          f" - {gpu.get('nvenc_evidence')}")
verdict = {True: "yes", False: "no", None: "unknown"}[facts.get("nvenc_available")]
nvml = facts.get("nvml") or {}
source = ("NVML where it decided, else nvidia-smi XML" if nvml and nvml.get("error") is None
          else f"nvidia-smi XML; NVML gave no answer: {nvml.get('error', 'not asked')}")
print(f"NVENC available on this host: {verdict} (from {source})")
for problem in problems:
    print(f"FAIL: {problem}")
sys.exit(1 if problems else 0)
PY
}

cdi_generate() {
  nvidia-ctk cdi generate --output="$GPU_CHECK_OUT/nvidia.yaml" || return
  echo "CDI devices in $GPU_CHECK_OUT/nvidia.yaml:"
  awk '/^kind:/ {kind = $2} /^[[:space:]]*- name:/ {gsub(/"/, "", $3); print "  " kind "=" $3}' \
    "$GPU_CHECK_OUT/nvidia.yaml"
}

device_nodes() {
  local node missing=0
  ls -l /dev/nvidia* 2>&1
  [ -c /dev/nvidiactl ] || { echo "missing character device /dev/nvidiactl"; missing=1; }
  for node in /dev/nvidia[0-9]*; do
    [ -c "$node" ] && return "$missing"
  done
  echo "no /dev/nvidiaN character device"
  return 1
}

# Containers lose their GPUs after `systemctl daemon-reload` when /dev/char lacks these links.
char_links() {
  local node major minor link missing=0 seen=0
  for node in /dev/nvidia* /dev/nvidia-caps/*; do
    [ -c "$node" ] || continue
    seen=$((seen + 1))
    read -r major minor < <(stat -c '%t %T' "$node")
    link=/dev/char/$((16#$major)):$((16#$minor))
    if [ "$(readlink -f "$link" 2>/dev/null)" = "$(readlink -f "$node")" ]; then
      echo "ok      $link -> $node"
    else
      echo "MISSING $link -> $node"
      missing=1
    fi
  done
  if ((seen == 0)); then
    echo "no NVIDIA character devices to check"
    return 1
  fi
  if ((missing)); then
    echo "fix: nvidia-ctk system create-dev-char-symlinks --create-all"
  fi
  return "$missing"
}

torch_smoke() {
  python3 - <<'PY'
import torch

assert torch.cuda.is_available(), f"torch {torch.__version__}: torch.cuda.is_available() is False"
name = torch.cuda.get_device_name(0)
a = torch.randn(1024, 1024, device="cuda")
b = torch.randn(1024, 1024, device="cuda")
product = a @ b
torch.cuda.synchronize()
reference = a.cpu() @ b.cpu()
error = ((product.cpu() - reference).abs().max() / reference.abs().max()).item()
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}) on {name}:"
      f" 1024x1024 float32 matmul, max error relative to the CPU result {error:.1e}")
assert error < 1e-2, f"GPU matmul differs from the CPU result by {error:.1e}"
PY
}

export -f facts_via_ansible module_helper facts_via_python nvml_probe assert_facts cdi_generate
export -f device_nodes char_links torch_smoke

say "gpu-check on $(hostname) at $(date -u +%FT%TZ); kernel $(uname -r);" \
  "repository $(git rev-parse --short HEAD 2>/dev/null || echo unknown); output in $GPU_CHECK_OUT"

if ! command -v nvidia-smi >/dev/null 2>&1; then
  say "FAIL: no NVIDIA GPU: nvidia-smi is not on the PATH (no NVIDIA driver on this machine)"
  record nvidia-smi yes fail 127 "nvidia-smi not on the PATH"
  finish 2
fi
if ! step nvidia-smi yes 30 nvidia-smi; then
  say "FAIL: no NVIDIA GPU: nvidia-smi fails (no device, or the driver is not loaded)"
  finish 2
fi
# shellcheck disable=SC2016  # $1 is expanded by that sh, not here
step "nvidia-smi -q -x" yes 60 sh -c 'nvidia-smi -q -x >"$1" &&
  grep -E "<(driver_version|cuda_version|attached_gpus|product_name|uuid)>" "$1"' \
  _ "$GPU_CHECK_OUT/nvidia-smi-q.xml"

if python3 -c 'import ansible' >/dev/null 2>&1 && command -v ansible >/dev/null 2>&1; then
  facts_via=ansible
  step "facts (ansible localhost -m nvidia_gpu_facts)" yes 120 bash -c facts_via_ansible
else
  facts_via=python
  step "facts (python3, the module's parser; no ansible here)" yes 60 bash -c facts_via_python
fi
if [ -s "$GPU_CHECK_OUT/nvidia_gpu_facts.json" ]; then
  step "assert GPU, model and driver; NVENC verdict" yes 30 bash -c assert_facts
else
  record "assert GPU, model and driver; NVENC verdict" yes fail "" "no facts gathered"
fi

if [ -s "$GPU_CHECK_OUT/nvidia_gpu_facts.json" ]; then
  step "NVML encoder probe (the module's ctypes path)" yes 30 bash -c nvml_probe
else
  record "NVML encoder probe (the module's ctypes path)" yes fail "" "no facts gathered"
fi

if command -v nvidia-ctk >/dev/null 2>&1; then
  step "nvidia-ctk --version" "$toolkit_required" 30 nvidia-ctk --version
  step "nvidia-ctk cdi generate" "$toolkit_required" 90 bash -c cdi_generate
else
  skip "nvidia-ctk" "not installed"
fi
if command -v nvidia-container-cli >/dev/null 2>&1; then
  step "nvidia-container-cli info" "$toolkit_required" 30 nvidia-container-cli info
else
  skip "nvidia-container-cli" "not installed"
fi

step "/dev/nvidia* device nodes" yes 10 bash -c device_nodes
step "/dev/char links to the NVIDIA devices" "$toolkit_required" 10 bash -c char_links

if python3 -c 'import torch' >/dev/null 2>&1; then
  step "torch CUDA smoke test" yes 150 bash -c torch_smoke
else
  skip "torch CUDA smoke test" "torch is not importable by python3"
fi

finish "$failed"
