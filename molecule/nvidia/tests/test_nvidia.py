"""What an operator would check by hand after the nvidia role ran on a host
without a GPU that insists on one (nvidia_require_gpu): everything but what
needs the device, from the scenario's signed test mirror. The site scenario
shows the defaults on a host without a GPU (nothing at all, and why)."""

import json
import os
import re
from pathlib import Path

import pytest

testinfra_hosts = ["ansible://ytempire"]

# What prepare.yml's mirror offers (molecule.yml) and what the pins must pick.
DRIVER_BRANCH = "570"
DRIVER_NEWEST_OF_BRANCH = "570.195.03"
DRIVER_OTHER_BRANCH = "580.95.05"
TOOLKIT_VERSION = "1.17.8-1"
TOOLKIT_NEWER = "1.18.0-1"
TOOLKIT_PACKAGES = (
    "nvidia-container-toolkit",
    "nvidia-container-toolkit-base",
    "libnvidia-container-tools",
    "libnvidia-container1",
)
SOURCES = {
    "ytempire-nvidia-driver": "/cuda/",
    "ytempire-nvidia-container-toolkit": "/libnvidia-container/stable/deb/amd64",
}
FACT = "/etc/ansible/facts.d/ytempire_nvidia.fact"


@pytest.fixture(scope="module")
def mirror_fingerprint() -> str:
    path = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "nvidia-test-mirror.fpr"
    return path.read_text().strip()


@pytest.fixture(scope="module")
def driver_packages(host) -> list[str]:
    """The names the role selects on this distribution (open modules, branch 570)."""
    if host.system_info.distribution == "ubuntu":
        b = DRIVER_BRANCH
        return [
            f"nvidia-headless-{b}-server-open",
            f"nvidia-utils-{b}-server",
            f"libnvidia-encode-{b}-server",
            f"libnvidia-decode-{b}-server",
        ]
    return [
        "nvidia-driver-cuda",
        "nvidia-kernel-open-dkms",
        "nvidia-smi",
        "nvidia-persistenced",
        "libnvidia-encode1",
        "libnvcuvid1",
    ]


def installed_version(host, package: str) -> str:
    return host.check_output(f"dpkg-query --showformat '${{Version}}' --show {package}")


def primary_fingerprints(host, keyring: str) -> list[str]:
    out = host.check_output(f"gpg --batch --show-keys --with-colons {keyring}")
    return re.findall(r"^pub:[^\n]*\nfpr:(?:[^:\n]*:){8}([0-9A-F]{40}):", out, re.MULTILINE)


# --- insisted: no GPU, nvidia_require_gpu: true ------------------------------


def test_sources_are_signed_by_the_checked_key(host, mirror_fingerprint):
    for name, path in SOURCES.items():
        source = host.file(f"/etc/apt/sources.list.d/{name}.sources")
        assert source.mode == 0o644
        fields = dict(
            line.split(": ", 1)
            for line in source.content_string.splitlines()
            if ": " in line and not line.startswith("#")
        )
        assert fields["URIs"].endswith(path), fields  # $(ARCH) became amd64
        assert fields["Suites"] == "/"
        assert fields["Signed-By"] == f"/etc/apt/keyrings/{name}.gpg"
        # The keyring holds the checked key and nothing else.
        assert primary_fingerprints(host, fields["Signed-By"]) == [mirror_fingerprint]
    # apt itself trusts the sources (a bad signature would fail the update).
    update = host.run("apt-get update")
    assert update.rc == 0, update.stderr
    assert "NO_PUBKEY" not in update.stderr
    assert "not signed" not in update.stderr


def test_driver_installed_from_the_branch_not_the_newest(host, driver_packages):
    for package in driver_packages:
        version = installed_version(host, package)
        assert version.startswith(f"{DRIVER_NEWEST_OF_BRANCH}-"), (package, version)
    policy = host.check_output(f"apt-cache policy {driver_packages[0]}")
    # The newer branch is in the sources, yet apt would not take it.
    assert DRIVER_OTHER_BRANCH in policy
    assert re.search(rf"Candidate: {re.escape(DRIVER_NEWEST_OF_BRANCH)}-", policy), policy


def test_toolkit_installed_at_the_pinned_version(host):
    for package in TOOLKIT_PACKAGES:
        assert installed_version(host, package) == TOOLKIT_VERSION, package
    policy = host.check_output("apt-cache policy nvidia-container-toolkit")
    assert TOOLKIT_NEWER in policy
    assert f"Candidate: {TOOLKIT_VERSION}" in policy
    assert host.file("/usr/bin/nvidia-container-runtime").is_file
    assert host.file("/usr/bin/nvidia-ctk").is_file


def test_packages_held_and_pinned(host, driver_packages):
    held = host.check_output("apt-mark showhold").split()
    for package in (*driver_packages, *TOOLKIT_PACKAGES):
        assert package in held, package
    preferences = host.file("/etc/apt/preferences.d/ytempire-nvidia.pref").content_string
    assert f"Pin: version /^([0-9]+:)?{DRIVER_BRANCH}\\./" in preferences
    assert f"Pin: version {TOOLKIT_VERSION}" in preferences
    # What apt makes of it: 1001 for the branch, nothing for the other one.
    policy = host.check_output(f"apt-cache policy {driver_packages[0]}")
    assert re.search(rf"{re.escape(DRIVER_NEWEST_OF_BRANCH)}-\S+ 1001", policy), policy
    assert re.search(rf"{re.escape(DRIVER_OTHER_BRANCH)}-\S+ 500", policy), policy
    # A full upgrade leaves every NVIDIA package where it is.
    upgrade = host.check_output("apt-get --simulate dist-upgrade")
    assert not re.search(r"^Inst (lib)?nvidia", upgrade, re.MULTILINE), upgrade


def test_unattended_upgrades_still_blacklist_the_driver(host, driver_packages):
    dump = host.check_output("apt-config dump Unattended-Upgrade::Package-Blacklist")
    patterns = re.findall(r'Package-Blacklist:: "([^"]+)";', dump)
    assert "^nvidia-" in patterns, patterns
    assert "^libnvidia-" in patterns, patterns
    held = set(host.check_output("apt-mark showhold").split())
    for package in (*driver_packages, *TOOLKIT_PACKAGES):
        # Blacklisted for unattended-upgrades, and held by dpkg in any case.
        blacklisted = any(re.search(pattern, package) for pattern in patterns)
        assert blacklisted or package in held, package


def test_nouveau_blacklisted(host):
    blacklist = host.file("/etc/modprobe.d/ytempire-blacklist-nouveau.conf")
    assert blacklist.mode == 0o644
    # What modprobe itself makes of its configuration.
    config = host.check_output("modprobe --showconfig").splitlines()
    assert "blacklist nouveau" in config
    assert "options nouveau modeset=0" in config


def test_dev_char_udev_rule(host):
    rule = host.file("/etc/udev/rules.d/71-nvidia-dev-char.rules").content_string
    assert 'ACTION=="add", DEVPATH=="/bus/pci/drivers/nvidia"' in rule
    assert 'RUN+="/usr/bin/nvidia-ctk system create-dev-char-symlinks --create-all"' in rule


def test_persistenced_enabled_in_persistence_mode_but_not_started(host):
    service = host.service("nvidia-persistenced")
    assert service.is_enabled
    # No device: the daemon starts at the boot after the card is fitted.
    assert not service.is_running
    execstart = host.check_output("systemctl show -p ExecStart nvidia-persistenced")
    assert "--persistence-mode" in execstart


def test_nothing_that_needs_a_gpu_was_done(host):
    assert not host.file("/etc/cdi/nvidia.yaml").exists
    assert host.run("find /dev/char -lname '*nvidia*'").stdout == ""


def test_local_fact_records_the_install_without_gpu(host):
    fact = json.loads(host.file(FACT).content_string)
    assert fact["role"] == "nvidia"
    assert fact["gpu_present"] is False
    assert fact["installed"] is True
    assert fact["skipped"] is None
    assert fact["driver_branch"] == DRIVER_BRANCH
    assert fact["driver_version"] == DRIVER_NEWEST_OF_BRANCH
    assert fact["container_toolkit_version"] == TOOLKIT_VERSION
    assert fact["reboot_pending"] is False
    assert "the CDI specification" in fact["deferred"]
    assert fact["cdi_spec"] is None


# --- insisted: the docker role, run after nvidia -------------------------------


def test_docker_registers_the_nvidia_runtime(host):
    daemon = json.loads(host.file("/etc/docker/daemon.json").content_string)
    assert daemon["runtimes"]["nvidia"]["path"] == "/usr/bin/nvidia-container-runtime"
    runtimes = json.loads(host.check_output("docker info --format '{{json .Runtimes}}'"))
    assert "nvidia" in runtimes, runtimes
    assert runtimes["nvidia"]["path"] == "/usr/bin/nvidia-container-runtime"
