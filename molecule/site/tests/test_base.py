"""What an operator would check by hand after the base role ran."""

import json
import re
import shlex
from pathlib import Path

import pytest

testinfra_hosts = ["ansible://ytempire"]

FILES = Path(__file__).resolve().parent.parent / "files"


def test_baseline_packages_installed(host):
    for name in ("curl", "jq", "htop", "iotop", "unattended-upgrades", "tree", "sudo"):
        assert host.package(name).is_installed, name


def test_timezone_is_effective(host):
    assert host.file("/etc/localtime").linked_to.endswith("Europe/Berlin")
    assert host.check_output("date +%Z") in ("CET", "CEST")


def test_locale_generated_and_default_for_logins(host):
    assert "en_GB.utf8" in host.check_output("locale -a").split()
    assert "LANG=en_GB.UTF-8" in host.file("/etc/default/locale").content_string
    # pam_env reads /etc/default/locale: a login shell gets the locale.
    assert "LANG=en_GB.UTF-8" in host.check_output("su - alice -c locale")


def test_hostname(host):
    assert host.check_output("hostname") == "ytempire-site-test"
    assert host.file("/etc/hostname").content_string.strip() == "ytempire-site-test"


def test_service_account(host):
    user = host.user("ytempire")
    assert user.exists
    assert user.shell == "/usr/sbin/nologin"
    assert user.uid < 1000
    assert user.group == "ytempire"
    assert host.check_output("getent shadow ytempire").split(":")[1] in ("!", "*", "!*")


def test_admin_keys_are_exact_and_private(host):
    for name, comment in (("alice", "alice@ytempire.test"), ("bob", "bob@ytempire.test")):
        user = host.user(name)
        assert "ytempire-admins" in user.groups
        ssh_dir = host.file(f"/home/{name}/.ssh")
        keys = host.file(f"/home/{name}/.ssh/authorized_keys")
        assert ssh_dir.mode == 0o700
        assert ssh_dir.user == name
        assert keys.mode == 0o600
        assert keys.user == name
        lines = [line for line in keys.content_string.splitlines() if line.strip()]
        assert len(lines) == 1
        assert lines[0].endswith(comment)


def test_removed_admin_is_gone(host):
    assert not host.user("formeradmin").exists
    assert "formeradmin" not in host.group("ytempire-admins").members


def test_sudoers_valid_and_effective(host):
    sudoers = host.file("/etc/sudoers.d/ytempire-admins")
    assert sudoers.mode == 0o440
    assert sudoers.user == "root"
    assert host.run("visudo -c").rc == 0
    # alice may sudo without a password, bob only with one (he has none: denied).
    assert host.run("su alice -c 'sudo -n true'").rc == 0
    denied = host.run("su bob -c 'sudo -n true'")
    assert denied.rc != 0
    assert "password is required" in denied.stderr
    assert "(ALL : ALL) ALL" in host.check_output("sudo -l -U bob")


@pytest.mark.parametrize(
    ("path", "owner", "group", "mode"),
    [
        ("/opt/ytempire", "root", "ytempire", 0o755),
        ("/opt/ytempire/scripts", "root", "ytempire", 0o755),
        ("/data", "root", "root", 0o755),
        ("/data/media", "ytempire", "ytempire", 0o750),
        ("/backup", "root", "ytempire", 0o750),
        ("/var/log/ytempire", "ytempire", "ytempire", 0o755),
    ],
)
def test_directory_layout(host, path, owner, group, mode):
    directory = host.file(path)
    assert directory.is_directory
    assert (directory.user, directory.group, directory.mode) == (owner, group, mode)


def test_extra_ca_is_trusted_and_stale_one_removed(host):
    managed = "/usr/local/share/ca-certificates/ytempire"
    assert host.file(f"{managed}/molecule-test-ca.crt").exists
    assert not host.file(f"{managed}/stale.crt").exists
    leaf = (FILES / "test-leaf.pem").read_text()
    host.run(f"printf '%s' '{leaf}' > /tmp/leaf.pem")
    # A certificate signed by the test CA verifies against the system store.
    verified = host.run("openssl verify -CApath /etc/ssl/certs /tmp/leaf.pem")
    assert verified.rc == 0, verified.stderr
    bundle = host.file("/etc/ssl/certs/ca-certificates.crt").content_string
    assert (FILES / "test-ca.pem").read_text().strip().splitlines()[1] in bundle


# What unattended-upgrade makes of the configuration, from its own functions
# (the script loaded as a module): the origins it allows, and for each package
# file of the host's apt cache whether it would upgrade from it; its package
# blacklist. `unattended-upgrade --dry-run --debug` prints the same after
# weighing every package for 90 s of CI.
UNATTENDED_PROBE = """
import importlib.machinery, importlib.util, json, apt_pkg
loader = importlib.machinery.SourceFileLoader("uu", "/usr/bin/unattended-upgrade")
uu = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
loader.exec_module(uu)
apt_pkg.init_system()
allowed = uu.get_allowed_origins()
files = [
    {"archive": f.archive, "label": f.label, "allowed": uu.is_allowed_origin(f, allowed)}
    for f in apt_pkg.Cache(None).file_list
    if f.archive not in ("", "now")
]
blacklist = apt_pkg.config.value_list("Unattended-Upgrade::Package-Blacklist")
print(json.dumps({"allowed": allowed, "blacklist": blacklist, "files": files}))
"""


def test_unattended_upgrades_take_security_updates(host):
    periodic = host.check_output("apt-config dump APT::Periodic")
    assert 'APT::Periodic::Unattended-Upgrade "1";' in periodic
    probe = json.loads(host.check_output(f"python3 -c {shlex.quote(UNATTENDED_PROBE)}"))
    codename = host.system_info.codename
    assert any(f"{codename}-security" in origin for origin in probe["allowed"]), probe
    # The security archive's files are upgraded from, no other archive's.
    by_archive = {f["archive"]: f["allowed"] for f in probe["files"]}
    assert any(a.endswith("-security") and allowed for a, allowed in by_archive.items()), probe
    assert not any(allowed for a, allowed in by_archive.items() if not a.endswith("-security")), (
        probe
    )
    assert "^nvidia-" in probe["blacklist"]
    for timer in ("apt-daily.timer", "apt-daily-upgrade.timer"):
        assert host.service(timer).is_enabled


def test_journald_capped(host):
    dropin = host.file("/etc/systemd/journald.conf.d/ytempire.conf")
    assert "SystemMaxUse=300M" in dropin.content_string
    assert host.file("/var/log/journal").is_directory
    # journald announces the limit it actually applies.
    log = host.check_output("journalctl -b -u systemd-journald --no-pager -o cat")
    system_journal = [line for line in log.splitlines() if line.startswith("System Journal")]
    # systemd 252 prints "max 300.0M", 257 "max 300M".
    assert re.search(r"max 300(\.0)?M,", system_journal[-1]), system_journal


def test_local_fact_matches_the_host(host):
    """What the role recorded (playbooks/summary.yml reads it) is what the host has."""
    fact = json.loads(host.file("/etc/ansible/facts.d/ytempire_base.fact").content_string)
    assert fact["role"] == "base"
    admins = set(host.group("ytempire-admins").members)
    assert set(fact["admin_users"]) == admins == {"alice", "bob"}
    for path in fact["directories"]:
        assert host.file(path).is_directory, path
