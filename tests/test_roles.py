"""What every role owes: argument specs equal to its defaults, the same spec
for the preflight entry point, no dependencies, a README, a Molecule scenario."""

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
# `common` is private: routines the roles include with tasks_from, no main entry point.
PRIVATE = {"common"}
ROLES = sorted(
    p.parent.parent for p in ROOT.glob("roles/*/meta/main.yml") if p.parts[-3] not in PRIVATE
)


def load(path: Path):
    return yaml.safe_load(path.read_text()) or {}


def test_there_are_roles():
    assert "base" in [r.name for r in ROLES]


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_argument_specs_equal_defaults(role):
    defaults = load(role / "defaults/main.yml")
    specs = load(role / "meta/argument_specs.yml")["argument_specs"]
    options = specs["main"]["options"]
    assert set(options) == set(defaults), (
        f"in specs only: {sorted(set(options) - set(defaults))}, "
        f"in defaults only: {sorted(set(defaults) - set(options))}"
    )
    for name, option in options.items():
        assert option.get("description"), f"{name} has no description"
        assert option.get("type"), f"{name} has no type"
        assert name.startswith(f"{role.name}_"), f"{name} lacks the role prefix"


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_preflight_entry_point_checks_the_same_options(role):
    specs = load(role / "meta/argument_specs.yml")["argument_specs"]
    assert (role / "tasks/preflight.yml").is_file()
    assert specs["preflight"]["options"] == specs["main"]["options"]


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_role_is_self_contained_and_documented(role):
    assert load(role / "meta/main.yml")["dependencies"] == []
    readme = (role / "README.md").read_text()
    for option in load(role / "defaults/main.yml"):
        assert f"`{option}`" in readme, f"{option} is not documented in {role.name}/README.md"
    scenario_tests = list(ROOT.glob(f"molecule/*/tests/test_{role.name}*.py"))
    assert scenario_tests, f"no Molecule scenario tests for {role.name}"


def test_site_checks_every_role_before_changing_anything():
    site = load(ROOT / "site.yml")
    preflight, *plays = site
    checked = {
        t["ansible.builtin.include_role"]["name"]
        for t in preflight["tasks"]
        if t["ansible.builtin.include_role"].get("tasks_from") == "preflight"
    }
    applied = {r["role"] for play in plays for r in play.get("roles", [])}
    assert applied <= checked, f"not checked up front: {sorted(applied - checked)}"
