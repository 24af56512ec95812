"""ytempire_backup and ytempire_backup_ops without Docker: point ids, durations,
checksums, manifests and their refusals, the verification of real points on disk
(real zstd files), retention (the plan and the plan carried out, the WAL archive
pruned), the pipelines (real processes), the lock, the free-space check, Slack
(a real local HTTP server), the state and its Prometheus metrics, the row counts,
and the two modules' documentation. What needs the platform's containers (the
dumps, the restores, the drill) runs in the site scenario."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.plugins.ansible_doc import ansible_doc
from tests.plugins.loader import load

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests/plugins/data/ytempire_backup"
PROMTOOL = shutil.which("promtool")
PG_RESTORE = shutil.which("pg_restore")


# As Ansible ships them: the operations import ansible.module_utils.ytempire_backup.
load("ansible.module_utils.ytempire_backup", ROOT / "plugins/module_utils/ytempire_backup.py")
ops = load(
    "ansible.module_utils.ytempire_backup_ops", ROOT / "plugins/module_utils/ytempire_backup_ops.py"
)
core = ops.core  # the very module the operations use (another test file may load its own)

NOW = dt.datetime(2026, 12, 2, 2, 0, tzinfo=dt.UTC)
PAYLOAD = b"pg_dump custom format, or near enough\n" * 200
SEGMENT = "0000000100000000000000"  # a WAL segment name less its last two digits


@functools.cache
def _zst() -> bytes:
    """PAYLOAD compressed by the real zstd (once)."""
    return subprocess.run(
        ["zstd", "--quiet", "--stdout"], input=PAYLOAD, capture_output=True, check=True, timeout=30
    ).stdout


def _flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if offset is None else offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _point(
    config: dict,
    created: dt.datetime,
    scope: str = "database",
    *,
    complete: bool = True,
    wal_from: str | None = None,
) -> Path:
    """A point as make_point leaves it: every part of the scope, then the manifest."""
    pid = core.point_id(created, scope)
    path = Path(ops.points_dir(config)) / pid
    path.mkdir(parents=True)
    artifacts = []
    for part in core.SCOPES[scope]:
        name = core.ARTIFACT_FILES[part]
        (path / name).write_bytes(_zst() if name.endswith(".zst") else b"[]\n")
        digest, size = core.sha256_file(str(path / name))
        detail = {"wal_from": wal_from} if part == "postgres-base" and wal_from else {}
        artifacts.append(core.Artifact(part, name, digest, size, detail))
    if complete:
        manifest = core.build_manifest(pid, "ytempire-1", artifacts, {"zstd": "1.5"}, {})
        core.write_manifest(str(path), manifest)
    return path


def _ids(config: dict) -> list[str]:
    return [p.id for p in ops.list_points(config)]


@pytest.fixture
def config(tmp_path: Path) -> dict:
    (tmp_path / "backup").mkdir()
    return ops.load_config(
        {
            "backup_dir": str(tmp_path / "backup"),
            "wal_archive_dir": str(tmp_path / "wal"),
            "state_dir": str(tmp_path / "state"),
            "lock_file": str(tmp_path / "lock/ytempire-backup.lock"),
            "lock_timeout": 5,
            "textfile_dir": str(tmp_path / "textfile"),
            "retention_days": 7,
            "minimum_redundancy": 1,
            "hostname": "ytempire-1",
            "db": {"password": "not-a-real-one"},
        }
    )


# --- point ids and durations -------------------------------------------------------------


def test_point_id_round_trip_in_utc():
    pid = core.point_id(NOW, "daily")
    assert pid == "20261202T020000Z-daily"
    assert core.parse_point_id(pid) == (NOW, "daily")
    # Another zone is written as UTC: the id of one instant is one id.
    paris = dt.timezone(dt.timedelta(hours=1))
    assert core.point_id(dt.datetime(2026, 12, 2, 3, 0, tzinfo=paris), "full") == (
        "20261202T020000Z-full"
    )
    for scope in core.SCOPES:
        assert core.parse_point_id(core.point_id(NOW, scope)) == (NOW, scope)


def test_point_id_refuses_an_unknown_scope():
    with pytest.raises(ValueError, match="'weekly' is not a scope"):
        core.point_id(NOW, "weekly")


@pytest.mark.parametrize(
    "name",
    [
        "20261202T020000Z-weekly",
        "20261202T020000Z",
        "20261202T020000-daily",
        "20261202T020000Z-daily.tmp",
        "x20261202T020000Z-daily",
        "2026-12-02T02:00:00Z-daily",
        "staging",
        "",
    ],
)
def test_parse_point_id_ignores_other_names(name):
    assert core.parse_point_id(name) is None


@pytest.mark.parametrize("name", ["20261302T020000Z-daily", "20261202T250000Z-daily"])
def test_parse_point_id_ignores_an_impossible_date(name):
    assert core.parse_point_id(name) is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (90, 90.0),
        (1.5, 1.5),
        ("90", 90.0),
        ("90s", 90.0),
        ("30m", 1800.0),
        ("1h", 3600.0),
        (" 1.5h ", 5400.0),
        ("7d", 604800.0),
    ],
)
def test_parse_duration(text, seconds):
    assert core.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "7w", "-1h", "1h30m", "one hour", "1.h"])
def test_parse_duration_refuses_what_is_not_a_duration(text):
    with pytest.raises(ValueError, match="is not a duration"):
        core.parse_duration(text)


# --- checksums, files, manifests -----------------------------------------------------------


def test_sha256_file_reads_in_chunks(tmp_path):
    path = tmp_path / "abc"
    path.write_bytes(b"abc")
    assert core.sha256_file(str(path)) == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        3,
    )
    big = tmp_path / "big"
    big.write_bytes(PAYLOAD)
    assert core.sha256_file(str(big), bufsize=7) == (
        hashlib.sha256(PAYLOAD).hexdigest(),
        len(PAYLOAD),
    )
    (tmp_path / "empty").write_bytes(b"")
    assert core.sha256_file(str(tmp_path / "empty")) == (hashlib.sha256().hexdigest(), 0)


def test_write_file_atomic_replaces_the_file_whole_with_its_mode(tmp_path):
    path = tmp_path / "state.json"
    path.write_bytes(b"old")
    core.write_file_atomic(str(path), b"new contents")
    assert path.read_bytes() == b"new contents"
    assert (path.stat().st_mode & 0o777) == 0o600
    core.write_file_atomic(str(tmp_path / "metrics.prom"), b"x", mode=0o644)
    assert ((tmp_path / "metrics.prom").stat().st_mode & 0o777) == 0o644
    assert sorted(os.listdir(tmp_path)) == ["metrics.prom", "state.json"]


def test_write_file_atomic_leaves_no_temporary_file_when_it_fails(tmp_path):
    target = tmp_path / "taken"
    target.mkdir()
    (target / "inside").write_text("x")
    # A non-empty directory cannot be replaced by a file.
    with pytest.raises(IsADirectoryError):
        core.write_file_atomic(str(target), b"data")
    assert sorted(os.listdir(tmp_path)) == ["taken"]
    assert (target / "inside").read_text() == "x"


def _artifacts(scope: str) -> list:
    return [
        core.Artifact(part, core.ARTIFACT_FILES[part], "ab" * 32, 10 + i, {"seconds": 1.0})
        for i, part in enumerate(core.SCOPES[scope])
    ]


def test_build_manifest():
    manifest = core.build_manifest(
        "20261202T020000Z-database",
        "ytempire-1",
        _artifacts("database"),
        {"zstd": "1.5", "docker": "27"},
        {"postgres": 1.23456},
        extra={"sentinel": {"point_id": "20261202T020000Z-database"}},
    )
    assert manifest["format"] == core.FORMAT == 1
    assert (manifest["id"], manifest["scope"], manifest["host"]) == (
        "20261202T020000Z-database",
        "database",
        "ytempire-1",
    )
    assert manifest["created"] == "2026-12-02T02:00:00Z"
    assert [a["file"] for a in manifest["artifacts"]] == [
        "postgres-globals.sql.zst",
        "postgres.dump.zst",
        "redis.rdb.zst",
    ]
    assert manifest["artifacts"][1] == {
        "part": "postgres",
        "file": "postgres.dump.zst",
        "sha256": "ab" * 32,
        "size": 10,
        "seconds": 1.0,
    }
    assert manifest["size"] == 10 + 11 + 12
    assert list(manifest["versions"]) == ["docker", "zstd"]
    assert manifest["durations"] == {"postgres": 1.235}
    assert manifest["sentinel"] == {"point_id": "20261202T020000Z-database"}


@pytest.mark.parametrize("scope", list(core.SCOPES))
def test_build_manifest_refuses_a_point_lacking_a_part_of_its_scope(scope):
    for missing in core.SCOPES[scope]:
        artifacts = [a for a in _artifacts(scope) if a.part != missing]
        with pytest.raises(core.ManifestError, match=f"a {scope} point needs {missing} too"):
            core.build_manifest(core.point_id(NOW, scope), "h", artifacts, {}, {})


def test_build_manifest_refuses_what_is_not_a_point_id():
    with pytest.raises(core.ManifestError, match="is not a point id"):
        core.build_manifest("latest", "h", _artifacts("full"), {}, {})
    # The full point's parts do not make a database point a full one.
    manifest = core.build_manifest("20261202T020000Z-database", "h", _artifacts("full"), {}, {})
    assert manifest["scope"] == "database"


def test_manifest_round_trip(tmp_path):
    manifest = core.build_manifest(
        "20261202T020000Z-full", "h", _artifacts("full"), {"zstd": "1.5"}, {"media": 2.0}
    )
    core.write_manifest(str(tmp_path), manifest)
    assert core.read_manifest(str(tmp_path)) == manifest
    assert os.listdir(tmp_path) == [core.MANIFEST]


def test_read_manifest_of_an_incomplete_point(tmp_path):
    with pytest.raises(core.ManifestError, match="does not exist: the point is not complete"):
        core.read_manifest(str(tmp_path))


def _manifest_text(**changes) -> str:
    manifest = core.build_manifest("20261202T020000Z-database", "h", _artifacts("database"), {}, {})
    for key, value in changes.items():
        if value is None:
            del manifest[key]
        else:
            manifest[key] = value
    return json.dumps(manifest)


def test_parse_manifest_accepts_its_own():
    assert core.parse_manifest(_manifest_text(), "m")["id"] == "20261202T020000Z-database"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "m is not JSON"),
        ("[]", "m is not a format 1 manifest"),
        ('"manifest"', "m is not a format 1 manifest"),
        (_manifest_text(format=2), "m is not a format 1 manifest"),
        (_manifest_text(format="1"), "m is not a format 1 manifest"),
        (_manifest_text(format=None), "m is not a format 1 manifest"),
        (_manifest_text(id=None), "m has no 'id'"),
        (_manifest_text(scope=None), "m has no 'scope'"),
        (_manifest_text(created=None), "m has no 'created'"),
        (_manifest_text(artifacts=None), "m has no 'artifacts'"),
        (_manifest_text(id="latest"), "m names 'latest', not a point id"),
        (_manifest_text(artifacts=[{"file": "a.zst", "size": 1}]), "without file, sha256"),
        (_manifest_text(artifacts=[{"sha256": "ab", "size": 1}]), "without file, sha256"),
        (_manifest_text(artifacts=["a.zst"]), "without file, sha256"),
    ],
)
def test_parse_manifest_refuses(text, message):
    with pytest.raises(core.ManifestError, match=message):
        core.parse_manifest(text, "m")


@pytest.mark.parametrize(
    "name", ["../x", "../../etc/passwd", "/etc/passwd", "sub/x", "", ".", ".."]
)
def test_parse_manifest_refuses_a_path_outside_the_point(name):
    text = _manifest_text(artifacts=[{"part": "postgres", "file": name, "sha256": "ab", "size": 1}])
    with pytest.raises(core.ManifestError, match="not a file of the point"):
        core.parse_manifest(text, "m")


@pytest.mark.parametrize(
    "changes",
    [
        {"id": 5},
        {"artifacts": None},
        {"artifacts": 5},
        {"artifacts": [{"file": 5, "sha256": "a", "size": 1}]},
    ],
)
def test_parse_manifest_refuses_values_of_the_wrong_type(changes):
    manifest = json.loads(_manifest_text())
    manifest.update(changes)
    with pytest.raises(core.ManifestError):
        core.parse_manifest(json.dumps(manifest), "m")


def _written_point(tmp_path: Path) -> tuple[Path, dict]:
    path = tmp_path / "20261202T020000Z-database"
    path.mkdir()
    artifacts = []
    for i, part in enumerate(core.SCOPES["database"]):
        name = core.ARTIFACT_FILES[part]
        (path / name).write_bytes(PAYLOAD[: 100 + i])
        digest, size = core.sha256_file(str(path / name))
        artifacts.append(core.Artifact(part, name, digest, size))
    manifest = core.build_manifest(path.name, "h", artifacts, {}, {})
    core.write_manifest(str(path), manifest)
    return path, manifest


def test_verify_files_finds_nothing_wrong_with_a_good_point(tmp_path):
    path, manifest = _written_point(tmp_path)
    assert core.verify_files(str(path), manifest) == []


def test_verify_files_reports_a_missing_file(tmp_path):
    path, manifest = _written_point(tmp_path)
    (path / "redis.rdb.zst").unlink()
    assert core.verify_files(str(path), manifest) == ["redis.rdb.zst is missing"]


def test_verify_files_reports_a_size_mismatch(tmp_path):
    path, manifest = _written_point(tmp_path)
    with open(path / "postgres.dump.zst", "ab") as handle:
        handle.write(b"!")
    assert core.verify_files(str(path), manifest) == [
        "postgres.dump.zst is 101 bytes, the manifest says 100"
    ]


def test_verify_files_reports_a_flipped_byte(tmp_path):
    path, manifest = _written_point(tmp_path)
    _flip_byte(path / "postgres-globals.sql.zst")
    problems = core.verify_files(str(path), manifest)
    assert len(problems) == 1
    assert problems[0].startswith("postgres-globals.sql.zst has sha256 ")
    assert "the manifest says" in problems[0]


def test_verify_files_reports_a_leftover_file(tmp_path):
    path, manifest = _written_point(tmp_path)
    (path / "media.tar.zst.tmp-1234").write_bytes(b"partial")
    assert core.verify_files(str(path), manifest) == [
        "media.tar.zst.tmp-1234 is not in the manifest"
    ]


def test_verify_files_reports_every_problem_at_once(tmp_path):
    path, manifest = _written_point(tmp_path)
    (path / "redis.rdb.zst").unlink()
    _flip_byte(path / "postgres.dump.zst")
    (path / "leftover").write_bytes(b"x")
    problems = core.verify_files(str(path), manifest)
    assert len(problems) == 3
    assert problems[0] == "leftover is not in the manifest"
    assert "redis.rdb.zst is missing" in problems
    assert any(p.startswith("postgres.dump.zst has sha256") for p in problems)


# --- the retention plan ----------------------------------------------------------------------


def _info(days: float, verified: bool = True, scope: str = "daily") -> core.PointInfo:
    created = NOW - dt.timedelta(days=days)
    return core.PointInfo(core.point_id(created, scope), created, scope, verified)


def _plan(points, keep_days=7, minimum_redundancy=1, protect=()):
    plan = core.plan_retention(points, NOW, keep_days, minimum_redundancy, protect)
    # Every point is kept or deleted, never both, and each has its reason.
    assert sorted(plan.keep + plan.delete) == sorted(p.id for p in points)
    assert set(plan.reasons) == {p.id for p in points}
    return plan


def test_retention_keeps_verified_points_younger_than_keep_days():
    points = [_info(d) for d in (0.1, 1, 3, 6.9, 7.5, 10, 30)]
    plan = _plan(points)
    assert plan.keep == sorted(p.id for p in points[:4])
    assert plan.delete == sorted(p.id for p in points[4:])
    assert plan.reasons[points[5].id] == "older than 7 days"


def test_retention_keeps_a_point_exactly_keep_days_old():
    points = [_info(1), _info(7)]
    assert _plan(points).delete == []


def test_retention_never_deletes_the_last_good_point():
    # The backups stopped a month ago: every point is older than keep_days.
    points = [_info(d) for d in (30, 40, 50)]
    plan = _plan(points)
    assert plan.keep == [points[0].id]
    assert plan.reasons[points[0].id] == "one of the newest 1 verified daily points"
    assert plan.delete == sorted(p.id for p in points[1:])


def test_retention_keeps_the_newest_minimum_redundancy_verified_points_at_any_age():
    points = [_info(d) for d in (30, 31, 32, 33, 34)]
    plan = _plan(points, minimum_redundancy=3)
    assert plan.keep == sorted(p.id for p in points[:3])
    assert plan.delete == sorted(p.id for p in points[3:])


def test_a_run_of_failed_backups_cannot_erase_history():
    good = _info(20)
    failed = [_info(d, verified=False) for d in (1, 2, 5, 10, 15)]
    plan = _plan([good, *failed])
    assert good.id in plan.keep
    # Nothing newer verifies: the failed ones are all there is to look at.
    assert plan.delete == []
    assert plan.reasons[failed[0].id] == "not verified, but no newer verified point exists"


def test_unverified_points_count_for_nothing():
    # Twenty unverified points do not push the old good one out of minimum_redundancy.
    good = [_info(30), _info(40)]
    bad = [_info(0.1 * i, verified=False) for i in range(1, 21)]
    plan = _plan([*good, *bad], minimum_redundancy=2)
    assert set(p.id for p in good) <= set(plan.keep)


def test_retention_deletes_unverified_points_once_a_newer_one_verifies():
    older_bad = _info(3, verified=False)
    good = _info(2)
    newer_bad = _info(1, verified=False)
    plan = _plan([older_bad, good, newer_bad])
    assert plan.delete == [older_bad.id]
    assert plan.reasons[older_bad.id] == "not verified, and a newer verified point exists"
    assert plan.keep == sorted([good.id, newer_bad.id])


def test_retention_without_any_verified_point_deletes_nothing():
    points = [_info(d, verified=False) for d in (1, 10, 100)]
    assert _plan(points).delete == []


def test_retention_counts_each_scope_apart():
    # A newer daily point does not make the last good full point deletable.
    full = _info(30, scope="full")
    daily = [_info(d, scope="daily") for d in (1, 2)]
    database_bad = _info(0.5, verified=False, scope="database")
    database_old = _info(9, scope="database")
    plan = _plan([full, *daily, database_bad, database_old])
    assert full.id in plan.keep
    assert database_old.id in plan.keep  # the newest verified database point
    assert database_bad.id in plan.keep
    assert plan.delete == []


def test_retention_keeps_the_protected_points():
    old_bad = _info(20, verified=False)
    old_good = _info(19)
    new_good = _info(1)
    plan = _plan([old_bad, old_good, new_good], protect=(old_bad.id, old_good.id))
    assert plan.delete == []
    assert plan.reasons[old_bad.id] == "in use by this run"


def test_retention_keep_days_is_days():
    points = [_info(d) for d in (0, 1.5, 2.5)]
    plan = _plan(points, keep_days=2)
    assert plan.delete == [points[2].id]
    assert plan.reasons[points[2].id] == "older than 2 days"


@pytest.mark.parametrize("minimum_redundancy", [0, -1])
def test_retention_refuses_minimum_redundancy_below_one(minimum_redundancy):
    with pytest.raises(ValueError, match="minimum_redundancy must be at least 1"):
        core.plan_retention([_info(30)], NOW, 7, minimum_redundancy)


# --- the database's commands -------------------------------------------------------------------


def test_database_command_builders():
    dump = core.pg_dump_argv("ytempire", "ytempire")
    assert dump[0] == "pg_dump"
    assert {"--format=custom", "--compress=0", "--no-password", "--dbname=ytempire"} <= set(dump)
    assert "--globals-only" in core.pg_dumpall_globals_argv("ytempire")
    restore = core.pg_restore_argv("u", "db_restoring", "/restore.dump", 0, host="postgres")
    assert restore[-1] == "/restore.dump"
    assert {"--jobs=1", "--exit-on-error", "--host=postgres", "--dbname=db_restoring"} <= set(
        restore
    )
    assert "--jobs=8" in core.pg_restore_argv("u", "d", "/p", 8)


def test_zstd_commands_round_trip():
    compressed = subprocess.run(
        core.zstd_compress_argv(level=5, threads=1), input=PAYLOAD, capture_output=True,
        check=True, timeout=30,
    ).stdout  # fmt: skip
    assert compressed != PAYLOAD
    assert compressed[:4] == b"\x28\xb5\x2f\xfd"  # a zstd frame
    out = subprocess.run(
        core.zstd_decompress_argv(), input=compressed, capture_output=True, check=True, timeout=30
    )
    assert out.stdout == PAYLOAD
    damaged = bytearray(compressed)
    damaged[len(damaged) // 2] ^= 0xFF
    broken = subprocess.run(
        core.zstd_decompress_argv(), input=bytes(damaged), capture_output=True, timeout=30,
        check=False,
    )  # fmt: skip
    assert broken.returncode != 0


# --- configuration ------------------------------------------------------------------------------


def test_load_config_defaults():
    config = ops.load_config({"db": {"password": "pw"}})
    assert config["retention_days"] == 7
    assert config["minimum_redundancy"] >= 1
    assert config["db"] == {"user": "ytempire", "name": "ytempire", "password": "pw"}
    assert config["hostname"] == socket.gethostname()
    assert config["backup_dir"] == "/backup"
    # None means the default, as Ansible passes an unset option.
    assert (
        ops.load_config({"db": {"password": "pw"}, "retention_days": None})["retention_days"] == 7
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, r"database password \(db.password\) is not set"),
        ({"db": {"user": "ytempire"}}, r"db.password"),
        ({"db": {"password": ""}}, r"db.password"),
        ({"retention": 7}, "unknown backup settings: retention"),
        ({"retention_days": 0}, "retention_days must be a positive number, not 0"),
        ({"retention_days": -1}, "retention_days must be a positive number"),
        ({"retention_days": "7d"}, "retention_days must be a positive number, not '7d'"),
        ({"space_factor": 0}, "space_factor must be a positive number"),
        ({"lock_timeout": -5}, "lock_timeout must be a positive number"),
        ({"minimum_redundancy": 0}, "minimum_redundancy must be at least 1"),
        ({"minimum_redundancy": -2}, "minimum_redundancy must be at least 1"),
        ({"minimum_redundancy": 1.5}, "minimum_redundancy must be at least 1"),
    ],
)
def test_load_config_refuses(raw, message):
    if "db" not in raw and "password" not in message:
        raw = {**raw, "db": {"password": "pw"}}
    with pytest.raises(ops.BackupError, match=message):
        ops.load_config(raw)


def test_config_from_file_merges_db_overrides_key_by_key(tmp_path):
    path = tmp_path / "backup.json"
    path.write_text(
        json.dumps({"backup_dir": "/srv/backup", "db": {"user": "app", "password": "pw"}})
    )
    config = ops.config_from_file(
        str(path), {"db": {"name": "other"}, "retention_days": 14, "hostname": "h"}
    )
    assert config["db"] == {"user": "app", "name": "other", "password": "pw"}
    assert (config["backup_dir"], config["retention_days"], config["hostname"]) == (
        "/srv/backup",
        14,
        "h",
    )
    assert ops.config_from_file(str(path))["retention_days"] == 7


def test_config_from_file_refuses_a_missing_or_broken_file(tmp_path):
    with pytest.raises(ops.BackupError, match="cannot read the backup settings .*backup role"):
        ops.config_from_file(str(tmp_path / "absent.json"))
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ops.BackupError, match="cannot read the backup settings"):
        ops.config_from_file(str(tmp_path / "broken.json"))
    (tmp_path / "bad.json").write_text(json.dumps({"db": {"password": "pw"}, "typo": 1}))
    with pytest.raises(ops.BackupError, match="unknown backup settings: typo"):
        ops.config_from_file(str(tmp_path / "bad.json"))


# --- pipelines -----------------------------------------------------------------------------------


def test_pipeline_runs_the_stages_into_the_file(tmp_path):
    out = tmp_path / "out"
    errors = ops.pipeline(
        [["sh", "-c", "echo starting >&2; printf hello"], ["tr", "a-z", "A-Z"]], str(out)
    )
    assert out.read_bytes() == b"HELLO"
    assert errors == ["starting\n", ""]


def test_pipeline_reads_stdin_path_and_passes_env(tmp_path):
    source = tmp_path / "in"
    source.write_bytes(PAYLOAD)
    compressed = tmp_path / "c.zst"
    ops.pipeline([["cat"], core.zstd_compress_argv()], str(compressed), stdin_path=str(source))
    restored = tmp_path / "restored"
    ops.pipeline([core.zstd_decompress_argv()], str(restored), stdin_path=str(compressed))
    assert restored.read_bytes() == PAYLOAD
    env = {"PATH": os.environ["PATH"], "YT_VALUE": "from env"}
    ops.pipeline([["sh", "-c", 'printf %s "$YT_VALUE"']], str(tmp_path / "env"), env=env)
    assert (tmp_path / "env").read_text() == "from env"


def test_pipeline_fails_when_the_producer_fails_and_the_consumer_succeeds(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ops.BackupError) as caught:
        ops.pipeline(
            [["sh", "-c", "printf partial; echo 'connection refused' >&2; exit 3"], ["cat"]],
            str(out),
        )
    assert "sh exited 3: connection refused" in str(caught.value)
    assert "cat exited" not in str(caught.value)
    assert out.read_bytes() == b"partial"  # the caller removes it


def test_pipeline_fails_when_the_consumer_fails(tmp_path):
    with pytest.raises(ops.BackupError, match="sh exited 4: disk says no"):
        ops.pipeline(
            [["printf", "data"], ["sh", "-c", "cat >/dev/null; echo 'disk says no' >&2; exit 4"]],
            str(tmp_path / "out"),
        )


def test_pipeline_reports_every_failed_stage():
    with pytest.raises(ops.BackupError) as caught:
        ops.pipeline([["sh", "-c", "echo one >&2; exit 1"], ["sh", "-c", "echo two >&2; exit 2"]])
    assert "sh exited 1: one" in str(caught.value)
    assert "sh exited 2: two" in str(caught.value)


def test_pipeline_fails_on_a_full_disk():
    # /dev/full answers every write with ENOSPC, as a full backup disk does.
    with pytest.raises(ops.BackupError):
        ops.pipeline([["cat"], core.zstd_compress_argv()], "/dev/full", stdin_path="/etc/hostname")


def test_pipeline_fails_when_the_file_system_refuses_a_write(tmp_path):
    """A regular file that cannot grow (a file-size limit on the last stage): the stage's
    failed write fails the pipeline, though every byte it read was read."""
    source = tmp_path / "in"
    source.write_bytes(os.urandom(256 << 10))
    out = tmp_path / "out"
    with pytest.raises(ops.BackupError, match="sh exited"):
        ops.pipeline(
            [["cat"], ["sh", "-c", "ulimit -f 16 && exec cat"]], str(out), stdin_path=str(source)
        )
    assert out.stat().st_size < source.stat().st_size


def test_pipeline_a_consumer_that_stops_reading_ends_the_producer(tmp_path):
    """The producer gets SIGPIPE (the pipeline does not hang), and dying of it is a
    failure, as under pipefail."""
    started = time.monotonic()
    with pytest.raises(ops.BackupError, match="yes exited -13"):
        ops.pipeline([["yes"], ["head", "-c", "10"]], str(tmp_path / "out"))
    assert time.monotonic() - started < 10
    assert (tmp_path / "out").read_bytes() == b"y\ny\ny\ny\ny\n"


def test_pipeline_turns_a_missing_program_into_a_backup_error(tmp_path):
    with pytest.raises(ops.BackupError, match="No such file"):
        ops.pipeline([["printf", "x"], ["ytempire-no-such-program"]], str(tmp_path / "out"))


def test_run_raises_with_stderr():
    with pytest.raises(ops.BackupError, match="exited 5: broken"):
        ops.run(["sh", "-c", "echo broken >&2; exit 5"])
    assert ops.run(["sh", "-c", "exit 5"], check=False).returncode == 5
    assert ops.tail(b"") == "(no output)"
    assert ops.tail(b"x" * 700 + b"END", limit=10) == "xxxxxxxEND"


# --- the dump's read-back check -------------------------------------------------------------
# dump_postgres reads the new dump's table of contents back with pg_restore --list. Here
# its commands run on this machine instead of in the container, and pg_dump is a real
# dump made by pg_dump 15 (tests/plugins/data/ytempire_backup: small.dump.zst, three rows;
# large.dump.zst, 36 MB of rows that compress to 37 KB).


def _dump_postgres(monkeypatch, config: dict, dump: Path, target: Path) -> tuple[dict, list]:
    if PG_RESTORE is None:
        pytest.skip("pg_restore is not installed (apt-get install postgresql-client)")
    real, calls = ops.pipeline, []

    def pipeline(stages, out_path=None, **kwargs):
        calls.append(stages)
        if len(calls) == 1:  # the dump itself: the archive, and the row counts on stderr
            shutil.copyfile(dump, out_path)
            return ["public.channels|3\n", ""]
        return real(stages, out_path, **kwargs)

    monkeypatch.setattr(ops, "pipeline", pipeline)
    monkeypatch.setattr(ops, "pg_exec", lambda config, argv, interactive=False: argv)
    result = ops.dump_postgres(config, str(target))
    assert calls[1][0] == core.zstd_decompress_argv()
    assert "pg_restore --list" in " ".join(calls[1][1])
    return result, calls


def test_dump_postgres_reads_a_small_dump_back(monkeypatch, config, tmp_path):
    result, _ = _dump_postgres(monkeypatch, config, DATA / "small.dump.zst", tmp_path / "d.zst")
    assert result == {"format": "custom", "compression": "zstd", "rows": {"public.channels": 3}}


def test_dump_postgres_fails_on_a_dump_pg_restore_cannot_read(monkeypatch, config, tmp_path):
    garbage = tmp_path / "garbage.zst"
    garbage.write_bytes(_zst())
    with pytest.raises(ops.BackupError, match="sh exited 1"):
        _dump_postgres(monkeypatch, config, garbage, tmp_path / "d.zst")


def test_dump_postgres_reads_a_large_dump_back(monkeypatch, config, tmp_path):
    result, _ = _dump_postgres(monkeypatch, config, DATA / "large.dump.zst", tmp_path / "d.zst")
    assert result["format"] == "custom"


# --- points on disk ---------------------------------------------------------------------------


def test_list_points_oldest_first_with_incomplete_ones(config):
    new = _point(config, NOW - dt.timedelta(hours=1), "database")
    old = _point(config, NOW - dt.timedelta(days=2), "daily")
    incomplete = _point(config, NOW, "database", complete=False)
    points = ops.list_points(config)
    assert [p.id for p in points] == [old.name, new.name, incomplete.name]
    assert [p.complete for p in points] == [True, True, False]
    assert points[0].scope == "daily"
    assert points[0].created == NOW - dt.timedelta(days=2)
    assert points[0].manifest["id"] == old.name
    assert points[0].path == str(old)


def test_list_points_ignores_what_is_not_a_point(config):
    good = _point(config, NOW)
    base = Path(ops.points_dir(config))
    for name in ("staging", "20261202T020000Z-weekly", "20261202T020000Z-daily.tmp", "latest"):
        (base / name).mkdir()
    (base / "20261201T020000Z-daily").write_text("a file, not a point")
    assert _ids(config) == [good.name]


def test_list_points_without_a_points_directory(config):
    assert ops.list_points(config) == []


def test_list_points_takes_an_unreadable_manifest_for_an_incomplete_point(config):
    path = _point(config, NOW)
    (path / core.MANIFEST).write_text("{truncated")
    (point,) = ops.list_points(config)
    assert not point.complete
    assert ops.verify_point(point) == ["no manifest: the run that made it did not finish"]


def test_list_points_ignores_a_name_with_an_impossible_date(config):
    good = _point(config, NOW)
    (Path(ops.points_dir(config)) / "20261399T020000Z-daily").mkdir()
    assert _ids(config) == [good.name]


def test_list_points_survives_a_manifest_of_the_wrong_shape(config):
    path = _point(config, NOW)
    manifest = json.loads(_manifest_text(id=path.name))
    manifest["artifacts"] = None
    (path / core.MANIFEST).write_text(json.dumps(manifest))
    (point,) = ops.list_points(config)
    assert not point.complete


def test_verify_point_on_real_zstd_files(config):
    path = _point(config, NOW, "daily")
    (point,) = ops.list_points(config)
    assert ops.verify_point(point) == []
    _flip_byte(path / "redis.rdb.zst")
    problems = ops.verify_point(point)
    assert len(problems) == 1
    assert problems[0].startswith("redis.rdb.zst has sha256")


def test_verify_point_deep_tests_each_zstd_frame(config):
    """A damaged file whose manifest entry matches it (forged, or written after the damage)."""
    path = _point(config, NOW, "database", complete=False)
    _flip_byte(path / "postgres.dump.zst", offset=len(_zst()) - 2)  # inside the checksum
    artifacts = []
    for part in core.SCOPES["database"]:
        name = core.ARTIFACT_FILES[part]
        digest, size = core.sha256_file(str(path / name))
        artifacts.append(core.Artifact(part, name, digest, size))
    core.write_manifest(str(path), core.build_manifest(path.name, "h", artifacts, {}, {}))
    (point,) = ops.list_points(config)
    assert ops.verify_point(point, deep=False) == []
    problems = ops.verify_point(point)
    assert len(problems) == 1
    assert problems[0].startswith("postgres.dump.zst fails zstd's test")


def test_find_point_latest_is_the_newest_verified(config):
    old = _point(config, NOW - dt.timedelta(days=2), "daily")
    good = _point(config, NOW - dt.timedelta(days=1), "database")
    corrupt = _point(config, NOW - dt.timedelta(hours=2), "database")
    _flip_byte(corrupt / "postgres.dump.zst")
    _point(config, NOW - dt.timedelta(hours=1), "database", complete=False)
    assert ops.find_point(config, None).id == good.name
    assert ops.find_point(config, "latest").id == good.name
    assert ops.find_point(config, "latest", scopes=("daily", "full")).id == old.name
    with pytest.raises(ops.BackupError, match="no verified restore point of scope full in "):
        ops.find_point(config, None, scopes=("full",))


def test_find_point_by_id(config):
    good = _point(config, NOW - dt.timedelta(days=1))
    corrupt = _point(config, NOW)
    (corrupt / "redis.rdb.zst").unlink()
    assert ops.find_point(config, good.name).path == str(good)
    with pytest.raises(
        ops.BackupError,
        match=f"restore point {corrupt.name} does not verify: redis.rdb.zst is missing",
    ):
        ops.find_point(config, corrupt.name)
    with pytest.raises(ops.BackupError, match="no restore point 20200101T000000Z-daily in "):
        ops.find_point(config, "20200101T000000Z-daily")


def test_find_point_with_nothing_verified(config):
    with pytest.raises(ops.BackupError, match="no verified restore point in "):
        ops.find_point(config, "latest")
    _point(config, NOW, complete=False)
    with pytest.raises(ops.BackupError, match="no verified restore point in "):
        ops.find_point(config, "latest")


@pytest.mark.parametrize(
    ("scope", "parts"),
    [
        ("database", ["database", "redis"]),
        ("daily", ["database", "redis", "files"]),
        ("full", ["database", "redis", "media", "files"]),
    ],
)
def test_verify_latest_says_what_the_point_can_restore(config, scope, parts):
    point = _point(config, NOW - dt.timedelta(hours=1), scope)
    newer = _point(config, NOW, "database")
    _flip_byte(newer / "redis.rdb.zst")
    result = ops.verify(config, "latest")
    assert result["id"] == point.name
    assert result["scope"] == scope
    assert result["parts"] == parts
    assert result["ok"] is True
    assert result["local"] == {point.name: []}
    assert set(ops.RESTORE_PARTS.values()) <= set(core.ARTIFACT_FILES)


def test_verify_every_point(config):
    good = _point(config, NOW - dt.timedelta(hours=1))
    bad = _point(config, NOW)
    (bad / "leftover").write_bytes(b"x")
    result = ops.verify(config)
    assert result["ok"] is False
    assert result["local"] == {good.name: [], bad.name: ["leftover is not in the manifest"]}
    assert "id" not in result
    assert ops.verify(config, good.name)["ok"] is True
    assert ops.verify(config, bad.name)["ok"] is False
    with pytest.raises(ops.BackupError, match="no restore point 20200101T000000Z-daily"):
        ops.verify(config, "20200101T000000Z-daily")
    with pytest.raises(ops.BackupError, match="no offsite storage is configured"):
        ops.verify(config, good.name, remote=True)


# --- retention on disk ------------------------------------------------------------------------


def test_apply_retention_carries_out_the_plan(config):
    def at(days: float, **kwargs) -> str:
        return _point(config, NOW - dt.timedelta(days=days), "database", **kwargs).name

    old_good, older_good = at(10), at(20)
    old_corrupt = at(9)
    _flip_byte(Path(ops.points_dir(config)) / old_corrupt / "redis.rdb.zst")
    old_incomplete = at(8, complete=False)
    young_good = at(2)
    newest_corrupt = at(1)
    (Path(ops.points_dir(config)) / newest_corrupt / "postgres.dump.zst").unlink()
    newest_incomplete = at(0.01, complete=False)

    done = ops.apply_retention(config, now=NOW)
    kept = sorted([young_good, newest_corrupt, newest_incomplete])
    deleted = sorted([older_good, old_good, old_corrupt, old_incomplete])
    assert done == {"local": {"kept": kept, "deleted": deleted}, "wal_deleted": 0}
    assert _ids(config) == kept
    assert ops.find_point(config, "latest").id == young_good


def test_apply_retention_never_deletes_the_newest_verified_point(config):
    ids = [_point(config, NOW - dt.timedelta(days=d), "daily").name for d in (40, 30, 20)]
    for _ in range(2):  # and again: retention does not wear the last one down
        done = ops.apply_retention(config, now=NOW)
        assert _ids(config) == [ids[-1]]
    assert done["local"]["deleted"] == []


def test_apply_retention_after_a_run_of_failed_backups(config):
    good = _point(config, NOW - dt.timedelta(days=20)).name
    failed = []
    for hours in (1, 2, 3, 4):
        path = _point(config, NOW - dt.timedelta(hours=hours))
        _flip_byte(path / "postgres.dump.zst")
        failed.append(path.name)
    ops.apply_retention(config, now=NOW)
    assert _ids(config) == sorted([good, *failed])
    assert ops.find_point(config, "latest").id == good


def test_apply_retention_keeps_minimum_redundancy_and_protected_points(config):
    config = {**config, "minimum_redundancy": 2}
    ids = [_point(config, NOW - dt.timedelta(days=d)).name for d in (50, 40, 30, 20)]
    done = ops.apply_retention(config, protect=(ids[0],), now=NOW)
    assert done["local"]["deleted"] == [ids[1]]
    assert _ids(config) == [ids[0], ids[2], ids[3]]


def test_apply_retention_refuses_minimum_redundancy_below_one(config):
    ids = [_point(config, NOW - dt.timedelta(days=d)).name for d in (50, 40)]
    with pytest.raises(ValueError, match="minimum_redundancy must be at least 1"):
        ops.apply_retention({**config, "minimum_redundancy": 0}, now=NOW)
    assert _ids(config) == ids


# --- the WAL archive ------------------------------------------------------------------------


def _wal(config: dict, names: list[str]) -> Path:
    directory = Path(config["wal_archive_dir"])
    directory.mkdir()
    for name in names:
        (directory / name).write_bytes(b"wal")
    return directory


def test_prune_wal_keeps_what_the_oldest_base_backup_needs(config):
    _point(config, NOW - dt.timedelta(days=2), "daily", wal_from=f"{SEGMENT}10")
    _point(config, NOW - dt.timedelta(days=1), "full", wal_from=f"{SEGMENT}20")
    _point(config, NOW - dt.timedelta(days=3), "database")  # holds no base backup
    _point(config, NOW - dt.timedelta(days=4), "daily", complete=False, wal_from=f"{SEGMENT}01")
    older = [f"{SEGMENT}0E.gz", f"{SEGMENT}0F.gz", f"{SEGMENT}05.00000028.backup.gz"]
    needed = [
        f"{SEGMENT}10.gz",
        f"{SEGMENT}11.gz",
        f"{SEGMENT}21.gz",
        f"{SEGMENT}12.partial.gz",
        "000000010000000100000000.gz",  # the next log file
    ]
    others = ["00000002.history", "00000003.history.gz", "archive_status", "README"]
    directory = _wal(config, older + needed + others)
    assert ops.prune_wal(config) == len(older)
    assert sorted(os.listdir(directory)) == sorted(needed + others)
    assert ops.prune_wal(config) == 0


def test_prune_wal_compares_across_log_files(config):
    _point(config, NOW, "daily", wal_from="000000010000000100000003")
    directory = _wal(
        config,
        [
            "0000000100000000000000FF.gz",
            "000000010000000100000002.gz",
            "000000010000000100000003.gz",
        ],
    )
    assert ops.prune_wal(config) == 2
    assert os.listdir(directory) == ["000000010000000100000003.gz"]


def test_prune_wal_without_a_base_backup_deletes_nothing(config):
    _point(config, NOW, "database")
    directory = _wal(config, [f"{SEGMENT}01.gz"])
    assert ops.prune_wal(config) == 0
    _point(config, NOW - dt.timedelta(days=1), "daily")  # a base backup without wal_from
    assert ops.prune_wal(config) == 0
    assert os.listdir(directory) == [f"{SEGMENT}01.gz"]


def test_apply_retention_prunes_the_wal_of_deleted_base_backups(config):
    old = _point(config, NOW - dt.timedelta(days=20), "daily", wal_from=f"{SEGMENT}10")
    new = _point(config, NOW - dt.timedelta(days=1), "daily", wal_from=f"{SEGMENT}30")
    directory = _wal(config, [f"{SEGMENT}{n}.gz" for n in ("10", "2F", "30", "31")])
    done = ops.apply_retention(config, now=NOW)
    assert done["local"]["deleted"] == [old.name]
    assert done["wal_deleted"] == 2
    assert sorted(os.listdir(directory)) == [f"{SEGMENT}30.gz", f"{SEGMENT}31.gz"]
    assert _ids(config) == [new.name]


# --- free space ------------------------------------------------------------------------------


def test_check_space_passes_with_a_modest_need(config):
    _point(config, NOW)
    space = ops.check_space(
        {**config, "space_reserve_bytes": 0}, "database", ops.list_points(config)
    )
    size = ops.list_points(config)[0].manifest["size"]
    assert space["needed_bytes"] == int(size * 1.5)
    assert space["free_bytes"] > space["needed_bytes"]


def test_check_space_refuses_more_than_the_disk_has(config):
    free = shutil.disk_usage(config["backup_dir"]).free
    with pytest.raises(ops.BackupError, match=r"MiB free; a daily point needs .*the reserve plus"):
        ops.check_space({**config, "space_reserve_bytes": free * 4}, "daily", [])


def test_check_space_scales_the_last_point_of_the_scope(config):
    _point(config, NOW - dt.timedelta(days=1), "database")
    last = _point(config, NOW, "database")
    _point(config, NOW + dt.timedelta(hours=1), "database", complete=False)
    points = ops.list_points(config)
    huge = {**config, "space_factor": 1e15, "space_reserve_bytes": 0}
    with pytest.raises(
        ops.BackupError, match=f"1e\\+15 x the last database point \\({last.name}\\)"
    ):
        ops.check_space(huge, "database", points)
    # The database points say nothing about what a daily point needs.
    assert ops.check_space(huge, "daily", points)["needed_bytes"] == 0


# --- the lock ---------------------------------------------------------------------------------


def test_lock_refuses_a_second_holder_after_lock_timeout(config):
    config = {**config, "lock_timeout": 0.2}
    with ops.lock(config):
        assert Path(config["lock_file"]).read_text() == f"{os.getpid()}\n"
        started = time.monotonic()
        with pytest.raises(ops.BackupError) as caught, ops.lock(config):
            pytest.fail("two holders of the lock")
        waited = time.monotonic() - started
    # It waited, then gave up at lock_timeout (the lock is tried once a second).
    assert 0.2 <= waited < 0.2 + 3
    assert str(caught.value) == (
        f"another backup or restore holds {config['lock_file']} (waited 0.2 s)"
    )
    with ops.lock(config):  # released by its holder, and by the one that gave up
        pass


def test_lock_second_holder_waits_for_the_first(config):
    held, order = threading.Event(), []

    def first():
        with ops.lock(config):
            held.set()
            time.sleep(0.3)
            order.append("first done")

    thread = threading.Thread(target=first)
    thread.start()
    assert held.wait(5)
    with ops.lock(config):
        order.append("second in")
    thread.join(5)
    assert order == ["first done", "second in"]


def test_lock_is_released_when_the_holder_fails(config):
    config = {**config, "lock_timeout": 0.1}
    with pytest.raises(RuntimeError, match="boom"), ops.lock(config):
        raise RuntimeError("boom")
    started = time.monotonic()
    with ops.lock(config):
        pass
    assert time.monotonic() - started < 0.5


# --- Slack --------------------------------------------------------------------------------------


class _Webhook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((self.headers["Content-Type"], json.loads(body)))
        self.send_response(self.server.status)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def _webhook(status: int):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Webhook)
    server.status, server.received = status, []
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_port}/services/T0/B0/x"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def no_proxy(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def test_notify_posts_the_text(config, no_proxy):
    with _webhook(200) as (server, url):
        assert ops.notify({**config, "slack_webhook_url": url}, ":x: daily failed") is None
    assert server.received == [("application/json", {"text": ":x: daily failed"})]


def test_notify_without_a_webhook_does_nothing(config):
    assert config["slack_webhook_url"] is None
    assert ops.notify(config, "text") is None


def test_notify_warns_on_a_500(config, no_proxy):
    with _webhook(500) as (server, url):
        warning = ops.notify({**config, "slack_webhook_url": url}, "text")
    assert warning.startswith("the Slack notification was not sent: ")
    assert "500" in warning
    assert len(server.received) == 1


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("url", ["http://127.0.0.1:{port}/hook", "ftp-ish://127.0.0.1/x"])
def test_notify_warns_when_the_webhook_is_unreachable(config, no_proxy, url):
    # The port is picked at run time: ids fixed at collection are the same on every xdist worker.
    url = url.format(port=_closed_port())
    warning = ops.notify({**config, "slack_webhook_url": url}, "text")
    assert warning.startswith("the Slack notification was not sent: ")


@pytest.mark.parametrize("url", ["hooks.slack.com/services/T0/B0/x", "http://[::1/x"])
def test_notify_never_raises_on_a_malformed_url(config, url):
    warning = ops.notify({**config, "slack_webhook_url": url}, "text")
    assert warning.startswith("the Slack notification was not sent: ")


@contextlib.contextmanager
def _answering(reply: bytes):
    """A server that reads the request and answers ``reply``, HTTP or not."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(5)

    def serve():
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    finally:
        thread.join(5)
        listener.close()


def test_notify_warns_when_the_server_hangs_up(config, no_proxy):
    with _answering(b"") as url:
        warning = ops.notify({**config, "slack_webhook_url": url}, "text")
    assert warning.startswith("the Slack notification was not sent: ")


def test_notify_never_raises_on_an_answer_that_is_not_http(config, no_proxy):
    with _answering(b"SSH-2.0-OpenSSH_9.2\r\n") as url:
        warning = ops.notify({**config, "slack_webhook_url": url}, "text")
    assert warning.startswith("the Slack notification was not sent: ")


# --- state and metrics ----------------------------------------------------------------------------

STATE = {
    "backup": {
        "daily": {
            "last_success": 1764640800,
            "size": 123456,
            "duration": 61.5,
            "last_offsite": 1764640900,
        },
        "database": {
            "last_success": 1764644400,
            "last_failure": 1764640000,
            "size": 2048,
            "duration": 3.25,
        },
    },
    "drill": {"last_success": 1764648000, "rto": 412.5, "rpo": 5400.0, "success": 1},
    "last_point": "20261202T020000Z-daily",
}


def test_render_metrics_reads_as_prometheus_text():
    text = ops.render_metrics(STATE)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in families.values()
        for s in family.samples
    }
    assert samples[("ytempire_backup_last_success_timestamp_seconds", (("scope", "daily"),))] == (
        1764640800
    )
    assert samples[("ytempire_backup_last_size_bytes", (("scope", "database"),))] == 2048
    assert samples[("ytempire_backup_last_duration_seconds", (("scope", "daily"),))] == 61.5
    failure = "ytempire_backup_last_failure_timestamp_seconds"
    assert samples[(failure, (("scope", "database"),))] == 1764640000
    assert (failure, (("scope", "daily"),)) not in samples
    assert samples[("ytempire_restore_drill_rto_seconds", ())] == 412.5
    assert samples[("ytempire_restore_drill_success", ())] == 1
    assert "ytempire_restore_drill_last_failure_timestamp_seconds" not in families
    assert all(f.type == "gauge" and f.documentation for f in families.values())
    assert text.endswith("\n")


def test_render_metrics_of_an_empty_state():
    assert list(text_string_to_metric_families(ops.render_metrics({}))) == []


@pytest.mark.parametrize(
    "state", [STATE, {}, {"drill": {"last_failure": 1764648000, "success": 0}}]
)
def test_render_metrics_passes_promtool(tmp_path, state):
    if PROMTOOL is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    checked = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=ops.render_metrics(state), capture_output=True,
        text=True, timeout=30, check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_state_round_trip_writes_the_metrics(config):
    assert ops.load_state(config) == {}
    os.makedirs(config["textfile_dir"])
    ops.save_state(config, STATE)
    state_file = Path(config["state_dir"]) / "state.json"
    assert (state_file.stat().st_mode & 0o777) == 0o600
    assert ops.load_state(config) == STATE
    prom = Path(config["textfile_dir"]) / "ytempire_backup.prom"
    assert prom.read_text() == ops.render_metrics(STATE)
    assert (prom.stat().st_mode & 0o777) == 0o644
    state_file.write_text("{truncated")
    assert ops.load_state(config) == {}


def test_save_state_without_a_textfile_directory(config):
    ops.save_state(config, {"backup": {"daily": {"last_failure": 1}}})
    assert ops.load_state(config) == {"backup": {"daily": {"last_failure": 1}}}
    assert not os.path.exists(config["textfile_dir"])


# --- row counts -------------------------------------------------------------------------------


def test_parse_counts():
    text = (
        "public.channels|12\n"
        "public.videos|0\n"
        "public.odd|name|7\n"
        "pg_dump: warning: something\n"
        "public.nothing|\n"
        "public.words|many\n"
        "\n"
    )
    assert ops.parse_counts(text) == {
        "public.channels": 12,
        "public.videos": 0,
        "public.odd|name": 7,
    }
    assert ops.parse_counts("") == {}


def test_check_rows():
    expected = {"public.a": 1, "public.b": 2, "public.c": 3}
    assert ops.check_rows(expected, {**expected, "public.new": 5}) == []
    assert ops.check_rows(expected, {"public.a": 1, "public.b": 20}) == [
        "public.b has 20 rows, the dump had 2",
        "public.c is missing",
    ]
    assert ops.check_rows({}, {"public.a": 1}) == []


# --- the modules' documentation ------------------------------------------------------------------


def test_ansible_doc_renders_restore_point():
    rendered, doc = ansible_doc("restore_point")
    for text in ("minimum_redundancy", "config_file", "latest", "redis-check-rdb", "objectives"):
        assert text in rendered, text
    options = doc["doc"]["options"]
    assert options["state"]["choices"] == ["present", "verified", "fetched", "pruned", "drilled"]
    assert options["scope"]["choices"] == list(core.SCOPES)
    assert options["config_file"]["default"] == "/etc/ytempire/backup.json"
    assert "point" in doc["return"]


def test_ansible_doc_renders_database_restore():
    rendered, doc = ansible_doc("database_restore")
    for text in ("point_in_time", "target_time", "keep_previous", "files_destination"):
        assert text in rendered, text
    options = doc["doc"]["options"]
    assert options["method"]["choices"] == ["logical", "point_in_time"]
    assert options["parts"]["choices"] == list(ops.RESTORE_PARTS)
    assert options["point"]["default"] == "latest"
    assert "restore" in doc["return"]


def test_an_atomic_write_has_its_mode_whatever_the_umask(tmp_path):
    # The timers run with UMask=0077; the node exporter must still read the metrics.
    path = tmp_path / "ytempire_backup.prom"
    old = os.umask(0o077)
    try:
        core.write_file_atomic(str(path), b"ytempire_backup_last_size_bytes 1\n", mode=0o644)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert path.read_bytes() == b"ytempire_backup_last_size_bytes 1\n"
