#!/usr/bin/python
# SPDX-License-Identifier: MIT
"""Apply sysctl values to the running kernel where it allows, and say where not."""

from __future__ import annotations

DOCUMENTATION = r"""
module: kernel_sysctl_live
short_description: Apply sysctl values to the running kernel, reporting the keys it refuses
description:
  - Compares each key's live value under /proc/sys with the wanted one and writes the
    differing ones when /proc/sys lets it.
  - A key that does not exist here (hidden by a network namespace, its module not
    loaded) or that is read-only (a container's /proc/sys) is reported, not failed;
    the persistent file in /etc/sysctl.d applies it at the next boot of a real host.
options:
  settings:
    description: Keys (dotted, as in sysctl.conf) and their wanted values.
    type: dict
    required: true
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: full
"""

EXAMPLES = r"""
- name: Apply the kernel settings live
  kernel_sysctl_live:
    settings:
      vm.swappiness: 10
"""

RETURN = r"""
applied:
  description: Keys written to the running kernel by this run.
  type: list
  returned: always
current:
  description: Keys whose live value already was the wanted one.
  type: list
  returned: always
not_applied:
  description: Keys the running kernel refused, with the reason and the live value.
  type: dict
  returned: always
"""

import os  # noqa: E402  Ansible module layout: DOCUMENTATION precedes imports

from ansible.module_utils.basic import AnsibleModule  # noqa: E402  as above

PROC_SYS = "/proc/sys"


def proc_path(key: str, root: str = PROC_SYS) -> str:
    return os.path.join(root, *key.split("."))


def normalise(value: object) -> str:
    return " ".join(str(value).split())


def apply_settings(
    settings: dict[str, object], root: str = PROC_SYS, check_mode: bool = False
) -> dict[str, object]:
    """Write the differing keys under root (unless check_mode); say what happened to each."""
    applied: list[str] = []
    current: list[str] = []
    not_applied: dict[str, dict[str, str]] = {}
    for key, wanted in sorted(settings.items()):
        path = proc_path(key, root)
        if not os.path.exists(path):
            not_applied[key] = {"reason": "not present in this kernel or namespace", "live": ""}
            continue
        try:
            with open(path, encoding="utf-8") as handle:
                live = normalise(handle.read())
        except OSError as error:
            not_applied[key] = {"reason": f"unreadable: {error.strerror}", "live": ""}
            continue
        if live == normalise(wanted):
            current.append(key)
            continue
        if not os.access(path, os.W_OK):
            not_applied[key] = {"reason": "read-only here", "live": live}
            continue
        if not check_mode:
            try:
                with open(path, "w", encoding="utf-8") as handle:
                    handle.write(normalise(wanted))
            except OSError as error:
                not_applied[key] = {"reason": f"refused: {error.strerror}", "live": live}
                continue
        applied.append(key)
    return {"applied": applied, "current": current, "not_applied": not_applied}


def main() -> None:
    module = AnsibleModule(
        argument_spec={"settings": {"type": "dict", "required": True}},
        supports_check_mode=True,
    )
    result = apply_settings(module.params["settings"], check_mode=module.check_mode)
    module.exit_json(changed=bool(result["applied"]), **result)


if __name__ == "__main__":
    main()
