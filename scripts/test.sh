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
# host (--dist loadscope), so a module's fixtures are built once. The slowest
# tests' times go to the log, for the CI budget.
pytest_repo() { pytest -n "${PYTEST_WORKERS:-2}" --dist loadscope --durations=25 tests; }
pytest_app() { pytest --durations=15 app/tests; }
# The molecule step starts the site scenario (the longest by far) in the
# background and runs the focused scenarios one after another beside it: they
# spend their time in package installs and image loads, which overlap the site
# scenario's converge well on two cores. Lines of a scenario are prefixed with
# its name; the image scripts they call lock per archive. Starting the site
# scenario beside lint, pytest and the app tests instead was measured and
# dropped: a cold run took 74.5 min, no faster, and the contention slowed the
# deploy's rollback past its 5 s (issue 9's note).
# DOCKER_TIMEOUT: removing a container whose volume holds a nested engine's
# images takes the engine past community.docker's 60 s default on a busy
# 2-core machine (the destroy step failed so after the site scenario).
export DOCKER_TIMEOUT=${DOCKER_TIMEOUT:-600}
results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT
scenario() {  # scenario NAME: molecule test, its result a line of $results/report
  local name=$1 start=$SECONDS rc
  echo "--- molecule test -s $name (${MOLECULE_DISTRO:-debian12})"
  molecule test -s "$name" 2>&1 | tee "$results/$name.log" | sed -u "s/^/[$name] /"
  rc=${PIPESTATUS[0]}
  printf '  %-14s %s %5ss\n' "$name" "$rc" "$((SECONDS - start))" >> "$results/report"
  # Interleaved output buries a scenario's failure far from the end: the
  # summary repeats its failing lines.
  if [ "$rc" -ne 0 ]; then
    grep -E '^(fatal|failed): |^FAILED |^E   |CRITICAL|Executed: Failed' "$results/$name.log" |
      grep -v -e RETRYING -e "default/molecule.yml' glob failed" | head -25 | cut -c1-400 |
      sed "s/^/[$name] /" > "$results/why.$name"
  fi
  rm -f "$results/$name.log"
  return "$rc"
}
# In a whole run the app tests (local PostgreSQL and Redis, no Docker host) join
# that lane after the focused scenarios: they end before the site scenario's
# converge does. The pytest step follows once the site verify's timed tests (the
# deploy's rollback, at most 5 s) are over: the rest of that verify mostly waits
# on Prometheus, Alertmanager and timers, with a core or more idle (vmstat), and
# pytest's Docker hosts fill it. Each keeps its own line in the report.
export YTEMPIRE_TIMED_TESTS_DONE="$results/site-timed-done"
molecule_all() {  # the site scenario in the background, the focused ones beside it
  local name failed=0 site_job=""
  if [ -n "$site" ]; then
    scenario site &
    site_job=$!
  fi
  for name in $focused; do scenario "$name" || failed=1; done
  if $in_lane; then
    step app pytest_app
    # (or the site scenario ended first: its line is in the report)
    until [ -e "$YTEMPIRE_TIMED_TESTS_DONE" ] || grep -qs '^  site ' "$results/report"; do
      sleep 5
    done
    step pytest pytest_repo
  fi
  if [ -n "$site_job" ]; then wait "$site_job" || failed=1; fi
  return $failed
}
step() {  # step NAME FUNCTION [ARG...]: its result a line of $results/report
  local name=$1 start=$SECONDS rc=0
  shift
  echo "=== $name"
  "$@" || rc=$?
  printf '%-16s %s %5ss\n' "$name" "$rc" "$((SECONDS - start))" >> "$results/report"
  return "$rc"
}

steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(lint pytest app molecule)
all=${MOLECULE_SCENARIOS:-$(for f in molecule/*/molecule.yml; do basename "$(dirname "$f")"; done)}
site="" focused=""
for name in $all; do
  if [ "$name" = site ]; then site=site; else focused+="$name "; fi
done
for s in "${steps[@]}"; do
  case "$s" in
    lint | pytest | app | molecule) ;;
    *) echo "test.sh: unknown step '$s' (lint, pytest, app, molecule)" >&2; exit 2 ;;
  esac
done
in_lane=false  # app and pytest run in the molecule step's lane (above)
if [ -n "$site" ] && [[ " ${steps[*]} " == *" pytest "* && " ${steps[*]} " == *" app "* &&
  " ${steps[*]} " == *" molecule "* ]]; then
  in_lane=true
fi
for s in "${steps[@]}"; do
  case "$s" in
    lint) step lint lint ;;
    pytest) $in_lane || step pytest pytest_repo ;;
    app) $in_lane || step app pytest_app ;;
    molecule) step molecule molecule_all ;;
  esac
done

# The report, in the order things finished: name, exit code, wall time.
report="" passed=0 failed=0
while read -r name rc took; do
  if [ "$rc" -eq 0 ]; then passed=$((passed + 1)); r=passed; else failed=$((failed + 1)); r=FAILED; fi
  indent=""
  case "$name" in lint | pytest | app | molecule) ;; *) indent="  " ;; esac
  report+=$(printf '%-16s %-7s %6s' "$indent$name" "$r" "$took")$'\n'
done < <(cat "$results/report" 2>/dev/null)
for f in "$results"/why.*; do
  [ -e "$f" ] && { echo "--- why ${f##*/why.} failed (its first failing lines)"; cat "$f"; }
done
printf '\n=== summary (%ss in all, bootstrap included)\n%s' "$SECONDS" "$report"
echo "results: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ -s "$results/report" ]
