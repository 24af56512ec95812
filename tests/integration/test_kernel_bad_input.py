"""Bad input to the kernel role (through site.yml, as an operator runs it) fails
with a clear message before anything on the host changes."""

import pytest

CASES = {
    "unknown sysctl key": (
        {"kernel_sysctl_extra": {"net.ipv4.tcp_no_such_knob": 1}},
        "Unknown sysctl key(s): net.ipv4.tcp_no_such_knob.",
    ),
    "malformed sysctl key": (
        {"kernel_sysctl_extra": {"vm swappiness": 10}},
        "sysctl keys must be dotted names such as vm.swappiness",
    ),
    "hard limit above fs.nr_open": (
        {"kernel_nofile_hard": 4194304},
        "kernel_nofile_hard (4194304) <= fs.nr_open (2097152)",
    ),
    "soft limit above hard limit": (
        {"kernel_nofile_soft": 2000000, "kernel_nofile_hard": 1000000},
        "1024 <= kernel_nofile_soft (2000000) <= kernel_nofile_hard (1000000)",
    ),
    "wrong type": (
        {"kernel_nofile_soft": "plenty"},
        "kernel_nofile_soft",
    ),
    "unknown choice": (
        {"kernel_transparent_hugepage": "off"},
        "kernel_transparent_hugepage",
    ),
}


@pytest.mark.docker
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_refused_before_change(refusals, case):
    refusals.assert_refused(case, CASES[case][1])
