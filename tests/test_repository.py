"""The repository as a user meets it: inventories parse, the vault layout
holds, requirements.yml names the collections the virtualenv really has."""

import json
import os
import re
import subprocess

import yaml

from tests.support.targets import ROOT, TOOL_PATH

PRODUCTION = ROOT / "inventories/production"


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": TOOL_PATH, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)


def test_sandbox_is_the_default_inventory():
    result = run("ansible-inventory", "--list")
    assert result.returncode == 0, result.stderr
    assert "ytempire-sandbox" in json.loads(result.stdout)["ytempire"]["hosts"]


def test_production_vault_is_encrypted_and_defines_every_secret():
    vault = PRODUCTION / "group_vars/ytempire/vault.yml"
    assert vault.read_text().startswith("$ANSIBLE_VAULT;1.1;AES256")
    result = run(
        "ansible-vault", "view", "--vault-password-file",
        str(PRODUCTION / "vault-password.example"), str(vault),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    secrets = set(yaml.safe_load(result.stdout))
    referenced = set(re.findall(r"\bvault_\w+", (vault.parent / "vars.yml").read_text()))
    assert referenced <= secrets, f"missing from the vault: {sorted(referenced - secrets)}"


def test_production_inventory_resolves_with_the_vault():
    result = run(
        "ansible-inventory", "-i", str(PRODUCTION), "--host", "ytempire-prod-01",
        "--vault-password-file", str(PRODUCTION / "vault-password.example"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    hostvars = json.loads(result.stdout)
    assert hostvars["base_min_memory_mb"] == 65536
    assert "vault_ytempire_db_password" in hostvars


def test_sandbox_vault_holds_every_secret_the_sandbox_inventory_names():
    sandbox = ROOT / "inventories/sandbox"
    result = run(
        "ansible-vault", "view", "--vault-password-file", str(sandbox / "vault-password"),
        str(sandbox / "group_vars/ytempire/vault.yml"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    secrets = set(yaml.safe_load(result.stdout))
    referenced = set(
        re.findall(r"\bvault_\w+", (sandbox / "group_vars/ytempire/secrets.yml").read_text())
    )
    assert referenced, "secrets.yml names no vault variable"
    assert referenced <= secrets, f"missing: {sorted(referenced - secrets)}"
    # Every secret the stack role takes is named by the sandbox inventory.
    defaults = yaml.safe_load((ROOT / "roles/stack/defaults/main.yml").read_text())
    wanted = set(re.findall(r"\bytempire_\w+(?= \| default\(none\))", str(defaults)))
    named = set(yaml.safe_load((sandbox / "group_vars/ytempire/secrets.yml").read_text()))
    assert wanted, "the stack role takes no secret from ytempire_ variables"
    assert wanted <= named, f"not in secrets.yml: {sorted(wanted - named)}"


def test_requirements_pin_the_collections_in_use():
    pinned = yaml.safe_load((ROOT / "requirements.yml").read_text())["collections"]
    result = run("ansible-galaxy", "collection", "list", "--format", "json")
    assert result.returncode == 0, result.stderr
    installed = {}
    for collections in json.loads(result.stdout).values():
        for name, info in collections.items():
            installed.setdefault(name, info["version"])
    for entry in pinned:
        assert installed.get(entry["name"]) == entry["version"], entry["name"]
    module_key = re.compile(r"^\s*(?:- )?([a-z_]+\.[a-z_]+)\.[a-z_0-9]+:", re.MULTILINE)
    used = set(module_key.findall(_all_task_files()))
    used -= {"ansible.builtin"}
    assert used <= {e["name"] for e in pinned}, f"not in requirements.yml: {used}"


def _all_task_files() -> str:
    files = [
        *ROOT.glob("roles/*/tasks/*.yml"),
        *ROOT.glob("roles/*/handlers/*.yml"),
        *ROOT.glob("playbooks/*.yml"),
        *ROOT.glob("molecule/*/*.yml"),
        ROOT / "site.yml",
    ]
    return "\n".join(p.read_text() for p in files)


def test_playbook_group_vars_are_shared():
    assert (ROOT / "playbooks/group_vars").resolve() == (ROOT / "group_vars").resolve()


def test_focused_scenarios_say_why_they_exist():
    """The site scenario tests the whole server; any other scenario must say, in its
    molecule.yml, what the whole server cannot show (so that they stay few)."""
    scenarios = {p.parent.name: p for p in ROOT.glob("molecule/*/molecule.yml")}
    assert "site" in scenarios
    for name, path in scenarios.items():
        if name != "site":
            assert "Why this scenario exists" in path.read_text(), f"{path} does not say why"


def test_platforms_are_declared_once():
    """Both test hosts come from the shared base config; scenarios set variables only."""
    for path in ROOT.glob("molecule/*/molecule.yml"):
        assert "platforms" not in (yaml.safe_load(path.read_text()) or {}), path
