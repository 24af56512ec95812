"""Bad input to the nvidia role fails with a clear message before anything on
the host changes: input errors in the first play (the role's preflight), a
repository key with the wrong fingerprint before its source is written."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.targets import (
    DISTRO,
    Target,
    assert_refused_unchanged,
    start_target,
    stop_target,
)

# The role's input checks (tasks/preflight.yml), as site.yml's first play runs
# them. TODO(lead): "site.yml" once its preflight play includes the nvidia role.
PLAYBOOK = "site.yml"
# The role alone, past its input checks (the wrong-key case).
ROLE_PLAYBOOK = "tests/integration/nvidia.yml"
# Every key is checked before any source is written; the first key checked
# is the driver's where the distribution needs NVIDIA's repository for it (Debian),
# the toolkit's where the archive has the driver (Ubuntu).
FIRST_SOURCE = {
    "debian": (
        "ytempire-nvidia-driver",
        "EB693B3035CD5710E231E123A4B469963BF863CC",
        "nvidia_driver_repository_key_fingerprint",
    ),
    "ubuntu": (
        "ytempire-nvidia-container-toolkit",
        "C95B321B61E88C1809C4F759DDCAE044F796ECB0",
        "nvidia_container_toolkit_repository_key_fingerprint",
    ),
}[DISTRO.rstrip("0123456789")]

CASES = {
    "unknown driver branch": (
        {"nvidia_driver_branch": "999"},
        "Unknown driver branch '999' (nvidia_driver_branch): the role knows the branches "
        "470, 535, 550, 570, 580.",
    ),
    "driver branch not a number": (
        {"nvidia_driver_branch": "abc"},
        "Unknown driver branch 'abc' (nvidia_driver_branch)",
    ),
    "open modules on a branch without them": (
        {"nvidia_driver_branch": "470", "nvidia_driver_open": True},
        "nvidia_driver_open is true, but driver branch 470 has no open kernel modules: "
        "choose branch 535 or later, or set nvidia_driver_open to false.",
    ),
    "driver version outside the branch": (
        {"nvidia_driver_version": "580.95.05"},
        "nvidia_driver_version '580.95.05' is not a version of branch 570",
    ),
    "malformed toolkit version": (
        {"nvidia_container_toolkit_version": "1.17"},
        "Malformed nvidia_container_toolkit_version '1.17': it is the package version with "
        "its Debian revision, such as 1.17.8-1.",
    ),
    "toolkit version 'latest'": (
        {"nvidia_container_toolkit_version": "latest"},
        "Malformed nvidia_container_toolkit_version 'latest'",
    ),
    "malformed key fingerprint": (
        {"nvidia_container_toolkit_repository_key_fingerprint": "F796ECB0"},
        "the key fingerprint 'F796ECB0' must be 40 hexadecimal digits",
    ),
    "wrong type": (
        {"nvidia_require_gpu": "perhaps"},
        "nvidia_require_gpu",
    ),
}
if DISTRO.startswith("debian"):
    CASES["branch the distribution does not package"] = (
        {"nvidia_driver_branch": "470", "nvidia_driver_open": False},
        "Driver branch 470 (nvidia_driver_branch) is not packaged for Debian: choose one of "
        "535, 550, 570, 580.",
    )

# A fake sysfs PCI tree with one NVIDIA GPU (the role's probe reads any tree
# given in the private __nvidia_pci_devices_path): Blackwell's RTX 5090, and a
# Pascal GTX 1050 Ti.
GPU_CASES = {
    "Blackwell GPU with the proprietary modules": (
        "0x2b85",
        {"nvidia_driver_open": False},
        "The NVIDIA GPU 0000:01:00.0 (PCI device 0x2b85) is Blackwell or newer: only the open "
        "kernel modules of branch 570 or later drive it, and the input says nvidia_driver_open "
        "False, nvidia_driver_branch 570.",
    ),
    "Blackwell GPU with branch 550": (
        "0x2b85",
        {"nvidia_driver_branch": "550"},
        "nvidia_driver_open True, nvidia_driver_branch 550.",
    ),
    "Pascal GPU with the open modules": (
        "0x1c82",
        {},
        "The NVIDIA GPU 0000:01:00.0 (PCI device 0x1c82) is older than Turing: the open kernel "
        "modules do not drive it. Set nvidia_driver_open to false.",
    ),
}


@pytest.mark.docker
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_refused_before_change(refusals, case):
    refusals.assert_refused(case, CASES[case][1])


@pytest.mark.docker
@pytest.mark.parametrize("case", GPU_CASES, ids=list(GPU_CASES))
def test_driver_that_cannot_drive_the_gpu_refused(fresh_host, case):
    device, extra_vars, message = GPU_CASES[case]
    tree = f"/tmp/fake-pci-{device}"  # noqa: S108  in the host, volatile for the diff
    gpu = f"{tree}/0000:01:00.0"
    made = fresh_host.exec(
        "sh", "-c",
        f"mkdir -p {gpu} && echo 0x10de > {gpu}/vendor && echo 0x030000 > {gpu}/class"
        f" && echo {device} > {gpu}/device",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    extra_vars = {**extra_vars, "__nvidia_pci_devices_path": tree}
    assert_refused_unchanged(fresh_host, PLAYBOOK, extra_vars, message)


@pytest.mark.docker
def test_wrong_key_fingerprint_refused_before_the_source_is_written(fresh_host):
    # A real key on the host that is not NVIDIA's; file:// stands in for the URL.
    keyring = {
        "debian": "/usr/share/keyrings/debian-archive-keyring.gpg",
        "ubuntu": "/usr/share/keyrings/ubuntu-archive-keyring.gpg",
    }[DISTRO.rstrip("0123456789")]
    extra_vars = {
        "nvidia_require_gpu": True,
        "nvidia_driver_repository_key_url": f"file://{keyring}",
        "nvidia_container_toolkit_repository_key_url": f"file://{keyring}",
    }
    name, fingerprint, variable = FIRST_SOURCE
    result = assert_refused_unchanged(
        fresh_host,
        ROLE_PLAYBOOK,
        extra_vars,
        f"not exactly {fingerprint} ({variable}): the {name} source was not written.",
    )
    output = " ".join(result.stdout.split())
    assert f"The key file at file://{keyring} holds the primary key(s) " in output
    listing = fresh_host.exec("ls", "/etc/apt/sources.list.d", "/etc/apt/keyrings")
    assert "nvidia" not in listing.stdout


@pytest.mark.docker
def test_key_url_that_serves_no_key_refused(fresh_host):
    # A mirror's error page, or the wrong file: gpg finds no key in it.
    extra_vars = {
        "nvidia_require_gpu": True,
        "nvidia_driver_repository_key_url": "file:///etc/hostname",
        "nvidia_container_toolkit_repository_key_url": "file:///etc/hostname",
    }
    assert_refused_unchanged(
        fresh_host,
        ROLE_PLAYBOOK,
        extra_vars,
        "The key file at file:///etc/hostname holds the primary key(s) none, not exactly "
        f"{FIRST_SOURCE[1]} ({FIRST_SOURCE[2]}): the {FIRST_SOURCE[0]} source was not written.",
    )


@pytest.fixture(scope="module")
def devuan_host() -> Iterator[Target]:
    """A host whose os-release says Devuan: a Debian derivative the role does not know."""
    target = start_target(f"ytempire-pytest-devuan-{DISTRO}")
    os_release = (
        'PRETTY_NAME="Devuan GNU/Linux 5 (daedalus)"\\nNAME="Devuan GNU/Linux"\\n'
        'VERSION_ID="5"\\nVERSION_CODENAME=daedalus\\nID=devuan\\nID_LIKE=debian\\n'
    )
    made = target.exec(
        "sh", "-c", f"rm -f /etc/os-release && printf '{os_release}' > /etc/os-release"
    )
    assert made.returncode == 0, made.stderr
    try:
        yield target
    finally:
        stop_target(target)


@pytest.mark.docker
def test_unknown_distribution_refused_before_change(devuan_host):
    # Through site.yml the base role checks the distribution first: let it
    # accept Devuan, so that the nvidia role's own check is what refuses (and
    # give the docker role's check this machine's bundle, named by distribution).
    extra_vars = {
        "base_supported_distributions": [{"name": "Devuan", "versions": ["5"]}],
        "docker_offline_bundle": str(Path.home() / f".cache/ytempire/docker-bundle-{DISTRO}"),
    }
    assert_refused_unchanged(
        devuan_host,
        PLAYBOOK,
        extra_vars,
        "The nvidia role does not support Devuan 5: it knows the driver packages of "
        "Ubuntu 22.04/24.04 and Debian 12/13.",
    )
