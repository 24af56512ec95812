"""What the site scenario's test modules share: the client on the scenario's
network (user, scanner, attacker), the addresses, a TCP probe from it, the S3
server the backups go to, and ansible-playbook on the scenario's inventory."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import testinfra

# A TCP connect from the client: open, refused (RST or ICMP) or filtered (no answer).
PROBE = (
    "import socket, sys; s = socket.socket(); s.settimeout(3); "
    "e = s.connect_ex((sys.argv[1], int(sys.argv[2]))); "
    "print({0: 'open', 111: 'refused'}.get(e, 'filtered'))"
)


def _get_host(group: str):
    """The one host of an inventory group (get_host would take the group for a host name)."""
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    (host,) = testinfra.get_hosts([f"ansible://{group}"], ansible_inventory=inventory)
    return host


@pytest.fixture(scope="session")
def client():
    """The second host: it gets no role, only the tools prepare.yml installs."""
    return _get_host("clients")


@pytest.fixture(scope="session")
def target():
    """The server site.yml converged (the `host` fixture, for session-wide fixtures)."""
    return _get_host("ytempire")


@pytest.fixture(scope="session")
def api_auth(target) -> str:
    """A curl header with a token of the API's admin, who logs in through nginx with the
    password site.yml wrote to the server's .env (from the vault)."""
    env = target.check_output("cat /opt/ytempire/.env")
    match = re.search(r"^API_ADMIN_PASSWORD='([^']*)'$", env, re.M)
    assert match, "site.yml wrote no API_ADMIN_PASSWORD to /opt/ytempire/.env"
    login = json.dumps({"username": "admin", "password": match.group(1)})
    answer = target.check_output(
        "curl -sfk --max-time 30 -H 'Content-Type: application/json' "
        f"--data {shlex.quote(login)} https://127.0.0.1/api/auth/login"
    )
    return f"Authorization: Bearer {json.loads(answer)['access_token']}"


@pytest.fixture(scope="session")
def target_ip(target, client_ip) -> str:
    """The target's address on the scenario network (not one of its Docker bridges)."""
    return target.check_output(f"ip -4 route get {client_ip}").split(" src ")[1].split()[0]


@pytest.fixture(scope="session")
def client_ip(client) -> str:
    return client.check_output("hostname -I").split()[0]


@pytest.fixture(scope="session")
def probe(client):
    def _probe(address: str, port: int) -> str:
        return client.check_output(f'python3 -c "{PROBE}" {address} {port}')

    return _probe


ROOT = Path(__file__).resolve().parents[3]
ANSIBLE_BIN = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin"
# The port site.yml's inventory gives the target for S3 (site_test_s3_port),
# and the fault proxy's, one above it.
S3_PORT = 9555
sys.path.insert(0, str(ROOT))
from tests.support.s3server import FaultProxy, MotoServer  # noqa: E402

# The modules that use the client as a client (user, scanner, attacker, load
# generator) run first. Then the disaster recovery starts: the server's newest
# points go to S3 and the client becomes a server from them, in the background
# (about nine minutes of converge). Meanwhile the modules that need only the
# target run (the backup tests among them, under another S3 prefix); the
# recovery's result is checked last.
USES_THE_CLIENT = ("test_deploy.py", "test_docker.py", "test_nginx.py", "test_security.py",
                   "test_stack.py", "test_monitoring.py")  # fmt: skip
TARGET_ONLY = ("test_backup.py", "test_base.py", "test_kernel.py", "test_nvidia.py")


def _phase(item) -> int:
    name = item.path.name
    if name == "test_recovery.py":
        return 1 if "begins" in item.name else 3
    if name in TARGET_ONLY:
        return 2
    if name in USES_THE_CLIENT:
        return 0
    raise pytest.UsageError(
        f"{name}: say in conftest.py whether it uses the client (it runs before the "
        "disaster recovery makes the client a server) or only the target (it runs beside it)"
    )


def pytest_collection_modifyitems(items):
    items.sort(key=_phase)  # stable: each module keeps its own order


# The deploy tests time the rollback (at most 5 s): scripts/test.sh starts pytest's
# CPU-heavy tests beside this verify only once they are over, when this file names
# YTEMPIRE_TIMED_TESTS_DONE.
TIMED = "test_deploy.py"


def pytest_runtest_teardown(item, nextitem):
    done = os.environ.get("YTEMPIRE_TIMED_TESTS_DONE")
    if done and item.path.name == TIMED and (nextitem is None or nextitem.path.name != TIMED):
        Path(done).touch()


@dataclass
class S3:
    server: MotoServer
    proxy: FaultProxy
    bucket: str

    def client(self):
        import boto3  # noqa: PLC0415  the controller's, only where S3 is used

        return boto3.client(
            "s3",
            endpoint_url=self.server.local_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106  moto's, not a secret
        )

    def listing(self, prefix: str = "") -> list[str]:
        answer = self.client().list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return sorted(o["Key"] for o in answer.get("Contents", []))


@pytest.fixture(scope="session")
def s3(target) -> S3:
    """moto's S3 on this controller (the target's default gateway, as the inventory
    says), the bucket the inventory names, and a fault proxy in front of it."""
    gateway = target.check_output("ip -4 route show default").split()[2]
    server = MotoServer(host="0.0.0.0", port=S3_PORT, advertise_host=gateway).start()  # noqa: S104  the containers' bridge
    proxy = FaultProxy(S3_PORT, host="0.0.0.0", port=S3_PORT + 1, advertise_host=gateway).start()  # noqa: S104
    found = S3(server=server, proxy=proxy, bucket="ytempire-site-test")
    found.client().create_bucket(Bucket=found.bucket)
    yield found
    proxy.stop()
    server.stop()


@pytest.fixture(scope="session")
def run_playbook():
    """ansible-playbook on the scenario's inventory (or another): (rc, output)."""
    return ansible_playbook


@pytest.fixture(scope="session")
def start_playbook():
    """ansible-playbook started in the background (playbook, extra, inventory, log): the process."""
    return background_playbook


@pytest.fixture(scope="session")
def run_module():
    """One of this repository's modules run ad hoc on a host: its result."""
    return ansible_module


@pytest.fixture(scope="session")
def figure():
    """Record a measured figure, printed at the end of the run."""
    return record_figure


def _playbook_command(playbook: str, extra: dict, inventory: str | None) -> tuple[list, dict]:
    command = [
        str(ANSIBLE_BIN / "ansible-playbook"),
        "-i",
        inventory or os.environ["MOLECULE_INVENTORY_FILE"],
        playbook,
        "-e",
        json.dumps(extra),
    ]
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
    }
    return command, env


def ansible_playbook(playbook: str, extra: dict, inventory: str | None = None, timeout: int = 1800):
    """ansible-playbook PLAYBOOK on the scenario's inventory, to its end: (rc, output)."""
    command, env = _playbook_command(playbook, extra, inventory)
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    return done.returncode, done.stdout + done.stderr


def background_playbook(playbook: str, extra: dict, inventory: str | None, log: Path):
    """ansible-playbook PLAYBOOK started in the background, its output to LOG: the process."""
    command, env = _playbook_command(playbook, extra, inventory)
    with log.open("w") as out:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603  our own command


def ansible_module(module: str, args: dict, pattern: str = "ytempire") -> dict:
    """One of this repository's modules run ad hoc on PATTERN's host: its result (failed or not)."""
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    command = [str(ANSIBLE_BIN / "ansible"), "-i", inventory, pattern, "-b", "-m", module,
               "-a", json.dumps(args)]  # fmt: skip
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
           "ANSIBLE_STDOUT_CALLBACK": "json", "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
           "ANSIBLE_NOCOLOR": "1"}  # fmt: skip
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800, check=False
    )
    try:
        hosts = json.loads(done.stdout)["plays"][0]["tasks"][0]["hosts"]
    except (ValueError, KeyError, IndexError) as exc:
        raise AssertionError(f"ansible -m {module} said:\n{done.stdout}\n{done.stderr}") from exc
    (result,) = hosts.values()
    return result


FIGURES: dict[str, float] = {}


def record_figure(name: str, value: float) -> None:
    """A measured figure (an RPO, an RTO), printed at the end of the run."""
    FIGURES[name] = value


def pytest_terminal_summary(terminalreporter):
    if FIGURES:
        terminalreporter.section("measured")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name}: {value}")
