"""Restore points of the YTEMPIRE platform: what one holds, its manifest, how it
is checked, which points retention keeps, and the commands that make and
restore the database's part.

A restore point is a directory ``<backup_dir>/points/<id>`` whose id is
``<UTC time>-<scope>`` (``20261202T020000Z-daily``). It is complete when its
``manifest.json`` is there: the manifest is written last, after every artifact
was written, synced and checked, so a run that died leaves a directory without
one, which never counts as a restore point.

Only the standard library here: the Ansible modules import this file, and the
backup role installs the same file on the server, where its timers run it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
from dataclasses import dataclass, field

FORMAT = 1
MANIFEST = "manifest.json"
POINTS_DIR = "points"
# In the backup directory while a disaster recovery rebuilds this host: no point is
# made and no retention runs until it is gone (playbooks/disaster-recovery.yml
# writes it before site.yml and removes it after the restore). Without it the new
# host's hourly timer pushed its empty database to S3 as the newest point, and the
# recovery restored that.
RECOVERY_HOLD = "recovery-in-progress"

# What each scope of restore point holds (ops guide §4.1, the crontab).
#   database: hourly, the logical dump and Redis;
#   daily:    the database's parts, a physical base backup for point-in-time
#             recovery, the application files, the configuration and the images;
#   full:     weekly, the daily's parts and the media.
SCOPES = {
    "database": ("postgres", "postgres-globals", "redis"),
    "daily": ("postgres", "postgres-globals", "postgres-base", "redis", "files", "images"),
    "full": ("postgres", "postgres-globals", "postgres-base", "redis", "files", "images", "media"),
}

# The file each part is stored as inside a point.
ARTIFACT_FILES = {
    "postgres": "postgres.dump.zst",
    "postgres-globals": "postgres-globals.sql.zst",
    "postgres-base": "postgres-base.tar.zst",
    "redis": "redis.rdb.zst",
    "files": "files.tar.zst",
    "images": "images.json",
    "media": "media.tar.zst",
}

_POINT_ID = re.compile(r"^(?P<time>[0-9]{8}T[0-9]{6}Z)-(?P<scope>[a-z]+)$")


class ManifestError(ValueError):
    """A manifest that is missing or cannot be read as one of ours."""


# --- ids and time ---------------------------------------------------------------


def point_id(now: dt.datetime, scope: str) -> str:
    """The id of a point of ``scope`` made at ``now`` (UTC, to the second)."""
    if scope not in SCOPES:
        raise ValueError(f"{scope!r} is not a scope ({', '.join(SCOPES)})")
    return f"{now.astimezone(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{scope}"


def parse_point_id(name: str) -> tuple[dt.datetime, str] | None:
    """The time and scope of a point id; None for a name that is not one."""
    match = _POINT_ID.match(name)
    if not match or match.group("scope") not in SCOPES:
        return None
    try:
        created = dt.datetime.strptime(match.group("time"), "%Y%m%dT%H%M%SZ")
    except ValueError:  # a month 13, an hour 25: not a time, so not a point
        return None
    created = created.replace(tzinfo=dt.timezone.utc)
    return created, match.group("scope")


def parse_duration(text: str | int | float) -> float:
    """Seconds in a duration as the group_vars write them: 90, 90s, 30m, 1h, 7d."""
    if isinstance(text, (int, float)):
        return float(text)
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhd]?)\s*", str(text))
    if not match:
        raise ValueError(f"{text!r} is not a duration (90, 90s, 30m, 1h, 7d)")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


# --- checksums and manifests ----------------------------------------------------


def sha256_file(path: str, bufsize: int = 1 << 20) -> tuple[str, int]:
    """The sha256 (hex) and size of a file, read once."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(bufsize):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


@dataclass
class Artifact:
    """One file of a restore point."""

    part: str
    file: str
    sha256: str
    size: int
    # What made it and with what, as the manifest shows it (command, seconds).
    detail: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "part": self.part,
            "file": self.file,
            "sha256": self.sha256,
            "size": self.size,
            **self.detail,
        }


def build_manifest(
    pid: str,
    host: str,
    artifacts: list[Artifact],
    versions: dict[str, str],
    durations: dict[str, float],
    extra: dict | None = None,
) -> dict:
    """The manifest of a point whose artifacts are all written and checked."""
    parsed = parse_point_id(pid)
    if parsed is None:
        raise ManifestError(f"{pid!r} is not a point id")
    created, scope = parsed
    missing = sorted(set(SCOPES[scope]) - {a.part for a in artifacts})
    if missing:
        raise ManifestError(f"a {scope} point needs {', '.join(missing)} too")
    return {
        "format": FORMAT,
        "id": pid,
        "scope": scope,
        "host": host,
        "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "artifacts": [a.as_dict() for a in sorted(artifacts, key=lambda a: a.file)],
        "size": sum(a.size for a in artifacts),
        "versions": dict(sorted(versions.items())),
        "durations": {k: round(v, 3) for k, v in durations.items()},
        **(extra or {}),
    }


def write_file_atomic(path: str, data: bytes, mode: int = 0o600) -> None:
    """Write ``path`` so that a reader sees the old file or the whole new one."""
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        # The mode itself, whatever the umask (a timer's UMask=0077 made the
        # textfile metrics unreadable to the node exporter).
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(os.path.dirname(path) or ".")


def fsync_dir(path: str) -> None:
    """Make a rename or a new file in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(point_dir: str, manifest: dict) -> None:
    """Write the manifest last: it is what makes the directory a restore point."""
    write_file_atomic(
        os.path.join(point_dir, MANIFEST), (json.dumps(manifest, indent=2) + "\n").encode()
    )


def parse_manifest(text: str, source: str) -> dict:
    """A manifest read from ``text``; ManifestError for anything else."""
    try:
        manifest = json.loads(text)
    except ValueError as exc:
        raise ManifestError(f"{source} is not JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ManifestError(f"{source} is not a format {FORMAT} manifest")
    for key in ("id", "scope", "created", "artifacts"):
        if key not in manifest:
            raise ManifestError(f"{source} has no {key!r}")
    if not isinstance(manifest["id"], str) or not isinstance(manifest["artifacts"], list):
        raise ManifestError(
            f"{source} has an id that is not a string or artifacts that are not a list"
        )
    if parse_point_id(manifest["id"]) is None:
        raise ManifestError(f"{source} names {manifest['id']!r}, not a point id")
    for artifact in manifest["artifacts"]:
        if not isinstance(artifact, dict) or not {"file", "sha256", "size"} <= artifact.keys():
            raise ManifestError(f"{source} has an artifact without file, sha256 and size")
        if not isinstance(artifact["file"], str) or not isinstance(artifact["sha256"], str):
            raise ManifestError(f"{source} has an artifact whose file or sha256 is not a string")
        if not isinstance(artifact["size"], int) or isinstance(artifact["size"], bool):
            raise ManifestError(f"{source} has an artifact whose size is not a number of bytes")
        if os.path.basename(artifact["file"]) != artifact["file"] or artifact["file"] in (
            "",
            ".",
            "..",
        ):
            raise ManifestError(f"{source} names {artifact['file']!r}, not a file of the point")
    return manifest


def read_manifest(point_dir: str) -> dict:
    """The manifest of the point in ``point_dir``."""
    path = os.path.join(point_dir, MANIFEST)
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError as exc:
        raise ManifestError(f"{path} does not exist: the point is not complete") from exc
    return parse_manifest(text, path)


def verify_files(point_dir: str, manifest: dict) -> list[str]:
    """What is wrong with the point's files against its manifest (empty: nothing).

    Every artifact must be there with its size and sha256, and no other file
    (a leftover of a run that died) may be in the directory.
    """
    problems = []
    listed = {a["file"] for a in manifest["artifacts"]}
    present = set(os.listdir(point_dir)) - {MANIFEST}
    for name in sorted(present - listed):
        problems.append(f"{name} is not in the manifest")
    for artifact in manifest["artifacts"]:
        path = os.path.join(point_dir, artifact["file"])
        if not os.path.isfile(path):
            problems.append(f"{artifact['file']} is missing")
            continue
        size = os.path.getsize(path)
        if size != artifact["size"]:
            problems.append(
                f"{artifact['file']} is {size} bytes, the manifest says {artifact['size']}"
            )
            continue
        digest, _ = sha256_file(path)
        if digest != artifact["sha256"]:
            problems.append(
                f"{artifact['file']} has sha256 {digest[:16]}..., "
                f"the manifest says {artifact['sha256'][:16]}..."
            )
    return problems


# --- retention ------------------------------------------------------------------


@dataclass
class PointInfo:
    """What retention needs to know about a point, local or offsite."""

    id: str
    created: dt.datetime
    scope: str
    # A manifest is there and the last verification found nothing wrong.
    verified: bool


@dataclass
class RetentionPlan:
    keep: list[str]
    delete: list[str]
    reasons: dict[str, str]


def plan_retention(
    points: list[PointInfo],
    now: dt.datetime,
    keep_days: float,
    minimum_redundancy: int = 1,
    protect: tuple[str, ...] = (),
) -> RetentionPlan:
    """Which points to keep and which to delete.

    - Only verified points count. A verified point younger than ``keep_days``
      is kept; an older one is deleted, except the newest ``minimum_redundancy``
      verified points of its scope, which are kept at any age (a run of failed
      backups cannot erase history, Barman's ``minimum_redundancy``).
    - A point that is not verified is deleted once a verified point of its
      scope is newer than it; before that it is kept, as it may be all there is
      to look at.
    - ``protect`` (the point being made, the one a restore reads) is kept.
    """
    if minimum_redundancy < 1:
        raise ValueError(
            "minimum_redundancy must be at least 1: the last good point is never deleted"
        )
    cutoff = now - dt.timedelta(days=keep_days)
    keep, delete, reasons = [], [], {}
    by_scope: dict[str, list[PointInfo]] = {}
    for point in points:
        by_scope.setdefault(point.scope, []).append(point)
    for scoped in by_scope.values():
        scoped.sort(key=lambda p: p.created, reverse=True)
        verified = [p for p in scoped if p.verified]
        newest_good = {p.id for p in verified[:minimum_redundancy]}
        newest_good_time = verified[0].created if verified else None
        for point in scoped:
            if point.id in protect:
                keep.append(point.id)
                reasons[point.id] = "in use by this run"
            elif point.verified and point.id in newest_good:
                keep.append(point.id)
                reasons[point.id] = (
                    f"one of the newest {minimum_redundancy} verified {point.scope} points"
                )
            elif point.verified and point.created >= cutoff:
                keep.append(point.id)
                reasons[point.id] = f"verified and younger than {keep_days:g} days"
            elif point.verified:
                delete.append(point.id)
                reasons[point.id] = f"older than {keep_days:g} days"
            elif newest_good_time is not None and point.created < newest_good_time:
                delete.append(point.id)
                reasons[point.id] = "not verified, and a newer verified point exists"
            else:
                keep.append(point.id)
                reasons[point.id] = "not verified, but no newer verified point exists"
    return RetentionPlan(keep=sorted(keep), delete=sorted(delete), reasons=reasons)


# --- the database's commands ----------------------------------------------------
# They run inside the PostgreSQL container (docker exec), so that client and
# server are one version. The dump is PostgreSQL's custom format, uncompressed
# by pg_dump and compressed by zstd on all cores outside it: pg_dump 15 only
# compresses with gzip, on one core. pg_restore restores a custom-format file
# in parallel (--jobs) when it can seek in it, so a restore decompresses first.


def pg_dump_argv(user: str, dbname: str, host: str = "127.0.0.1", port: int = 5432) -> list[str]:
    """pg_dump writing the custom format, uncompressed, to stdout."""
    return [
        "pg_dump",
        f"--host={host}",
        f"--port={port}",
        f"--username={user}",
        f"--dbname={dbname}",
        "--format=custom",
        "--compress=0",
        "--no-password",
    ]


def pg_dumpall_globals_argv(user: str, host: str = "127.0.0.1", port: int = 5432) -> list[str]:
    """The roles and tablespaces, which pg_dump leaves out."""
    return [
        "pg_dumpall",
        f"--host={host}",
        f"--port={port}",
        f"--username={user}",
        "--globals-only",
        "--no-password",
    ]


def pg_restore_argv(
    user: str, dbname: str, path: str, jobs: int, host: str = "127.0.0.1", port: int = 5432
) -> list[str]:
    """pg_restore of a custom-format file into an empty database, in parallel,
    stopping at the first error."""
    return [
        "pg_restore",
        f"--host={host}",
        f"--port={port}",
        f"--username={user}",
        f"--dbname={dbname}",
        f"--jobs={max(1, jobs)}",
        "--exit-on-error",
        "--no-password",
        path,
    ]


def zstd_compress_argv(level: int = 3, threads: int = 0) -> list[str]:
    """zstd from stdin to stdout on ``threads`` cores (0: all of them)."""
    return ["zstd", "--quiet", f"-{level}", f"--threads={threads}", "--stdout"]


def zstd_decompress_argv() -> list[str]:
    """zstd decompressing stdin to stdout (it checks each frame's checksum)."""
    return ["zstd", "--quiet", "--decompress", "--stdout"]
