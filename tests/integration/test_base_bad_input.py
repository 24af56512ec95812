"""Bad input to the base role (through site.yml, as an operator runs it) fails
with a clear message before anything on the host changes."""

import pytest

CASES = {
    "unsupported distribution": (
        {"base_supported_distributions": [{"name": "Ubuntu", "versions": ["22.04"]}]},
        "is not supported; base_supported_distributions allows Ubuntu 22.04",
    ),
    "too few CPUs": (
        {"base_min_vcpus": 4096},
        "the minimum is 4096 vCPUs",
    ),
    "too little memory": (
        {"base_min_memory_mb": 10**9},
        "the minimum is 2 vCPUs, 1000000000 MiB",
    ),
    "wrong type": (
        {"base_min_vcpus": "plenty"},
        "base_min_vcpus",
    ),
    "unknown choice": (
        {"base_journald_storage": "cloud"},
        "base_journald_storage",
    ),
    "directory mode not octal": (
        {"base_directories": [{"path": "/data", "owner": "root", "group": "root", "mode": "755"}]},
        "base_directories paths absolute with modes like",
    ),
    "CA certificate with two sources": (
        {
            "base_extra_ca_certificates": [
                {"name": "corp", "content": "-----BEGIN CERTIFICATE-----", "src": "/etc/hosts"}
            ]
        },
        "base_extra_ca_certificates entry 'corp' needs a file-safe name and exactly one of",
    ),
    "admin named like the service account": (
        {"base_admin_users": [{"name": "ytempire", "ssh_keys": []}]},
        "admin user names unique and neither root nor ytempire",
    ),
}


@pytest.mark.docker
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_refused_before_change(refusals, case):
    refusals.assert_refused(case, CASES[case][1])


@pytest.mark.docker
def test_check_mode_on_fresh_host_changes_nothing(fresh_host):
    before = fresh_host.diff()
    result = fresh_host.playbook("site.yml", check=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "failed=0" in result.stdout
    assert fresh_host.diff() == before
