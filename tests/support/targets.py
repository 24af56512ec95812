"""Real systemd hosts (containers from molecule/images/build.sh) that tests
run the repository's playbooks against."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
# The toolchain of the interpreter running the tests (the project's .venv).
TOOL_PATH = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
DISTRO = os.environ.get("MOLECULE_DISTRO", "debian12")
# How this machine differs from production (no Docker repository or Docker
# Hub; a cap on open files): the sandbox's settings, which test hosts share.
MACHINE_VARS = yaml.safe_load(
    (ROOT / "inventories/sandbox/group_vars/ytempire/docker.yml").read_text()
)
# Secrets as an inventory gives them (from its vault): every test host's
# inventory has them, so that site.yml's preflight of the stack passes; a bad
# input test takes one away or spoils one with its extra vars.
TEST_SECRETS = {
    "ytempire_db_password": "pytest-db-password",
    "ytempire_jwt_secret": "pytest-jwt-secret-0123456789abcdef0123",
    "ytempire_api_admin_password": "pytest-api-admin-password",
    "ytempire_n8n_user": "ops@pytest.test",
    "ytempire_n8n_password": "Pytest-n8n-1",
    "ytempire_n8n_encryption_key": "pytest-n8n-key",
    "ytempire_openai_api_key": "",
    "ytempire_elevenlabs_api_key": "",
    "ytempire_youtube_client_id": "",
    "ytempire_youtube_client_secret": "",
    "ytempire_youtube_token_key": "",
    # The monitoring's receivers (its default: Slack and PagerDuty).
    "ytempire_slack_webhook_url": "https://hooks.slack.invalid/services/pytest",
    "ytempire_pagerduty_routing_key": "pytest-pagerduty-routing-key",
}
# What a test host's inventory says (its group_vars/ytempire): the machine's
# settings and the secrets. Test hosts never start the platform, so its images
# are "from a registry" (pulled only when the stack starts) and only the
# registry's archive is loaded: no stack archive has to be built first.
TEST_VARS = {
    **MACHINE_VARS,
    **TEST_SECRETS,
    "docker_image_archives": [
        a for a in MACHINE_VARS["docker_image_archives"] if a.endswith("/registry-2.tar")
    ],
    "stack_images": {
        name: {**image, "source": "registry"}
        for name, image in MACHINE_VARS["stack_images"].items()
    },
}
# What changes on a host whatever a playbook does: connection scratch space,
# the journal, runtime state, the apt index and its logs (check mode refreshes
# the index and asks apt's solver).
VOLATILE = (
    *("/tmp", "/var/tmp", "/run", "/root/.ansible", "/var/lib/systemd"),  # noqa: S108  in the host
    *("/var/log/journal", "/var/log/apt", "/var/lib/apt/lists", "/var/cache/apt"),
)


@dataclass
class Target:
    """A systemd container that playbooks run against."""

    name: str

    def exec(self, *cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", "exec", self.name, *cmd], capture_output=True, text=True, check=False
        )

    def diff(self) -> set[str]:
        """Paths changed relative to the image (`docker diff`), volatile ones left out."""
        out = subprocess.run(
            ["docker", "diff", self.name], capture_output=True, text=True, check=True
        ).stdout
        paths = {line.split(" ", 1)[1] for line in out.splitlines() if line}
        # A directory shows as changed when anything below it does: drop the
        # ancestors of volatile paths, keep everything else.
        return {
            p
            for p in paths
            if not p.startswith(VOLATILE) and not any(v.startswith(p + "/") for v in VOLATILE)
        }

    def playbook(
        self,
        playbook: str | Path,
        extra_vars: dict | None = None,
        check: bool = False,
        aliases: dict[str, dict] | None = None,
        environment: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a playbook of the repository against this host (group `ytempire`).

        `aliases` names the host several times in the inventory, each name with its
        own host variables (ALIAS: VARS), instead of once as itself."""
        connection = {"ansible_connection": "community.docker.docker", "ansible_host": self.name}
        hosts = (
            {alias: {**connection, **host_vars} for alias, host_vars in aliases.items()}
            if aliases
            else {self.name: connection}
        )
        inventory = {"ytempire": {"hosts": hosts}}
        scratch = ROOT / ".cache" / "pytest" / self.name
        scratch.mkdir(parents=True, exist_ok=True)
        (scratch / "inventory.json").write_text(json.dumps(inventory))
        # As the sandbox's inventory group_vars/ytempire: they win over the
        # playbook's group_vars/all (the guide's values), as vars inside the
        # inventory file would not.
        (scratch / "group_vars").mkdir(exist_ok=True)
        (scratch / "group_vars" / "ytempire.json").write_text(json.dumps(TEST_VARS))
        (scratch / "vars.json").write_text(json.dumps(extra_vars or {}))
        cmd = [
            "ansible-playbook",
            "-i",
            str(scratch / "inventory.json"),
            "-e",
            f"@{scratch / 'vars.json'}",
            str(ROOT / playbook),
        ]
        if check:
            cmd.append("--check")
        env = {
            **os.environ,
            "PATH": TOOL_PATH,
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FACT_CACHING": "memory",
            **(environment or {}),
        }
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)


def start_target(name: str, network: str | None = None) -> Target:
    """Start a systemd host the way the sandbox and the Molecule base config do."""
    # What the host installs the engine and the registry image from.
    for script, *args in (("docker-bundle.sh", DISTRO), ("registry.sh",)):
        path = ROOT / "molecule/images" / script
        built = subprocess.run([path, *args], capture_output=True, text=True, check=False)
        if built.returncode != 0:
            raise RuntimeError(f"{script} failed: {built.stdout}{built.stderr}")
    cmd = [str(ROOT / "molecule/images/start.sh"), name, DISTRO]
    if network:
        cmd.append(network)
    started = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if started.returncode != 0:
        raise RuntimeError(f"could not start {name}: {started.stdout}{started.stderr}")
    return Target(name)


def stop_target(target: Target) -> None:
    subprocess.run(["docker", "rm", "-f", "-v", target.name], check=False, capture_output=True)


def assert_refused_unchanged(
    target: Target, playbook: str, extra_vars: dict, message: str
) -> subprocess.CompletedProcess[str]:
    """Bad input: the run fails with `message` and the host is exactly as before."""
    before = target.diff()
    result = target.playbook(playbook, extra_vars)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert message in " ".join(output.split()), output
    assert target.diff() == before, "the failed run changed the host"
    return result


@dataclass
class Refusals:
    """What one run of a playbook made of many cases of bad input at once."""

    failures: dict[str, str]  # case: the text of its failed task's result ("" if none failed)
    changed: set[str]  # paths the run changed on the host (`Target.diff`)
    output: str  # the run's stderr, and its stdout when that is not the JSON report

    def assert_refused(self, case: str, message: str) -> None:
        """The case failed with `message` (whitespace-insensitive), and no case changed the host."""
        failure = self.failures[case]
        assert failure, f"{case}: the run did not fail for this case\n{self.output[-4000:]}"
        assert message in failure, f"{case}: {message!r} not in its failure:\n{failure}"
        assert not self.changed, f"the refused runs changed the host: {sorted(self.changed)}"


def _strings(value) -> list[str]:
    """Every string in a task result (its msg, argument_errors, stderr, ...), depth first."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def refuse_all(target: Target, playbook: str, cases: dict[str, dict]) -> Refusals:
    """Run `playbook` once for every case of bad input (CASE: extra vars), each case a
    name of `target` in the inventory with the case's variables as host variables.

    One run instead of one per case: the playbook's start and its role includes,
    which are most of a refused run's time, are paid once. Host variables win
    over every group_vars and role default; no role sets a public variable in
    vars/ or with set_fact (the precedence an extra var would have beaten)."""
    aliases = {f"case-{i:02d}": host_vars for i, host_vars in enumerate(cases.values())}
    names = dict(zip(aliases, cases, strict=True))
    before = target.diff()
    result = target.playbook(
        playbook, aliases=aliases, environment={"ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"}
    )
    changed = target.diff() ^ before
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        return Refusals(dict.fromkeys(cases, ""), changed, result.stdout + result.stderr)
    failures = dict.fromkeys(cases, "")
    for play in report["plays"]:
        for task in play["tasks"]:
            for alias, outcome in task["hosts"].items():
                if outcome.get("failed") and alias in names:
                    text = " ".join(" ".join(_strings(outcome)).split())
                    failures[names[alias]] += f"[{task['task']['name']}] {text} "
    return Refusals(failures, changed, result.stderr)
