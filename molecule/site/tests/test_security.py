"""What an operator would check by hand after the security role ran, and what
the client on the same network (the attacker) sees of the target."""

import time

testinfra_hosts = ["ansible://ytempire"]

ALLOWED_PORTS = (22, 80, 443, 8080)
CLOSED_PORT = 9999  # prepare.yml's listener (site_test_closed_port); no rule allows it
SSH_OPTIONS = (
    "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=5 "
    "-o PubkeyAuthentication=no -o PreferredAuthentications=password,keyboard-interactive"
)


def sshd_effective(host) -> dict[str, str]:
    """What sshd really uses; keywords it repeats (allowgroups) joined by spaces."""
    effective: dict[str, str] = {}
    for line in host.check_output("sshd -T").splitlines():
        key, _, value = line.partition(" ")
        effective[key] = f"{effective[key]} {value}" if key in effective else value
    return effective


def banned(host) -> str:
    return host.check_output("fail2ban-client status sshd")


# --- SSH ------------------------------------------------------------------


def test_sshd_config_keeps_passwords_off_despite_cloud_init_dropin(host):
    dropin = host.file("/etc/ssh/sshd_config.d/50-cloud-init.conf")
    assert "PasswordAuthentication yes" in dropin.content_string
    effective = sshd_effective(host)
    assert effective["passwordauthentication"] == "no"
    assert effective["kbdinteractiveauthentication"] == "no"
    assert effective["permitrootlogin"] == "no"
    assert effective["permitemptypasswords"] == "no"
    assert effective["authenticationmethods"] == "publickey"
    assert effective["maxauthtries"] == "3"
    assert effective["allowgroups"] == "ytempire-admins root"
    assert effective["x11forwarding"] == "no"


def test_sshd_runs_as_a_service_not_socket_activated(host):
    service = host.service("ssh")
    assert service.is_running, host.check_output("journalctl -u ssh --no-pager -n 30")
    assert service.is_enabled
    assert not host.service("ssh.socket").is_running
    assert host.socket("tcp://0.0.0.0:22").is_listening


def test_password_login_refused_from_the_network(client, target_ip):
    result = client.run(f"sshpass -p wrong ssh {SSH_OPTIONS} root@{target_ip} true")
    assert result.rc != 0
    assert "Permission denied (publickey)" in result.stderr


# --- Firewall ---------------------------------------------------------------


def test_ufw_policy_and_rules(host):
    status = host.check_output("ufw status verbose")
    assert "Status: active" in status
    assert "Default: deny (incoming), allow (outgoing), deny (routed)" in status
    lines = status.splitlines()
    for port in ALLOWED_PORTS:
        assert any(line.startswith(f"{port}/tcp ") and "ALLOW IN" in line for line in lines), port
    assert str(CLOSED_PORT) not in status
    # A port taken off the list is closed; a rule added by hand is not the role's.
    assert "5432" not in status
    assert any(line.startswith("2222/tcp ") for line in lines)
    for port in (80, 443, 8080):
        assert any(line.startswith(f"{port}/tcp ") and "ALLOW FWD" in line for line in lines), port
    assert host.service("ufw").is_enabled


def test_docker_user_chain_goes_through_ufw(host):
    chain = host.check_output("iptables -S DOCKER-USER")
    assert "-A DOCKER-USER -j ufw-user-forward" in chain
    assert chain.strip().endswith("-A DOCKER-USER -j RETURN")


def test_only_allowed_ports_answer_from_the_network(host, probe, target_ip):
    assert host.socket(f"tcp://0.0.0.0:{CLOSED_PORT}").is_listening
    for port in ALLOWED_PORTS:
        assert probe(target_ip, port) in ("open", "refused"), port
    assert probe(target_ip, 22) == "open"
    # A service listens there, yet the firewall drops the connection.
    assert probe(target_ip, CLOSED_PORT) == "filtered"


# --- fail2ban ---------------------------------------------------------------


def test_sshd_jail_reads_the_journal(host):
    assert host.service("fail2ban").is_running, host.check_output(
        "journalctl -u fail2ban --no-pager -n 30"
    )
    assert not host.file("/var/log/auth.log").exists
    status = banned(host)
    assert "Journal matches:" in status
    assert host.check_output("fail2ban-client get sshd maxretry") == "3"
    assert host.check_output("fail2ban-client get sshd bantime") == "3600"
    assert "nginx-http-auth" not in host.check_output("fail2ban-client status")


def test_three_failed_logins_ban_and_unban_restores(host, client, probe, target_ip, client_ip):
    try:
        for _ in range(3):
            client.run(f"sshpass -p wrong ssh {SSH_OPTIONS} intruder@{target_ip} true")
        for _ in range(30):
            if client_ip in banned(host):
                break
            time.sleep(1)
        assert client_ip in banned(host), host.check_output(
            "journalctl -u fail2ban -u ssh --no-pager -n 40"
        )
        assert probe(target_ip, 22) != "open"
        refused = client.run(f"ssh {SSH_OPTIONS} -o BatchMode=yes root@{target_ip} true")
        assert "Connection refused" in refused.stderr or "timed out" in refused.stderr
    finally:
        host.run(f"fail2ban-client set sshd unbanip {client_ip}")
    assert client_ip not in banned(host)
    assert probe(target_ip, 22) == "open"
