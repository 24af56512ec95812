#!/usr/bin/env bash
# Re-run benchmark: wall time of a site.yml that changes nothing, with the
# project's settings (ansible.cfg) against Ansible's defaults, side by side.
#
#   bench/rerun.sh [ROUNDS]     (default 1; the sandbox must be up and converged:
#                                scripts/sandbox.sh up)
#
# The defaults run uses a configuration with only what the project needs to
# run at all (roles, modules, module_utils, the inventory, the sandbox's vault). Each run must end
# with changed=0 and failed=0, or the benchmark stops: a run that changes
# something measures work, not re-run overhead. Prints both wall times (the
# median over the rounds) and their ratio project / defaults.
# BENCH_ROOT measures another checkout (e.g. an older commit) with this
# checkout's virtualenv.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
root=${BENCH_ROOT:-$here}
rounds=${1:-1}
venv=$here/.venv/bin
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cd "$root"

cat > "$scratch/defaults.cfg" <<CFG
[defaults]
inventory = $root/inventories/sandbox
roles_path = $root/roles
library = $root/plugins/modules
module_utils = $root/plugins/module_utils
vault_identity_list = sandbox@$root/inventories/sandbox/vault-password
CFG

# run NAME CONFIG: one site.yml; prints its wall time in seconds.
run() {
  local name=$1 cfg=$2 log="$scratch/$1.log" start end
  start=$(date +%s.%N)
  if ! ANSIBLE_CONFIG=$cfg ANSIBLE_NOCOLOR=1 "$venv/ansible-playbook" site.yml > "$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "rerun.sh: the $name run failed (log above)" >&2
    exit 1
  fi
  end=$(date +%s.%N)
  local recap
  recap=$(grep -E '^\S+ +: ok=' "$log" | tail -n 1)
  if ! grep -q 'changed=0 ' <<< "$recap"; then
    grep -E '^(changed|TASK)' "$log" | grep -B1 '^changed' >&2 || true
    echo "rerun.sh: the $name run changed something ($recap): converge first" >&2
    exit 1
  fi
  echo "$recap" > "$scratch/$name.recap"
  awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f\n", b - a }'
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

: > "$scratch/project.times"; : > "$scratch/defaults.times"
for _ in $(seq "$rounds"); do
  run defaults "$scratch/defaults.cfg" >> "$scratch/defaults.times"
  run project "$root/ansible.cfg" >> "$scratch/project.times"
done
project=$(median < "$scratch/project.times")
defaults=$(median < "$scratch/defaults.times")
echo "checkout:  $root ($(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo 'not a git checkout'))"
echo "project:   ${project} s  ($(cat "$scratch/project.recap"))"
echo "defaults:  ${defaults} s  ($(cat "$scratch/defaults.recap"))"
echo "ratio project/defaults: $(awk -v p="$project" -v d="$defaults" 'BEGIN { printf "%.2f", p / d }')"
