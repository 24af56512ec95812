#!/usr/bin/python
# SPDX-License-Identifier: MIT
"""Make, check, fetch, prune and drill the platform's restore points."""

from __future__ import annotations

DOCUMENTATION = r"""
module: restore_point
short_description: Make, verify, fetch, prune or drill a restore point of the platform
description:
  - Runs on the server, with the settings the backup role wrote to O(config_file) (the same
    file its timers read), so a playbook and a timer make the same restore point.
  - C(state=present) makes one point of O(scope) under C(<backup_dir>/points/<id>), after a
    check that the backup disk can take one as large as the last. A point holds the logical
    dump of the database (custom format, compressed with zstd, made inside the PostgreSQL
    container from one snapshot that also counted every table's rows), the roles, the Redis
    RDB of a BGSAVE that began after the run did (checked with C(redis-check-rdb)), and for
    C(daily) and C(full) a physical base backup for point-in-time recovery, the application
    files and configuration, and the running images' digests; C(full) adds the media. The
    manifest (sha256 and size of each file, versions, durations, row counts, the sentinel row)
    is written last, then the point is verified and copied to S3 when configured, and only
    then retention runs. A failure removes the point's files, runs no retention, writes the
    failure to the metrics and posts to Slack (a failed post only warns).
  - C(state=verified) checks the point O(point) (or every local point) against its manifest,
    locally and with O(remote) in S3 too, where each object is downloaded and decrypted.
  - C(state=fetched) downloads O(point) (C(latest) is the newest complete one) from S3 into
    the local points, checked against its manifest (the disaster-recovery playbook).
  - C(state=pruned) applies retention. Only verified points count, and the newest
    C(minimum_redundancy) verified points of each scope are kept at any age.
  - C(state=drilled) restores O(point) into a scratch Compose project, checks the row counts
    and the sentinel row, and measures the recovery time and point against O(objectives).
options:
  state:
    description: What to do.
    type: str
    choices: [present, verified, fetched, pruned, drilled]
    default: present
  scope:
    description: The kind of point that C(state=present) makes.
    type: str
    choices: [database, daily, full]
    default: daily
  point:
    description: A point id, or C(latest) (C(verified), C(fetched), C(drilled)).
    type: str
  fetch_scope:
    description: With C(state=fetched) and O(point=latest), the newest complete point of this scope.
    type: str
    choices: [database, daily, full]
  remote:
    description: With C(state=verified), check the copy in S3 too.
    type: bool
    default: false
  objectives:
    description: The recovery objectives a drill is held to (C(rto), C(rpo) as C(30m), C(1h)).
    type: dict
  config_file:
    description: The backup settings (JSON, mode 0600) the backup role writes.
    type: path
    default: /etc/ytempire/backup.json
  settings:
    description:
      - Settings over those of O(config_file), for this run only.
      - The secrets among them (the database password, the S3 secret key, the encryption key,
        the Slack webhook) are masked in what the module returns.
    type: dict
    default: {}
author: YTEMPIRE operations
"""

EXAMPLES = r"""
- name: Make a daily restore point
  restore_point:
    state: present
    scope: daily

- name: Check the newest point in S3
  restore_point:
    state: verified
    point: latest
    remote: true
"""

RETURN = r"""
point:
  description: What was done (id, size, durations, retention, offsite upload, drill figures).
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.ytempire_backup_ops import (  # noqa: E402
    BackupError,
    config_from_file,
    drill,
    fetch_point,
    make_point,
    prune,
    secret_values,
    verify,
)  # noqa: E402


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "state": {
                "type": "str",
                "choices": ["present", "verified", "fetched", "pruned", "drilled"],
                "default": "present",
            },
            "scope": {"type": "str", "choices": ["database", "daily", "full"], "default": "daily"},
            "point": {"type": "str"},
            "remote": {"type": "bool", "default": False},
            "fetch_scope": {"type": "str", "choices": ["database", "daily", "full"]},
            "objectives": {"type": "dict"},
            "config_file": {"type": "path", "default": "/etc/ytempire/backup.json"},
            "settings": {"type": "dict", "default": {}},
        },
        required_if=[("state", "fetched", ["point"])],
        supports_check_mode=True,
    )
    state = module.params["state"]
    try:
        config = config_from_file(module.params["config_file"], module.params["settings"])
        module.no_log_values.update(secret_values(config))
        if module.check_mode:
            module.exit_json(
                changed=state in ("present", "fetched", "pruned"), point={"state": state}
            )
        if state == "present":
            result = make_point(config, module.params["scope"])
            for warning in result["warnings"]:
                module.warn(warning)
            module.exit_json(changed=True, point=result)
        if state == "verified":
            result = verify(config, module.params["point"], module.params["remote"])
            if not result["ok"]:
                module.fail_json(
                    msg="restore points do not verify: "
                    + "; ".join(
                        f"{pid}: {', '.join(problems)}"
                        for where in ("local", "offsite")
                        for pid, problems in result.get(where, {}).items()
                        if problems
                    ),
                    point=result,
                )
            module.exit_json(changed=False, point=result)
        if state == "fetched":
            result = fetch_point(config, module.params["point"], module.params["fetch_scope"])
            module.exit_json(changed=result["downloaded"], point=result)
        if state == "pruned":
            result = prune(config)
            module.exit_json(
                changed=bool(
                    result["local"]["deleted"]
                    or result.get("offsite", {}).get("deleted")
                    or result["wal_deleted"]
                ),
                point=result,
            )
        result = drill(config, module.params["point"], module.params["objectives"])
        module.exit_json(changed=False, point=result)
    except BackupError as exc:
        module.fail_json(msg=str(exc), point=getattr(exc, "result", {}))


if __name__ == "__main__":
    main()
