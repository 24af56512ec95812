#!/usr/bin/python
# SPDX-License-Identifier: MIT
"""Restore the platform's database, Redis and files from a restore point."""

from __future__ import annotations

DOCUMENTATION = r"""
module: database_restore
short_description: Restore the database (from a dump or to a point in time), Redis and the files
description:
  - Runs on the server, with the settings the backup role wrote to O(config_file). Holds the
    backup lock, so no backup runs during a restore. The point must verify against its
    manifest first.
  - C(method=logical) stops the API and the worker of both colors, restores the point's dump
    with C(pg_restore) from the PostgreSQL image itself (in parallel, the first error fatal)
    into a scratch database, checks every table's row count against the dump's, and only
    then renames the live database away and the scratch one into its place. A restore that
    fails drops the scratch database and leaves the live one untouched. The API and the
    worker are started again and must become healthy.
  - C(method=point_in_time) recovers the cluster from the newest daily or full point's base
    backup made before O(target_time) and the WAL archive, to O(target_time) or as far as
    the archive goes. The cluster's directory is moved aside; when recovery fails it is put
    back and started.
  - O(parts) adds C(redis) (the RDB, with the append-only files moved aside), C(media) and
    C(files) (the application files and configuration, extracted under O(files_destination)).
options:
  method:
    description: How to restore the database.
    type: str
    choices: [logical, point_in_time]
    default: logical
  point:
    description: The restore point's id, or C(latest) (the newest verified one).
    type: str
    default: latest
  target_time:
    description: With C(method=point_in_time), the time to recover to (ISO 8601, UTC when no zone).
    type: str
  parts:
    description: What to restore.
    type: list
    elements: str
    choices: [database, redis, media, files]
    default: [database]
  files_destination:
    description: Where C(files) are extracted (C(/) puts them back in place).
    type: path
    default: /
  keep_previous:
    description: Keep the replaced database (renamed C(<name>_before_restore_<time>)).
    type: bool
    default: false
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
- name: Restore the newest point's dump
  database_restore:
    method: logical

- name: Recover the database to just before a bad migration
  database_restore:
    method: point_in_time
    target_time: "2026-12-02T09:41:00Z"
"""

RETURN = r"""
restore:
  description: What was restored, from which point, and how long each part took.
  returned: always
  type: dict
"""

import os  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.ytempire_backup_ops import (  # noqa: E402  # noqa: E402  # noqa: E402
    BackupError,
    config_from_file,
    find_point,
    lock,
    restore_database,
    restore_files,
    restore_point_in_time,
    restore_redis,
    secret_values,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "method": {
                "type": "str",
                "choices": ["logical", "point_in_time"],
                "default": "logical",
            },
            "point": {"type": "str", "default": "latest"},
            "target_time": {"type": "str"},
            "parts": {
                "type": "list",
                "elements": "str",
                "choices": ["database", "redis", "media", "files"],
                "default": ["database"],
            },
            "files_destination": {"type": "path", "default": "/"},
            "keep_previous": {"type": "bool", "default": False},
            "config_file": {"type": "path", "default": "/etc/ytempire/backup.json"},
            "settings": {"type": "dict", "default": {}},
        },
        supports_check_mode=True,
    )
    p = module.params
    try:
        config = config_from_file(p["config_file"], p["settings"])
        module.no_log_values.update(secret_values(config))
    except BackupError as exc:
        module.fail_json(msg=str(exc))
    if p["target_time"] and p["method"] != "point_in_time":
        module.fail_json(msg="target_time needs method=point_in_time")
    try:
        point = find_point(config, p["point"])
        if module.check_mode:
            module.exit_json(changed=True, restore={"point": point.id, "parts": p["parts"]})
        done = {"point": point.id}
        if "database" in p["parts"]:
            if p["method"] == "logical":
                done["database"] = restore_database(config, point.id, p["keep_previous"])
            else:
                base = None if p["point"] == "latest" else point.id
                done["database"] = restore_point_in_time(config, p["target_time"], base)
        with lock(config):
            if "redis" in p["parts"]:
                done["redis"] = restore_redis(config, point, config["redis_data_dir"])
            for part in ("media", "files"):
                if part in p["parts"]:
                    if not any(a["part"] == part for a in point.manifest["artifacts"]):
                        module.fail_json(
                            msg=f"{point.id} is a {point.scope} point: it has no {part}",
                            restore=done,
                        )
                    destination = "/" if part == "media" else p["files_destination"]
                    done[part] = restore_files(config, point, part, os.path.abspath(destination))
        module.exit_json(changed=True, restore=done)
    except BackupError as exc:
        module.fail_json(msg=str(exc), restore=getattr(exc, "result", {}))


if __name__ == "__main__":
    main()
