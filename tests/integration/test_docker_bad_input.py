"""Bad input to the docker role (through site.yml, as an operator runs it)
fails with a clear message before anything on the host changes."""

import pytest

CASES = {
    "daemon option of the wrong type": (
        {"docker_daemon_options": {"live-restore": "yes"}},
        "Invalid daemon.json setting live-restore in docker_daemon_options: it must be true or "
        'false, not "yes".',
    ),
    "daemon option number given as text": (
        {"docker_daemon_options": {"max-concurrent-downloads": "6"}},
        "Invalid daemon.json setting max-concurrent-downloads in docker_daemon_options: it must "
        'be an integer, not "6".',
    ),
    "unknown daemon option": (
        {"docker_daemon_options": {"max_concurrent_downloads": 6}},
        "Unknown daemon.json setting(s) in docker_daemon_options: max_concurrent_downloads.",
    ),
    "registry address without a port": (
        {"docker_registry_address": "registry.internal"},
        "Invalid docker_registry_address 'registry.internal': give host:port",
    ),
    "registry port out of range": (
        {"docker_registry_address": "localhost:70000"},
        "Invalid docker_registry_address 'localhost:70000'",
    ),
    "engine branch older than 24": (
        {"docker_version": "20.10"},
        "Invalid docker_version 20.10: give the engine branch as major.minor, 24.0 or newer",
    ),
    "offline install without a bundle": (
        {"docker_offline_bundle": "/nonexistent/bundle"},
        "docker_install_source is offline, but docker_offline_bundle ('/nonexistent/bundle') is "
        "not a bundle directory",
    ),
    "open-file limit above what the host allows": (
        {"docker_default_nofile": 10**6},
        "docker_default_nofile is 1000000, but this host lets the engine raise the open-file "
        "limit to",
    ),
    "unknown install source": (
        {"docker_install_source": "snap"},
        "docker_install_source",
    ),
    "address pool outside the firewall's Docker networks": (
        {"docker_default_address_pools": [{"base": "192.168.96.0/20", "size": 24}]},
        "docker_default_address_pools has 192.168.96.0/20, outside every network of "
        "security_firewall_docker_private_networks (10.210.0.0/16, 172.17.0.0/16)",
    ),
    "address pool wider than the firewall's Docker network": (
        {"docker_default_address_pools": [{"base": "10.0.0.0/8", "size": 24}]},
        "docker_default_address_pools has 10.0.0.0/8, outside every network of",
    ),
}


@pytest.mark.docker
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_refused_before_change(refusals, case):
    refusals.assert_refused(case, CASES[case][1])
