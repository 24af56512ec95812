"""Bad input to the security role (through site.yml, as an operator runs it)
fails with a clear message before anything on the host changes."""

import pytest

SSH = {"port": 22, "proto": "tcp"}

CASES = {
    "invalid firewall port": (
        {"security_firewall_rules": [SSH, {"port": 70000, "proto": "tcp"}]},
        "Invalid port in security_firewall_rules: 70000/tcp from any.",
    ),
    "reversed port range": (
        {"security_firewall_rules": [SSH, {"port": "9000:8000", "proto": "tcp"}]},
        "Invalid port in security_firewall_rules: 9000:8000/tcp",
    ),
    "invalid SSH port": (
        {"security_ssh_port": 0},
        "Invalid port: security_ssh_port is 0; it must be a number from 1 to 65535.",
    ),
    "unknown protocol": (
        {"security_firewall_rules": [SSH, {"port": 53, "proto": "icmp"}]},
        "security_firewall_rules",
    ),
    "extra jail with maxretry 0": (
        {"security_fail2ban_jails": [{"name": "nginx-http-auth", "maxretry": 0}]},
        "Invalid fail2ban jail 'nginx-http-auth': maxretry must be at least 1 (it is 0)",
    ),
    "sshd jail with maxretry 0": (
        {"security_fail2ban_sshd_maxretry": 0},
        "Invalid fail2ban jail 'sshd': maxretry must be at least 1 (it is 0)",
    ),
    "allow-list without the SSH port": (
        {"security_firewall_rules": [{"port": 80, "proto": "tcp"}, {"port": 443}]},
        "Lock-out guard: security_firewall_rules must allow the SSH port 22/tcp",
    ),
    "SSH allowed only from one network": (
        {"security_firewall_rules": [{"port": 22, "proto": "tcp", "from": "10.9.0.0/16"}]},
        "or enabling the firewall would lock you out",
    ),
    "SSH moved to a port the list does not open": (
        {"security_ssh_port": 2222},
        "must allow the SSH port 2222/tcp",
    ),
    "public port missing from the firewall rules": (
        {"security_firewall_rules": [SSH, {"port": 80}, {"port": 443}]},
        "security_firewall_rules opens 22, 443, 80 to any address, but ytempire_public_ports "
        "lists 22, 443, 80, 8080: make them agree",
    ),
    "firewall rule for a port that is not public": (
        {"ytempire_public_ports": [22, 80, 443]},
        "security_firewall_rules opens 22, 443, 80, 8080 to any address, but "
        "ytempire_public_ports lists 22, 443, 80",
    ),
}


@pytest.mark.docker
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_refused_before_change(refusals, case):
    refusals.assert_refused(case, CASES[case][1])
