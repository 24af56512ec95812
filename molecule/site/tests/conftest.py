"""What the site scenario's test modules share: the client on the scenario's
network (user, scanner, attacker), the addresses, and a TCP probe from it."""

from __future__ import annotations

import os

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
