"""A value of the wrong type is refused by the role's argument specification
(meta/argument_specs.yml), through site.yml's first play, before anything on
the host changes. The messages asserted are the validator's own: without the
specification these runs fail later, or not at all, and the tests fail."""

import re

import pytest

from tests.support.targets import refuse_all

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


@pytest.fixture(scope="module")
def refusals(fresh_host):
    """site.yml run once for all the roles' cases, each a name of the host with its variable."""
    cases = {role: {variable: value} for role, (variable, value, _) in CASES.items()}
    return refuse_all(fresh_host, "site.yml", cases)


@pytest.mark.docker
@pytest.mark.parametrize("role", CASES, ids=list(CASES))
def test_wrong_type_refused_by_the_argument_spec(refusals, role):
    variable, _, wanted = CASES[role]
    refusals.assert_refused(role, "Validation of arguments failed")
    # The validator's words (argument 'NAME', or ''NAME'' where a callback quotes them).
    pattern = rf"argument '+{variable}'+ is of type str and we were unable to convert to {wanted}"
    assert re.search(pattern, refusals.failures[role]), refusals.failures[role]
