"""The nvidia role with the guide's defaults on a server without a GPU (the
test hosts have none): nothing NVIDIA on the host, and a local fact that says
why. The molecule/nvidia scenario shows the other branch (a host that insists
on a GPU, installing from a signed stand-in mirror)."""

import json

testinfra_hosts = ["ansible://ytempire"]

FACT = "/etc/ansible/facts.d/ytempire_nvidia.fact"


def test_nothing_nvidia_on_a_host_without_a_gpu(host):
    assert host.run("ls /etc/apt/sources.list.d/ | grep -i nvidia").stdout == ""
    assert not host.file("/etc/apt/preferences.d/ytempire-nvidia.pref").exists
    assert not host.file("/etc/apt/keyrings/ytempire-nvidia-driver.gpg").exists
    assert not host.file("/etc/udev/rules.d/71-nvidia-dev-char.rules").exists
    # nouveau is not blacklisted where no driver replaces it.
    assert "blacklist nouveau" not in host.check_output("modprobe --showconfig")
    packages = host.check_output("dpkg-query --showformat '${Package}\\n' --show")
    assert not [p for p in packages.split() if "nvidia" in p], packages
    assert host.check_output("apt-mark showhold") == ""
    # The test host sees PCI devices, none of them NVIDIA's.
    vendors = host.check_output("cat /sys/bus/pci/devices/*/vendor").split()
    assert vendors
    assert "0x10de" not in vendors


def test_fact_says_why_the_role_skipped(host):
    fact = json.loads(host.file(FACT).content_string)
    assert fact["gpu_present"] is False
    assert fact["installed"] is False
    assert fact["pci_devices"] == []
    assert fact["driver_version"] is None
    assert "No NVIDIA GPU on this host" in fact["skipped"]
    assert "/sys/bus/pci/devices" in fact["skipped"]
    assert "nvidia_require_gpu" in fact["skipped"]


def test_docker_has_no_nvidia_runtime(host):
    runtimes = json.loads(host.check_output("docker info --format '{{json .Runtimes}}'"))
    assert "nvidia" not in runtimes
    assert "runtimes" not in json.loads(host.file("/etc/docker/daemon.json").content_string)
