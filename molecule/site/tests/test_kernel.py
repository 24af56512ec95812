"""What an operator would check by hand after the kernel role ran.

The test container's /sys and most of /proc/sys are read-only and it has no
loadable modules; /proc/sys/net, its own network namespace, is writable (the
test image remounts it at boot). Keys the container can set must be live, the
rest must be in the file that applies them at boot and named by the role as
not applied."""

import json

import pytest

testinfra_hosts = ["ansible://ytempire"]

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


# Keys of the container's own network namespace: writable here, so they must be live.
NAMESPACED = (
    "net.ipv4.ip_forward",
    "net.core.somaxconn",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "net.ipv4.tcp_congestion_control",
)


def live(host, key: str) -> str:
    return " ".join(host.check_output(f"sysctl -n {key}").split())


@pytest.mark.parametrize("key", NAMESPACED)
def test_network_namespace_keys_are_live(host, key):
    assert host.run(f"test -w /proc/sys/{key.replace('.', '/')}").rc == 0, "not writable here"
    assert live(host, key) == WANTED[key]
    assert key not in recorded(host)["sysctl_not_applied"]


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
    if host.run("test -w /sys/kernel/mm/transparent_hugepage/enabled").rc == 0:
        assert "[never]" in host.file("/sys/kernel/mm/transparent_hugepage/enabled").content_string
    else:
        # /sys is read-only here: systemd skipped the unit by its condition; it did not fail.
        shown = host.check_output("systemctl show -p ConditionResult -p Result ytempire-thp")
        assert sorted(shown.splitlines()) == ["ConditionResult=no", "Result=success"], shown


# The scenario's limits (machine.yml and site.yml): this machine caps open files at
# 20000 and its containers cannot raise that (no CAP_SYS_RESOURCE), so the guide's
# values would be refused by pam_limits here; these are below the cap and differ
# from the image's own 1024:20000.
NOFILE_SOFT, NOFILE_HARD = 8192, 16384


def test_systemd_services_get_the_open_file_limit(host):
    shown = host.check_output("systemctl show -p DefaultLimitNOFILE -p DefaultLimitNOFILESoft")
    assert f"DefaultLimitNOFILE={NOFILE_HARD}" in shown.splitlines()
    assert f"DefaultLimitNOFILESoft={NOFILE_SOFT}" in shown.splitlines()
    # A service started now really runs with the limits.
    soft = host.check_output("systemd-run --quiet --wait --pipe sh -c 'ulimit -Sn'")
    hard = host.check_output("systemd-run --quiet --wait --pipe sh -c 'ulimit -Hn'")
    assert (int(soft), int(hard)) == (NOFILE_SOFT, NOFILE_HARD)


def test_login_sessions_get_the_open_file_limit(host):
    """A login goes through pam_limits, which reads limits.d: alice's login shell has them."""
    soft = host.check_output("su -l alice -s /bin/sh -c 'ulimit -Sn'")
    hard = host.check_output("su -l alice -s /bin/sh -c 'ulimit -Hn'")
    assert (int(soft), int(hard)) == (NOFILE_SOFT, NOFILE_HARD)
