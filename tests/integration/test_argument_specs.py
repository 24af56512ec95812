"""A value of the wrong type is refused by the role's argument specification
(meta/argument_specs.yml), through site.yml's first play, before anything on
the host changes. The messages asserted are the validator's own: without the
specification these runs fail later, or not at all, and the tests fail."""

import re

import pytest

CASES = {
    "base": ("base_min_vcpus", "plenty", "int"),
    "kernel": ("kernel_nofile_soft", "plenty", "int"),
    "security": ("security_ssh_port", "twenty-two", "int"),
    "docker": ("docker_log_max_file", "five", "int"),
    "nvidia": ("nvidia_require_gpu", "perhaps", "bool"),
    "stack": ("stack_worker_stop_grace_seconds", "ten minutes", "int"),
    "nginx": ("nginx_https_port", "https", "int"),
    "backup": ("backup_minimum_redundancy", "two", "int"),
    "monitoring": ("monitoring_log_rotate_days", "a week", "int"),
}


@pytest.mark.docker
@pytest.mark.parametrize("role", CASES, ids=list(CASES))
def test_wrong_type_refused_by_the_argument_spec(fresh_host, role):
    variable, value, wanted = CASES[role]
    before = fresh_host.diff()
    result = fresh_host.playbook("site.yml", {variable: value})
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0, output
    assert "Validation of arguments failed" in output, output
    # The callback quotes the validator's words (argument 'NAME' or ''NAME'').
    pattern = rf"argument '+{variable}'+ is of type str and we were unable to convert to {wanted}"
    assert re.search(pattern, output), output
    assert fresh_host.diff() == before, "the refused run changed the host"
