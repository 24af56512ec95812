"""The Prometheus alert rules (roles/monitoring/files/prometheus/rules) and their promtool
unit tests (tests/monitoring/rules).

What these tests prove: every rule file passes `promtool check rules` and every unit test
file passes `promtool test rules` (promtool's own output is the failure message), and a
broken rule file is refused, so the check can fail. They also prove that the unit tests
cover the rules: every rule has a case in which it fires, every alert a case in which it
must not (an `exp_alerts: []` entry), no test names an alert that does not exist, and
every alert carries a severity of the contract and the summary, description and runbook
annotations. What they cannot prove: that a live server's metrics look like the series in
the unit tests; the site scenario's tests check the alerts against the real Prometheus.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RULES_DIR = ROOT / "roles/monitoring/files/prometheus/rules"
TESTS_DIR = ROOT / "tests/monitoring/rules"
RULE_FILES = sorted(RULES_DIR.glob("*.yml"))
TEST_FILES = sorted(TESTS_DIR.glob("*.test.yml"))
PROMTOOL = shutil.which("promtool")

SEVERITIES = {"warning", "critical", "page"}
ANNOTATIONS = {"summary", "description", "runbook"}
# The names the site scenario's tests and the other monitoring files rely on
# (the monitoring contract of issue 13).
CONTRACT_ALERTS = {
    "PostgresDown",
    "RedisDown",
    "TargetDown",
    "ContainerRestartLoop",
    "ContainerOOMKilled",
    "Watchdog",
}
# Watchdog's expression is vector(1): no input makes it stop, so it has no case
# in which it must not fire. Every other alert has one.
ALWAYS_FIRING = {"Watchdog"}


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def alert_rules() -> list[dict]:
    """Every alerting rule of every rule file, with the file it came from."""
    found = []
    for path in RULE_FILES:
        for group in load_yaml(path)["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    found.append({**rule, "file": path.name, "group": group["name"]})
    return found


def alert_cases() -> list[dict]:
    """Every alert_rule_test entry of every unit test file, with where it is."""
    cases = []
    for path in TEST_FILES:
        for index, test in enumerate(load_yaml(path)["tests"]):
            for case in test.get("alert_rule_test", []):
                where = f"{path.name}: {test.get('name', f'test {index}')} at {case['eval_time']}"
                cases.append({**case, "where": where})
    return cases


def rule_id(rule: dict) -> str:
    labels = ", ".join(f"{k}={v}" for k, v in sorted(rule.get("labels", {}).items()))
    return f"{rule['alert']}{{{labels}}} ({rule['file']})"


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    assert PROMTOOL, "promtool is missing: scripts/bootstrap.sh installs it (package prometheus)"
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )


def test_the_rules_and_their_tests_are_there():
    assert RULE_FILES, f"no rule files in {RULES_DIR}"
    assert TEST_FILES, f"no promtool unit test files in {TESTS_DIR}"


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_checks_the_rule_file(path):
    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_promtool_unit_tests_pass(path):
    tested = promtool("test", "rules", path.name, cwd=path.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr


@pytest.mark.parametrize(
    "text",
    [
        # YAML that does not parse.
        "groups:\n  - name: broken\n    rules:\n      - alert: Broken\n        expr: [up\n",
        # PromQL that does not parse.
        "groups:\n  - name: broken\n    rules:\n      - alert: Broken\n        expr: up ==\n",
        # An alert without a name field (and a field Prometheus does not know).
        "groups:\n  - name: broken\n    rules:\n      - expr: up == 0\n        severity: page\n",
    ],
    ids=["yaml", "promql", "fields"],
)
def test_promtool_refuses_a_broken_rule_file(tmp_path, text):
    broken = tmp_path / "broken.yml"
    broken.write_text(text, encoding="utf-8")
    checked = promtool("check", "rules", str(broken))
    assert checked.returncode != 0, checked.stdout + checked.stderr
    assert "FAILED" in checked.stdout + checked.stderr


def test_every_rule_file_says_what_it_covers():
    for path in RULE_FILES:
        head = path.read_text(encoding="utf-8").splitlines()[:2]
        assert head[1:], f"{path.name} is too short to have a header comment"
        assert head[1].startswith("# "), f"{path.name} must open with what its rules cover"


def test_every_alert_has_a_severity_and_the_annotations():
    for rule in alert_rules():
        severity = rule.get("labels", {}).get("severity")
        assert severity in SEVERITIES, f"{rule_id(rule)}: severity {severity!r} not in {SEVERITIES}"
        missing = ANNOTATIONS - {k for k, v in rule.get("annotations", {}).items() if v.strip()}
        assert not missing, f"{rule_id(rule)}: annotations {sorted(missing)} missing or empty"


def test_the_contract_alerts_exist():
    missing = CONTRACT_ALERTS - {rule["alert"] for rule in alert_rules()}
    assert not missing, f"alerts other tests rely on are missing: {sorted(missing)}"


def test_rules_of_one_alert_name_differ_in_their_labels():
    # So that each can be told apart, in Alertmanager and by the coverage test below.
    seen: dict[tuple, str] = {}
    for rule in alert_rules():
        key = (rule["alert"], tuple(sorted(rule.get("labels", {}).items())))
        assert key not in seen, f"{rule_id(rule)} has the same name and labels as {seen[key]}"
        seen[key] = rule_id(rule)


def test_every_rule_fires_in_some_test():
    """A rule is covered by a case that expects an alert of its name carrying all of its
    own labels (several rules of one name differ in them: one per scope, per signal)."""
    fired = [
        (case["alertname"], {k: str(v) for k, v in alert.get("exp_labels", {}).items()})
        for case in alert_cases()
        for alert in case.get("exp_alerts") or []
    ]
    uncovered = [
        rule_id(rule)
        for rule in alert_rules()
        if not any(
            name == rule["alert"] and rule.get("labels", {}).items() <= labels.items()
            for name, labels in fired
        )
    ]
    assert not uncovered, f"rules that no test case sees firing: {uncovered}"


def test_every_alert_has_a_case_where_it_must_not_fire():
    quiet = {case["alertname"] for case in alert_cases() if not case.get("exp_alerts")}
    names = {rule["alert"] for rule in alert_rules()} - ALWAYS_FIRING
    missing = sorted(names - quiet)
    assert not missing, (
        f"alerts without a case where they must not fire (exp_alerts: []): {missing}"
    )


def test_the_tests_name_only_alerts_that_exist():
    # A case for a misspelt alert passes with exp_alerts: [] whatever the rules say.
    names = {rule["alert"] for rule in alert_rules()}
    unknown = [
        f"{case['alertname']} ({case['where']})"
        for case in alert_cases()
        if case["alertname"] not in names
    ]
    assert not unknown, f"test cases for alerts no rule defines: {unknown}"


def test_every_rule_file_is_loaded_by_a_test_file():
    loaded = set()
    for path in TEST_FILES:
        for name in load_yaml(path)["rule_files"]:
            rule_file = (path.parent / name).resolve()
            assert rule_file.is_file(), f"{path.name} loads {name}, which does not exist"
            loaded.add(rule_file)
    untested = sorted(p.name for p in RULE_FILES if p.resolve() not in loaded)
    assert not untested, f"rule files no promtool test loads: {untested}"
