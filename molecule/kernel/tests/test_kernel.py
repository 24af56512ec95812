"""What an operator would check by hand after the kernel role ran.

The test container's /proc/sys and /sys are read-only and it has no loadable
modules: keys the container can set must be live, the rest must be in the file
that applies them at boot and named by the role as not applied."""

import json

import pytest

SYSCTL_FILE = "/etc/sysctl.d/60-ytempire.conf"
WANTED = {
    "net.core.rmem_max": "134217728",
    "net.core.wmem_max": "134217728",
    "net.ipv4.tcp_rmem": "4096 87380 134217728",
    "net.ipv4.tcp_wmem": "4096 65536 134217728",
    "net.core.netdev_max_backlog": "5000",
    "net.ipv4.tcp_congestion_control": "bbr",
    "fs.file-max": "2097152",
    "fs.nr_open": "2097152",
    "vm.swappiness": "10",
    "vm.dirty_ratio": "15",
    "vm.dirty_background_ratio": "5",
    "net.ipv4.ip_forward": "1",
    "net.bridge.bridge-nf-call-iptables": "1",
    "vm.overcommit_memory": "1",
    "net.core.somaxconn": "65535",
    # From the scenario's kernel_sysctl_extra.
    "kernel.pid_max": "4194304",
}


def sysctl_file(host) -> dict[str, str]:
    settings = {}
    for line in host.file(SYSCTL_FILE).content_string.splitlines():
        if line.strip() and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings[key.strip()] = " ".join(value.split())
    return settings


def test_sysctl_file_holds_every_setting(host):
    sysctl = host.file(SYSCTL_FILE)
    assert (sysctl.user, sysctl.mode) == ("root", 0o644)
    assert {k: v for k, v in sysctl_file(host).items() if k in WANTED} == WANTED


def recorded(host) -> dict:
    return json.loads(host.file("/etc/ansible/facts.d/ytempire_kernel.fact").content_string)


@pytest.mark.parametrize("key", WANTED)
def test_each_key_is_live_or_reported(host, key):
    """A key the kernel lets the host set is live; any other is named, with the reason."""
    path = "/proc/sys/" + key.replace(".", "/")
    exists = host.file(path).exists
    live = " ".join(host.check_output(f"cat {path}").split()) if exists else None
    writable = exists and host.run(f"test -w {path}").rc == 0
    not_applied = recorded(host)["sysctl_not_applied"]
    if live == WANTED[key]:
        assert key not in not_applied
    elif writable:
        pytest.fail(f"{key} is settable here but live value is {live!r}")
    else:
        reason = not_applied[key]["reason"]
        assert reason == ("read-only here" if exists else "not present in this kernel or namespace")


def test_modules_not_loaded_are_reported(host):
    """The container cannot load modules: the role records that instead of failing."""
    record = recorded(host)
    if host.run("test -d /lib/modules/$(uname -r)").rc != 0:
        assert set(record["modules_not_loaded"]) == {"br_netfilter", "overlay", "tcp_bbr"}


def test_modules_load_at_boot(host):
    modules = host.file("/etc/modules-load.d/ytempire.conf").content_string.split()
    assert {"br_netfilter", "overlay", "tcp_bbr"} <= set(modules)


def test_transparent_hugepages_unit_enabled(host):
    unit = host.service("ytempire-thp.service")
    assert unit.is_enabled
    content = host.file("/etc/systemd/system/ytempire-thp.service").content_string
    assert "echo never > /sys/kernel/mm/transparent_hugepage/enabled" in content
    if host.run("test -w /sys/kernel/mm/transparent_hugepage/enabled").rc == 0:
        assert "[never]" in host.file("/sys/kernel/mm/transparent_hugepage/enabled").content_string
    else:
        # Skipped by its condition, not failed, where /sys is read-only.
        assert host.run("systemctl is-failed ytempire-thp.service").stdout.strip() != "failed"


def test_systemd_services_get_the_open_file_limit(host):
    shown = host.check_output("systemctl show -p DefaultLimitNOFILE -p DefaultLimitNOFILESoft")
    assert "DefaultLimitNOFILE=1048576" in shown.splitlines()
    assert "DefaultLimitNOFILESoft=131072" in shown.splitlines()
    # A service started now really runs with the limits, capped by what the
    # container's own hard limit allows (it lacks CAP_SYS_RESOURCE).
    ceiling = int(host.check_output("awk '/Max open files/ {print $5}' /proc/1/limits"))
    soft = host.check_output("systemd-run --quiet --wait --pipe sh -c 'ulimit -Sn'")
    hard = host.check_output("systemd-run --quiet --wait --pipe sh -c 'ulimit -Hn'")
    assert (int(soft), int(hard)) == (min(131072, ceiling), min(1048576, ceiling))


def test_login_sessions_get_the_open_file_limit(host):
    limits = host.file("/etc/security/limits.d/60-ytempire.conf").content_string
    assert "*    soft nofile 131072" in limits
    assert "*    hard nofile 1048576" in limits
    # Logins go through pam_limits, which reads limits.d.
    assert "pam_limits.so" in host.file("/etc/pam.d/login").content_string
