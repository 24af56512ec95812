#!/usr/bin/env bash
# The whole test suite: lint, pytest (repository, plugins, bad input), the app
# and the Molecule scenarios. Installs what it needs (scripts/bootstrap.sh),
# runs every step even after a failure, prints the wall time of each step and
# each scenario, and exits non-zero if any step failed.
#
#   scripts/test.sh [STEP ...]    steps: lint pytest app molecule (default: all)
#   MOLECULE_DISTRO=debian13 scripts/test.sh molecule
#   MOLECULE_SCENARIOS="site" scripts/test.sh molecule
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1
scripts/bootstrap.sh dev,app || exit 1
export PATH=$root/.venv/bin:$PATH
export ANSIBLE_FORCE_COLOR=0 PY_COLORS=0 MOLECULE_NO_COLOR=1 NO_COLOR=1

shell_scripts() { git ls-files -z '*.sh' .ci/run; }
lint() {
  yamllint --strict . &&
  ansible-lint &&
  ruff check . roles/monitoring/files/ytempire-resource-exporter &&
  ruff format --check . roles/monitoring/files/ytempire-resource-exporter &&
  shell_scripts | xargs -0 shellcheck &&
  ansible-playbook --syntax-check site.yml playbooks/*.yml
}
# Two workers (the CI machine has two cores); each test module keeps its own
# host (--dist loadscope), so a module's fixtures are built once.
pytest_repo() { pytest -n "${PYTEST_WORKERS:-2}" --dist loadscope tests; }
pytest_app() { pytest app/tests; }
# The scenarios run side by side, MOLECULE_JOBS at a time (2: the focused
# ones spend their time in package installs and image loads, which overlap the
# site scenario's converge well on two cores). Each line is prefixed with its
# scenario; the image scripts the scenarios call lock per archive.
# DOCKER_TIMEOUT: removing a container whose volume holds a nested engine's
# images takes the engine past community.docker's 60 s default on a busy
# 2-core machine (the destroy step failed so after the site scenario).
scenario_report=""
molecule_all() {
  export DOCKER_TIMEOUT=${DOCKER_TIMEOUT:-600}
  local scenario failed=0 rc took logs
  local scenarios=${MOLECULE_SCENARIOS:-$(for f in molecule/*/molecule.yml; do basename "$(dirname "$f")"; done)}
  logs=$(mktemp -d)
  for scenario in $scenarios; do
    while [ "$(jobs -rp | wc -l)" -ge "${MOLECULE_JOBS:-2}" ]; do wait -n || true; done
    echo "--- molecule test -s $scenario (${MOLECULE_DISTRO:-debian12})"
    (
      start=$SECONDS
      molecule test -s "$scenario" 2>&1 | tee "$logs/$scenario.log" | sed -u "s/^/[$scenario] /"
      echo "${PIPESTATUS[0]} $((SECONDS - start))" > "$logs/$scenario"
    ) &
  done
  wait
  for scenario in $scenarios; do
    read -r rc took < "$logs/$scenario" || { rc=1 took=0; }
    if [ "$rc" -eq 0 ]; then result=passed; else result=FAILED; failed=1; fi
    scenario_report+=$(printf '  %-7s %-7s %4ss' "$scenario" "$result" "$took")$'\n'
    # Interleaved output buries a scenario's failure far from the end: repeat
    # its failing lines here, where the last screen of the run shows them.
    if [ "$rc" -ne 0 ]; then
      echo "--- why $scenario failed (its first failing lines)"
      grep -E '^(fatal|failed): |^FAILED |^E   |CRITICAL|Executed: Failed' "$logs/$scenario.log" |
        grep -v -e RETRYING -e "default/molecule.yml' glob failed" | head -25 | cut -c1-400 | sed "s/^/[$scenario] /"
    fi
  done
  rm -rf "$logs"
  return $failed
}

steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(lint pytest app molecule)
passed=0 failed=0 report=""
for step in "${steps[@]}"; do
  case "$step" in
    lint) fn=lint ;; pytest) fn=pytest_repo ;; app) fn=pytest_app ;; molecule) fn=molecule_all ;;
    *) echo "test.sh: unknown step '$step' (lint, pytest, app, molecule)" >&2; exit 2 ;;
  esac
  echo "=== $step"
  start=$SECONDS
  if $fn; then result=passed; passed=$((passed + 1)); else result=FAILED; failed=$((failed + 1)); fi
  report+=$(printf '%-9s %-7s %4ss' "$step" "$result" "$((SECONDS - start))")$'\n'
  [ "$step" = molecule ] && report+=$scenario_report
done
printf '\n=== summary (%ss in all, bootstrap included)\n%s' "$SECONDS" "$report"
echo "steps: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
