"""Making, checking, pruning and restoring the platform's restore points on the
server. The modules (``restore_point``, ``database_restore``) and the backup
role's timers (``ytempire-backup``) run this same code: the modules import it
as ``ansible.module_utils``, the role installs it next to the CLI.

Everything runs as root on the server. The database's and Redis' commands run
inside their own containers (``docker exec``), so that each client is the
server's version; compression, checksums and uploads run on the host.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import http.client
import json
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field

try:
    from ansible.module_utils import ytempire_backup as core
except ImportError:  # on the server, next to the CLI
    import ytempire_backup as core  # type: ignore[no-redef]


class BackupError(RuntimeError):
    """A step failed; the message says which and why."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# --- configuration --------------------------------------------------------------

DEFAULTS = {
    "backup_dir": "/backup",
    "wal_archive_dir": "/backup/wal",
    "state_dir": "/var/lib/ytempire/backup",
    "lock_file": "/run/lock/ytempire-backup.lock",
    "lock_timeout": 3600,
    "project": "ytempire",
    "compose_dir": "/opt/ytempire",
    "postgres_data_dir": "/data/postgres",
    "redis_data_dir": "/data/redis",
    "db": {"user": "ytempire", "name": "ytempire", "password": None},
    "files": [
        "/opt/ytempire",
        "/etc/nginx",
        "/etc/docker/daemon.json",
        "/etc/systemd/system/ytempire.service",
    ],
    "files_exclude": ["node_modules", "__pycache__", ".git"],
    "media_dir": "/data/media",
    "retention_days": 7,
    "minimum_redundancy": 2,
    # Free space a dump needs: the last point of its scope times this.
    "space_factor": 1.5,
    "space_reserve_bytes": 256 << 20,
    "zstd_level": 3,
    "restore_jobs": 2,
    "offsite": None,
    "slack_webhook_url": None,
    "textfile_dir": "/var/lib/prometheus/node-exporter",
    # ytempire_recovery_objectives (group_vars/all/schedules.yml): what the drill is held to.
    "recovery_objectives": {},
    "hostname": None,
}


def load_config(raw: dict) -> dict:
    """``raw`` over the defaults, checked: a bad value fails here, before anything runs."""
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        raise BackupError(f"unknown backup settings: {', '.join(unknown)}")
    config = {**DEFAULTS, **{k: v for k, v in raw.items() if v is not None}}
    config["db"] = {**DEFAULTS["db"], **(raw.get("db") or {})}
    if not config["db"].get("password"):
        raise BackupError(
            "the database password (db.password) is not set: "
            "the backup authenticates as the application does"
        )
    for key in ("retention_days", "space_factor", "lock_timeout"):
        if (
            isinstance(config[key], bool)
            or not isinstance(config[key], (int, float))
            or config[key] <= 0
        ):
            raise BackupError(f"{key} must be a positive number, not {config[key]!r}")
    redundancy = config["minimum_redundancy"]
    if isinstance(redundancy, bool) or not isinstance(redundancy, int) or redundancy < 1:
        raise BackupError(
            "minimum_redundancy must be at least 1: the last good point is never deleted"
        )
    config["hostname"] = config["hostname"] or socket.gethostname()
    return config


def config_from_file(path: str, overrides: dict | None = None) -> dict:
    """The settings the backup role wrote to ``path``, with ``overrides`` over them
    (``db`` merged key by key)."""
    try:
        with open(path, encoding="utf-8") as handle:
            raw = json.load(handle)
    except (OSError, ValueError) as exc:
        raise BackupError(
            f"cannot read the backup settings {path}: {exc} (the backup role writes them)"
        ) from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("db", {}), dict):
        raise BackupError(f"{path} is not the backup role's settings (an object with a db object)")
    overrides = dict(overrides or {})
    if "db" in overrides:
        overrides["db"] = {**raw.get("db", {}), **overrides["db"]}
    return load_config({**raw, **overrides})


def secret_values(config: dict) -> set[str]:
    """The settings' secrets, for a module to mask in what it returns."""
    offsite_settings = config.get("offsite") or {}
    values = (
        config["db"].get("password"),
        offsite_settings.get("secret_access_key"),
        offsite_settings.get("encryption_key"),
        config.get("slack_webhook_url"),
    )
    return {str(v) for v in values if v}


def points_dir(config: dict) -> str:
    return os.path.join(config["backup_dir"], core.POINTS_DIR)


# --- processes ------------------------------------------------------------------


def run(
    argv: list[str],
    *,
    input: bytes | None = None,
    env: dict | None = None,
    timeout: float | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess:
    """Run ``argv``; BackupError with its stderr when it fails and ``check``."""
    proc = subprocess.run(
        argv, input=input, capture_output=True, env=env, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise BackupError(f"{' '.join(argv[:4])} ... exited {proc.returncode}: {tail(proc.stderr)}")
    return proc


def tail(data: bytes, limit: int = 600) -> str:
    text = data.decode("utf-8", "replace").strip()
    return text[-limit:] if text else "(no output)"


def pipeline(
    stages: list[list[str]],
    out_path: str | None = None,
    *,
    stdin_path: str | None = None,
    env: dict | None = None,
) -> list[str]:
    """Run ``stages`` as a shell pipeline would, into ``out_path``.

    Every stage's exit status counts (pipefail): a pg_dump that fails while
    zstd succeeds is a failure. A write error (a full disk) is one too.
    Returns each stage's stderr.
    """
    procs, errs = [], []
    stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL  # noqa: SIM115
    out = open(out_path, "wb") if out_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        for i, argv in enumerate(stages):
            err = tempfile.TemporaryFile()  # noqa: SIM115
            errs.append(err)
            last = i == len(stages) - 1
            proc = subprocess.Popen(
                argv,
                stdin=procs[-1].stdout if procs else stdin,
                stdout=out if last else subprocess.PIPE,
                stderr=err,
                env=env,
            )
            if procs:
                procs[-1].stdout.close()  # the next stage owns it: SIGPIPE reaches the writer
            procs.append(proc)
        codes = [p.wait() for p in procs]
        if out_path:
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        for p in procs:
            p.kill()
        raise BackupError(f"{' '.join(stages[0][:3])} ...: {exc}") from exc
    finally:
        if stdin_path:
            stdin.close()
        if out_path:
            out.close()
    texts = []
    for err in errs:
        err.seek(0)
        texts.append(err.read().decode("utf-8", "replace"))
        err.close()
    messages = [
        f"{' '.join(argv[:5]) if argv[0] == 'docker' else argv[0]} exited {code}: "
        f"{tail(text.encode())}"
        for argv, code, text in zip(stages, codes, texts, strict=True)
        if code != 0
    ]
    if messages:
        raise BackupError("; ".join(messages))
    return texts


# --- the project's containers ---------------------------------------------------


def container(config: dict, service: str, running: bool = True) -> str:
    """The id of the project's container of ``service``."""
    argv = [
        "docker",
        "ps",
        "--quiet",
        "--filter",
        f"label=com.docker.compose.project={config['project']}",
        "--filter",
        f"label=com.docker.compose.service={service}",
    ]
    if not running:
        argv.insert(2, "--all")
    ids = run(argv).stdout.decode().split()
    if not ids:
        state = "running " if running else ""
        raise BackupError(
            f"no {state}{service} container of project {config['project']} (is the platform up?)"
        )
    return ids[0]


def app_containers(config: dict) -> list[str]:
    """The running API and worker containers, of either color."""
    project = f"label=com.docker.compose.project={config['project']}"
    argv = ["docker", "ps", "--quiet", "--filter", project, "--filter", "label=ytempire.role"]
    return run(argv).stdout.decode().split()


def pg_env(config: dict) -> dict:
    return {**os.environ, "PGPASSWORD": str(config["db"]["password"])}


def pg_exec(
    config: dict, argv: list[str], interactive: bool = False, target: str | None = None
) -> list[str]:
    """``argv`` run as postgres in the platform's PostgreSQL container (or the
    container ``target``, the drill's), with the password from the config."""
    flags = ["-i"] if interactive else []
    return [
        "docker",
        "exec",
        *flags,
        "-e",
        "PGPASSWORD",
        "-u",
        "postgres",
        target or container(config, "postgres"),
        *argv,
    ]


def psql(
    config: dict,
    sql: str,
    dbname: str | None = None,
    target: str | None = None,
    check: bool = True,
) -> str:
    """One statement's unaligned output (in the live server, or the container ``target``)."""
    db = config["db"]
    argv = pg_exec(
        config,
        [
            "psql",
            "-X",
            "-h",
            "127.0.0.1",
            "-U",
            db["user"],
            "-d",
            dbname or db["name"],
            "--no-password",
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            "-c",
            sql,
        ],
        target=target,
    )
    return run(argv, env=pg_env(config), check=check).stdout.decode().strip()


def redis_cli(config: dict, *args: str) -> str:
    return (
        run(["docker", "exec", container(config, "redis"), "redis-cli", *args])
        .stdout.decode()
        .strip()
    )


def redis_info(config: dict, section: str = "persistence") -> dict:
    info = {}
    for line in redis_cli(config, "INFO", section).splitlines():
        if ":" in line and not line.startswith("#"):
            key, _, value = line.partition(":")
            info[key] = value.strip()
    return info


# --- the parts of a point -------------------------------------------------------


SENTINEL_TABLE = "ytempire_backup.sentinel"

# One psql session holds a repeatable-read snapshot: it counts every table's
# rows in it, and pg_dump (psql's \!, with the transaction still open) dumps
# that same snapshot, so the counts are the dump's and a restore can be held
# to them. The counts go to a file and then stderr; pg_dump's exit status is
# the script's.
_DUMP_SCRIPT = r"""set -eu
YT_TMP=$(mktemp -d)
export YT_TMP
trap 'rm -rf "$YT_TMP"' EXIT
echo 1 > "$YT_TMP/rc"
psql -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -U "$1" -d "$2" --no-password \
  -o "$YT_TMP/counts" <<'SQL'
BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;
SELECT pg_export_snapshot() AS snapshot \gset
\setenv YT_SNAPSHOT :snapshot
SELECT format('SELECT %L, count(*) FROM %I.%I',
              schemaname || '.' || tablename, schemaname, tablename)
  FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1 \gexec
\! @PG_DUMP@ --snapshot="$YT_SNAPSHOT"; echo $? > "$YT_TMP/rc"
COMMIT;
SQL
cat "$YT_TMP/counts" >&2
exit "$(cat "$YT_TMP/rc")"
"""


def literal(text: str) -> str:
    """``text`` as an SQL string literal."""
    return "'" + str(text).replace("'", "''") + "'"


def ident(name: str) -> str:
    """``name`` as an SQL identifier."""
    return '"' + str(name).replace('"', '""') + '"'


def write_sentinel(config: dict, pid: str) -> str:
    """A row the restore drill looks for: it proves the restored data is this point's."""
    # Constants and quoted values only (literal).
    table = SENTINEL_TABLE
    statements = [
        "CREATE SCHEMA IF NOT EXISTS ytempire_backup",
        f"CREATE TABLE IF NOT EXISTS {table} "
        "(point_id text PRIMARY KEY, written_at timestamptz NOT NULL DEFAULT now())",
        f"DELETE FROM {table} WHERE written_at < now() - interval '90 days'",  # noqa: S608
        f"INSERT INTO {table} (point_id) VALUES ({literal(pid)}) ON CONFLICT DO NOTHING",  # noqa: S608
        "SELECT to_char(written_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') "  # noqa: S608
        f"FROM {table} WHERE point_id = {literal(pid)}",
    ]
    return psql(config, "; ".join(statements)).splitlines()[-1]


def parse_counts(text: str) -> dict[str, int]:
    counts = {}
    for line in text.splitlines():
        name, sep, value = line.rpartition("|")
        if sep and value.strip().isdigit():
            counts[name] = int(value)
    return counts


def dump_postgres(config: dict, path: str) -> dict:
    db = config["db"]
    script = _DUMP_SCRIPT.replace(
        "@PG_DUMP@", shlex.join(core.pg_dump_argv(db["user"], db["name"]))
    )
    errors = pipeline(
        [
            pg_exec(config, ["sh", "-c", script, "ytempire-dump", db["user"], db["name"]]),
            core.zstd_compress_argv(config["zstd_level"]),
        ],
        path,
        env=pg_env(config),
    )
    # The archive's table of contents, read back by the server's pg_restore:
    # a dump pg_restore cannot read fails the backup now, not the restore.
    # pg_restore stops reading after the table of contents: the rest of the
    # stream is read to its end, or zstd would die of SIGPIPE on any large dump.
    toc = "pg_restore --list > /dev/null; rc=$?; cat > /dev/null; exit $rc"
    pipeline(
        [core.zstd_decompress_argv(), pg_exec(config, ["sh", "-c", toc], interactive=True)],
        stdin_path=path,
    )
    return {"format": "custom", "compression": "zstd", "rows": parse_counts(errors[0])}


def dump_postgres_globals(config: dict, path: str) -> dict:
    pipeline(
        [
            pg_exec(config, core.pg_dumpall_globals_argv(config["db"]["user"])),
            core.zstd_compress_argv(config["zstd_level"]),
        ],
        path,
        env=pg_env(config),
    )
    return {"format": "sql", "compression": "zstd"}


def base_backup(config: dict, path: str) -> dict:
    """A physical copy of the cluster with the WAL it needs (where point-in-time
    recovery starts)."""
    wal_from = psql(config, "SELECT pg_walfile_name(pg_current_wal_lsn())")
    argv = [
        "pg_basebackup",
        "-h",
        "127.0.0.1",
        "-U",
        config["db"]["user"],
        "--no-password",
        "-D",
        "-",
        "-F",
        "t",
        "-X",
        "fetch",
        "--checkpoint=fast",
    ]
    pipeline(
        [pg_exec(config, argv), core.zstd_compress_argv(config["zstd_level"])],
        path,
        env=pg_env(config),
    )
    return {"format": "tar", "compression": "zstd", "wal_from": wal_from}


def wait_redis(config: dict, predicate, what: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        info = redis_info(config)
        if predicate(info):
            return info
        if time.monotonic() > deadline:
            raise BackupError(f"Redis: {what} did not happen within {timeout:.0f} s")
        time.sleep(0.2)


def save_redis(config: dict, path: str) -> dict:
    """BGSAVE, then the RDB copied and checked with the server's redis-check-rdb.

    A BGSAVE already running started before this backup: wait for it, then
    start ours. An append-only rewrite (another child) makes Redis refuse a
    BGSAVE: SCHEDULE queues ours after it. Ours is done when the count of saves
    moved past the one seen at the start (LASTSAVE's second is too coarse) and
    its status is ok.
    """
    started = time.time()

    def idle(i: dict) -> bool:
        return i.get("rdb_bgsave_in_progress") == "0"

    info = wait_redis(config, idle, "the running BGSAVE finishing")
    saves_before = int(info.get("rdb_saves", -1))
    lastsave_before = int(redis_cli(config, "LASTSAVE"))
    for _ in range(50):
        answer = redis_cli(config, "BGSAVE", "SCHEDULE").lower()
        if "started" in answer or "scheduled" in answer:
            break
        if "in progress" not in answer and "another child" not in answer:
            raise BackupError(f"Redis refused BGSAVE: {answer}")
        wait_redis(config, idle, "the running BGSAVE finishing")
    else:
        raise BackupError("Redis: BGSAVE kept answering that a save is in progress")

    def done(i: dict) -> bool:
        if i.get("rdb_bgsave_in_progress") != "0":
            return False
        if saves_before >= 0:
            return int(i.get("rdb_saves", 0)) > saves_before
        return int(redis_cli(config, "LASTSAVE")) > lastsave_before

    info = wait_redis(config, done, "our BGSAVE")
    if info.get("rdb_last_bgsave_status") != "ok":
        raise BackupError(
            f"Redis' BGSAVE failed (rdb_last_bgsave_status={info.get('rdb_last_bgsave_status')})"
        )
    rdb_dir = redis_cli(config, "CONFIG", "GET", "dir").splitlines()[-1]
    rdb_file = redis_cli(config, "CONFIG", "GET", "dbfilename").splitlines()[-1]
    redis_id = container(config, "redis")
    pipeline(
        [
            ["docker", "exec", redis_id, "cat", f"{rdb_dir}/{rdb_file}"],
            core.zstd_compress_argv(config["zstd_level"]),
        ],
        path,
    )
    check = 'f=$(mktemp) && cat > "$f" && redis-check-rdb "$f"; rc=$?; rm -f "$f"; exit $rc'
    pipeline(
        [core.zstd_decompress_argv(), ["docker", "exec", "-i", redis_id, "sh", "-c", check]],
        stdin_path=path,
    )
    return {"compression": "zstd", "saved_after": started, "checked_with": "redis-check-rdb"}


def tar_paths(config: dict, paths: list[str], path: str, level: int) -> dict:
    present = [p for p in paths if os.path.lexists(p)]
    if not present:
        raise BackupError(f"none of {', '.join(paths)} exists")
    # Owners by name (and number): a restore on another host maps them to its own users.
    argv = ["tar", "--create", "--file=-", "--directory=/", "--acls", "--xattrs"]
    argv += [f"--exclude={pattern}" for pattern in config["files_exclude"]]
    argv += [p.lstrip("/") for p in present]
    pipeline([argv, core.zstd_compress_argv(level)], path)
    return {"paths": present, "missing": sorted(set(paths) - set(present)), "compression": "zstd"}


def running_images(config: dict, path: str) -> dict:
    """What each of the project's containers runs: reference, image id, registry digests."""
    ids = (
        run(
            [
                "docker",
                "ps",
                "--quiet",
                "--filter",
                f"label=com.docker.compose.project={config['project']}",
            ]
        )
        .stdout.decode()
        .split()
    )
    entries = []
    if ids:
        for c in json.loads(run(["docker", "inspect", *ids]).stdout):
            image = json.loads(run(["docker", "image", "inspect", c["Image"]]).stdout)[0]
            entries.append(
                {
                    "container": c["Name"].lstrip("/"),
                    "service": c["Config"]["Labels"].get("com.docker.compose.service"),
                    "reference": c["Config"]["Image"],
                    "image_id": c["Image"],
                    "repo_digests": image.get("RepoDigests") or [],
                }
            )
    entries.sort(key=lambda e: e["container"])
    core.write_file_atomic(path, (json.dumps(entries, indent=2) + "\n").encode())
    return {"containers": len(entries)}


def versions(config: dict) -> dict:
    found = {"format": str(core.FORMAT)}
    probes = {
        "postgres_server": lambda: psql(config, "SHOW server_version"),
        "pg_dump": lambda: run(pg_exec(config, ["pg_dump", "--version"])).stdout.decode().strip(),
        "redis_server": lambda: redis_info(config, "server").get("redis_version", ""),
        "zstd": lambda: run(["zstd", "--version"]).stdout.decode().strip(),
        "docker": lambda: (
            run(["docker", "version", "--format", "{{.Server.Version}}"]).stdout.decode().strip()
        ),
        "tar": lambda: run(["tar", "--version"]).stdout.decode().splitlines()[0],
    }
    for name, probe in probes.items():
        try:
            found[name] = probe()
        except (BackupError, OSError, IndexError) as exc:
            found[name] = f"unknown ({exc})"
    return found


PARTS = {
    "postgres": dump_postgres,
    "postgres-globals": dump_postgres_globals,
    "postgres-base": base_backup,
    "redis": save_redis,
    "files": lambda config, path: tar_paths(config, config["files"], path, config["zstd_level"]),
    "images": running_images,
    "media": lambda config, path: tar_paths(config, [config["media_dir"]], path, 1),
}


# --- points on disk -------------------------------------------------------------


@dataclass
class Point:
    id: str
    path: str
    created: dt.datetime
    scope: str
    manifest: dict | None
    problems: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.manifest is not None

    def info(self, verified: bool) -> core.PointInfo:
        return core.PointInfo(id=self.id, created=self.created, scope=self.scope, verified=verified)


def list_points(config: dict) -> list[Point]:
    """The points in the backup directory, oldest first (incomplete ones too)."""
    base = points_dir(config)
    found = []
    for name in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        parsed = core.parse_point_id(name)
        path = os.path.join(base, name)
        if parsed is None or not os.path.isdir(path):
            continue
        try:
            manifest = core.read_manifest(path)
        except core.ManifestError:
            manifest = None
        found.append(
            Point(id=name, path=path, created=parsed[0], scope=parsed[1], manifest=manifest)
        )
    return found


def verify_point(point: Point, deep: bool = True) -> list[str]:
    """Problems of a local point: files against the manifest, and with ``deep``
    each zstd frame's own checksum (a corrupt file with a forged manifest entry)."""
    if point.manifest is None:
        return ["no manifest: the run that made it did not finish"]
    problems = core.verify_files(point.path, point.manifest)
    if deep and not problems:
        for artifact in point.manifest["artifacts"]:
            if artifact["file"].endswith(".zst"):
                proc = run(
                    ["zstd", "--quiet", "--test", os.path.join(point.path, artifact["file"])],
                    check=False,
                )
                if proc.returncode != 0:
                    problems.append(f"{artifact['file']} fails zstd's test: {tail(proc.stderr)}")
    return problems


def find_point(config: dict, point_id: str | None, scopes: tuple[str, ...] | None = None) -> Point:
    """The point ``point_id``, or the newest verified one of ``scopes``."""
    points = list_points(config)
    if point_id and point_id != "latest":
        for point in points:
            if point.id == point_id:
                problems = verify_point(point)
                if problems:
                    raise BackupError(
                        f"restore point {point_id} does not verify: {'; '.join(problems)}"
                    )
                return point
        raise BackupError(f"no restore point {point_id} in {points_dir(config)}")
    for point in reversed(points):
        if scopes and point.scope not in scopes:
            continue
        if point.complete and not verify_point(point):
            return point
    raise BackupError(
        f"no verified restore point{' of scope ' + '/'.join(scopes) if scopes else ''} "
        f"in {points_dir(config)}"
    )


# --- locking, space, notification, metrics ---------------------------------------


@contextlib.contextmanager
def lock(config: dict):
    """One backup or restore at a time; a second waits up to lock_timeout."""
    os.makedirs(os.path.dirname(config["lock_file"]), exist_ok=True)
    fd = os.open(config["lock_file"], os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + config["lock_timeout"]
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise BackupError(
                        f"another backup or restore holds {config['lock_file']} "
                        f"(waited {config['lock_timeout']} s)"
                    ) from None
                time.sleep(1)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


def check_space(config: dict, scope: str, points: list[Point]) -> dict:
    """Refuse to start when the backup disk cannot take another point like the last one."""
    last = [p for p in points if p.scope == scope and p.complete]
    need = int(last[-1].manifest.get("size", 0) * config["space_factor"]) if last else 0
    need += config["space_reserve_bytes"]
    free = shutil.disk_usage(config["backup_dir"]).free
    if free < need:
        basis = (
            f"{config['space_factor']:g} x the last {scope} point ({last[-1].id})"
            if last
            else "the reserve"
        )
        raise BackupError(
            f"{config['backup_dir']} has {free >> 20} MiB free; a {scope} point needs "
            f"{need >> 20} MiB ({basis} plus {config['space_reserve_bytes'] >> 20} MiB reserve): "
            "free space or move backup_dir"
        )
    return {"free_bytes": free, "needed_bytes": need}


def notify(config: dict, text: str) -> str | None:
    """Post ``text`` to Slack; a failure to post is returned as a warning, never raised."""
    url = config.get("slack_webhook_url")
    if not url:
        return None
    if not str(url).startswith(("https://", "http://")):
        return f"the Slack notification was not sent: {url!r} is not an http(s) URL"
    try:
        request = urllib.request.Request(  # noqa: S310  checked above
            url,
            data=json.dumps({"text": text}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310  checked above
            answer.read()
    except (OSError, ValueError, http.client.HTTPException) as exc:
        return f"the Slack notification was not sent: {exc}"
    return None


def load_state(config: dict) -> dict:
    try:
        with open(os.path.join(config["state_dir"], "state.json"), encoding="utf-8") as handle:
            return json.load(handle)
    except (FileNotFoundError, ValueError):
        return {}


def save_state(config: dict, state: dict) -> None:
    os.makedirs(config["state_dir"], mode=0o700, exist_ok=True)
    core.write_file_atomic(
        os.path.join(config["state_dir"], "state.json"),
        (json.dumps(state, indent=2, sort_keys=True) + "\n").encode(),
    )
    write_metrics(config, state)


METRICS = (
    (
        "ytempire_backup_last_success_timestamp_seconds",
        "gauge",
        "When the last backup of a scope succeeded.",
        "backup",
        "last_success",
    ),
    (
        "ytempire_backup_last_failure_timestamp_seconds",
        "gauge",
        "When the last backup of a scope failed.",
        "backup",
        "last_failure",
    ),
    (
        "ytempire_backup_last_size_bytes",
        "gauge",
        "Size of the last successful restore point of a scope.",
        "backup",
        "size",
    ),
    (
        "ytempire_backup_last_duration_seconds",
        "gauge",
        "Duration of the last successful backup of a scope.",
        "backup",
        "duration",
    ),
    (
        "ytempire_backup_last_offsite_success_timestamp_seconds",
        "gauge",
        "When the last point of a scope reached S3.",
        "backup",
        "last_offsite",
    ),
    (
        "ytempire_restore_drill_last_success_timestamp_seconds",
        "gauge",
        "When the last restore drill succeeded.",
        "drill",
        "last_success",
    ),
    (
        "ytempire_restore_drill_last_failure_timestamp_seconds",
        "gauge",
        "When the last restore drill failed.",
        "drill",
        "last_failure",
    ),
    (
        "ytempire_restore_drill_rto_seconds",
        "gauge",
        "Recovery time the last successful drill measured.",
        "drill",
        "rto",
    ),
    (
        "ytempire_restore_drill_rpo_seconds",
        "gauge",
        "Data the last successful drill's point lacked, as its age at the drill.",
        "drill",
        "rpo",
    ),
    (
        "ytempire_restore_drill_success",
        "gauge",
        "1 when the last drill succeeded, 0 when it failed.",
        "drill",
        "success",
    ),
)


def render_metrics(state: dict) -> str:
    lines = []
    for name, kind, text, section, key in METRICS:
        samples = []
        if section == "backup":
            for scope, values in sorted(state.get("backup", {}).items()):
                if key in values:
                    samples.append(f'{name}{{scope="{scope}"}} {values[key]}')
        elif key in state.get("drill", {}):
            samples.append(f"{name} {state['drill'][key]}")
        if samples:
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", *samples]
    return "\n".join(lines) + "\n"


def write_metrics(config: dict, state: dict) -> None:
    directory = config.get("textfile_dir")
    if directory and os.path.isdir(directory):
        core.write_file_atomic(
            os.path.join(directory, "ytempire_backup.prom"),
            render_metrics(state).encode(),
            mode=0o644,
        )


# --- offsite --------------------------------------------------------------------


def offsite(config: dict):
    """The S3 copy, when configured (ytempire_offsite, boto3)."""
    settings = config.get("offsite")
    if not settings or not settings.get("enabled", True):
        return None
    try:
        from ansible.module_utils import ytempire_offsite
    except ImportError:
        import ytempire_offsite  # type: ignore[no-redef]
    options = {k: v for k, v in settings.items() if k != "enabled"}
    return ytempire_offsite.Offsite(**options)


# --- the jobs -------------------------------------------------------------------


def _failure(
    config: dict, state: dict, scope: str, result: dict, exc: BaseException
) -> BackupError:
    """Record and announce a failed run; the error to raise."""
    if isinstance(exc, BackupError):
        error = exc
    elif isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        error = BackupError(f"the backup disk filled up: {exc}")
    else:
        error = BackupError(f"{type(exc).__name__}: {exc}")
    state.setdefault("backup", {}).setdefault(scope, {})["last_failure"] = int(time.time())
    save_state(config, state)
    warning = notify(config, f":x: YTEMPIRE {scope} backup on {config['hostname']} failed: {error}")
    if warning:
        result["warnings"].append(warning)
    error.result = result  # type: ignore[attr-defined]
    return error


def refuse_during_recovery(config: dict, what: str) -> None:
    hold = os.path.join(config["backup_dir"], core.RECOVERY_HOLD)
    if os.path.exists(hold):
        raise BackupError(
            f"a disaster recovery is rebuilding this host ({hold} exists): no {what} until it"
            " has restored the data; if no recovery runs, finish it again"
            " (playbooks/disaster-recovery.yml) or remove the file"
        )


def make_point(config: dict, scope: str, now: dt.datetime | None = None) -> dict:
    """Make, check and (when configured) upload one restore point, then apply retention.

    A failure while the point is made removes its files; a failed upload
    keeps the verified local point (the next run uploads it). Either way no
    retention runs, the failure goes to the metrics and to Slack, and earlier
    points are left as they are.
    """
    if scope not in core.SCOPES:
        raise BackupError(f"{scope!r} is not a scope ({', '.join(core.SCOPES)})")
    refuse_during_recovery(config, "restore point is made")
    # Files of a point are root's alone: they hold the secrets.
    os.umask(0o077)
    now = (now or utcnow()).replace(microsecond=0)
    pid = core.point_id(now, scope)
    state = load_state(config)
    result = {"id": pid, "scope": scope, "warnings": []}
    t0 = time.monotonic()
    with lock(config):
        base = points_dir(config)
        os.makedirs(base, mode=0o700, exist_ok=True)
        points = list_points(config)
        # A point without a manifest was left by a run that died: the lock says none runs now.
        for stale in [p for p in points if not p.complete]:
            shutil.rmtree(stale.path, ignore_errors=True)
            result["warnings"].append(f"removed {stale.id}, left incomplete by an earlier run")
        points = [p for p in points if p.complete]
        path = os.path.join(base, pid)
        try:
            result["space"] = check_space(config, scope, points)
            if os.path.exists(path):
                raise BackupError(f"{path} exists already (two runs in one second?)")
            os.makedirs(path, mode=0o700)
            manifest = _make_parts(config, pid, path)
            point = Point(id=pid, path=path, created=now, scope=scope, manifest=manifest)
            problems = verify_point(point)
            if problems:
                raise BackupError(f"the new point does not verify: {'; '.join(problems)}")
        except BaseException as exc:
            shutil.rmtree(path, ignore_errors=True)
            error = _failure(config, state, scope, result, exc)
            if error is exc:
                raise
            raise error from exc
        result["size"] = manifest["size"]
        remote = offsite(config)
        if remote is not None:
            try:
                result["offsite"] = sync_offsite(config, remote, pid)
            except Exception as exc:  # boto3's and ours: the upload failed, whatever the cause
                message = (
                    f"{pid} is made and verified here, but its offsite copy failed, so retention "
                    f"did not run (the next run uploads it): {exc}"
                )
                raise _failure(config, state, scope, result, BackupError(message)) from exc
        result["retention"] = apply_retention(config, protect=(pid,))
        result["duration"] = round(time.monotonic() - t0, 3)
        values = state.setdefault("backup", {}).setdefault(scope, {})
        values.update(
            last_success=int(time.time()), size=result["size"], duration=result["duration"]
        )
        if remote is not None:
            values["last_offsite"] = int(time.time())
        state["last_point"] = pid
        save_state(config, state)
    return result


def _make_parts(config: dict, pid: str, path: str) -> dict:
    """Every part of the point's scope into ``path``, then its manifest (last)."""
    scope = core.parse_point_id(pid)[1]
    try:
        sentinel = write_sentinel(config, pid)
    except BackupError as exc:
        raise BackupError(f"postgres: {exc}") from exc
    artifacts, durations = [], {}
    for part in core.SCOPES[scope]:
        started = time.monotonic()
        file_path = os.path.join(path, core.ARTIFACT_FILES[part])
        try:
            detail = PARTS[part](config, file_path)
        except BackupError as exc:
            raise BackupError(f"{part}: {exc}") from exc
        durations[part] = time.monotonic() - started
        digest, size = core.sha256_file(file_path)
        if size == 0:
            raise BackupError(f"{part}: {core.ARTIFACT_FILES[part]} is empty")
        artifacts.append(
            core.Artifact(
                part=part,
                file=core.ARTIFACT_FILES[part],
                sha256=digest,
                size=size,
                detail={**detail, "seconds": round(durations[part], 3)},
            )
        )
    sentinel_record = {"point_id": pid, "written_at": sentinel}
    manifest = core.build_manifest(
        pid,
        config["hostname"],
        artifacts,
        versions(config),
        durations,
        extra={"sentinel": sentinel_record},
    )
    core.write_manifest(path, manifest)
    return manifest


def sync_offsite(config: dict, remote, pid: str) -> dict:
    """Upload ``pid``, then the local verified points within retention that S3 lacks
    (an earlier run's failed upload)."""
    uploaded = {pid: remote.upload_point(os.path.join(points_dir(config), pid))}
    complete = {p["id"] for p in remote.list_points() if p["complete"]}
    cutoff = utcnow() - dt.timedelta(days=config["retention_days"])
    for point in reversed(list_points(config)):
        if (
            point.id in complete
            or point.id in uploaded
            or not point.complete
            or point.created < cutoff
        ):
            continue
        if not verify_point(point, deep=False):
            uploaded[point.id] = remote.upload_point(point.path)
    return {"uploaded": sorted(uploaded), "details": uploaded}


def prune(config: dict) -> dict:
    """Retention on its own (a timer's or an operator's run), under the lock."""
    refuse_during_recovery(config, "retention runs")
    with lock(config):
        return apply_retention(config)


def apply_retention(
    config: dict, protect: tuple[str, ...] = (), now: dt.datetime | None = None
) -> dict:
    """Delete what retention says, locally and offsite, and prune the WAL archive."""
    now = now or utcnow()
    points = list_points(config)
    infos = [p.info(verified=p.complete and not verify_point(p, deep=False)) for p in points]
    plan = core.plan_retention(
        infos, now, config["retention_days"], config["minimum_redundancy"], protect
    )
    for pid in plan.delete:
        shutil.rmtree(os.path.join(points_dir(config), pid), ignore_errors=True)
    done = {"local": {"kept": plan.keep, "deleted": plan.delete}}
    remote = offsite(config)
    if remote is not None:
        remote_plan = remote.apply_retention(
            now, config["retention_days"], config["minimum_redundancy"], protect
        )
        done["offsite"] = {"kept": remote_plan.keep, "deleted": remote_plan.delete}
    done["wal_deleted"] = prune_wal(config)
    return done


def prune_wal(config: dict) -> int:
    """Delete archived WAL older than every kept base backup needs (history files stay)."""
    bases = [
        p
        for p in list_points(config)
        if p.complete and any(a["part"] == "postgres-base" for a in p.manifest["artifacts"])
    ]
    if not bases:
        return 0
    oldest = next(a for a in bases[0].manifest["artifacts"] if a["part"] == "postgres-base").get(
        "wal_from"
    )
    directory = config["wal_archive_dir"]
    if not oldest or not os.path.isdir(directory):
        return 0
    deleted = 0
    for name in os.listdir(directory):
        segment = name.split(".", 1)[0]
        if (
            len(segment) == 24
            and all(c in "0123456789ABCDEF" for c in segment)
            and segment[8:] < oldest[8:]
        ):
            os.unlink(os.path.join(directory, name))
            deleted += 1
    return deleted


# What database_restore's parts are made of.
RESTORE_PARTS = {"database": "postgres", "redis": "redis", "media": "media", "files": "files"}


def verify(config: dict, point_id: str | None = None, remote: bool = False) -> dict:
    """Check one point (or every local one), locally and, with ``remote``, in S3."""
    if point_id == "latest":
        point_id = find_point(config, None).id
    points = list_points(config)
    if point_id:
        points = [p for p in points if p.id == point_id]
        if not points and not remote:
            raise BackupError(f"no restore point {point_id} in {points_dir(config)}")
    report = {p.id: verify_point(p) for p in points}
    result = {"local": report, "ok": not any(report.values())}
    if point_id and points and points[0].manifest:
        held = {a["part"] for a in points[0].manifest["artifacts"]}
        result.update(
            id=point_id,
            scope=points[0].scope,
            parts=[name for name, part in RESTORE_PARTS.items() if part in held],
        )
    if remote:
        target = offsite(config)
        if target is None:
            raise BackupError("no offsite storage is configured")
        ids = [point_id] if point_id else [p["id"] for p in target.list_points() if p["complete"]]
        result["offsite"] = {pid: target.verify_point(pid) for pid in ids}
        result["ok"] = result["ok"] and not any(result["offsite"].values())
    return result


# --- restoring ------------------------------------------------------------------


def inspect(ref: str) -> dict:
    return json.loads(run(["docker", "inspect", ref]).stdout)[0]


def stage(config: dict, point: Point, part: str, suffix: str) -> str:
    """The part of ``point`` decompressed into the staging directory (a seekable file)."""
    directory = os.path.join(config["backup_dir"], "staging")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    target = os.path.join(directory, f"{point.id}.{suffix}")
    source = os.path.join(point.path, core.ARTIFACT_FILES[part])
    try:
        pipeline([core.zstd_decompress_argv()], target, stdin_path=source)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(target)
        raise
    return target


def pg_restore_file(
    config: dict, dump: str, dbname: str, network: str, host: str, image: str
) -> None:
    """pg_restore from the postgres image itself (the server's version), in
    parallel, the first error fatal."""
    db = config["db"]
    argv = [
        "docker",
        "run",
        "--rm",
        "--network",
        network,
        "-e",
        "PGPASSWORD",
        "--volume",
        f"{dump}:/restore.dump:ro",
        "--entrypoint",
        "pg_restore",
        image,
        *core.pg_restore_argv(
            db["user"], dbname, "/restore.dump", config["restore_jobs"], host=host
        )[1:],
    ]
    run(argv, env=pg_env(config))


def count_rows(config: dict, dbname: str, exec_in: str | None = None) -> dict[str, int]:
    """Rows of every table of ``dbname`` (the live server's, or the container ``exec_in``'s)."""
    db = config["db"]
    sql = (
        "SELECT format('SELECT %L, count(*) FROM %I.%I', "
        "schemaname || '.' || tablename, schemaname, tablename) FROM pg_tables "
        "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1 \\gexec"
    )
    psql_argv = ["psql", "-X", "-q", "-At", "-h", "127.0.0.1", "-U", db["user"], "-d", dbname,
                 "--no-password", "-v", "ON_ERROR_STOP=1"]  # fmt: skip
    argv = pg_exec(config, psql_argv, interactive=True, target=exec_in)
    return parse_counts(run(argv, input=sql.encode(), env=pg_env(config)).stdout.decode())


def check_rows(expected: dict[str, int], found: dict[str, int]) -> list[str]:
    """Tables whose restored row count is not the dump's."""
    problems = []
    for table, rows in sorted(expected.items()):
        if table not in found:
            problems.append(f"{table} is missing")
        elif found[table] != rows:
            problems.append(f"{table} has {found[table]} rows, the dump had {rows}")
    return problems


def wait_healthy(ids: list[str], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    pending = list(ids)
    while pending:
        for cid in list(pending):
            state = inspect(cid)["State"]
            health = (state.get("Health") or {}).get("Status")
            if state.get("Running") and health in (None, "healthy"):
                pending.remove(cid)
        if pending and time.monotonic() > deadline:
            names = ", ".join(inspect(c)["Name"].lstrip("/") for c in pending)
            raise BackupError(f"{names} did not become healthy within {timeout:.0f} s")
        if pending:
            time.sleep(1)


@contextlib.contextmanager
def app_stopped(config: dict):
    """The API and the worker stopped (no writes during a restore), started again after, healthy."""
    ids = app_containers(config)
    if ids:
        run(["docker", "stop", "--time", "60", *ids])
    try:
        yield ids
    finally:
        if ids:
            run(["docker", "start", *ids])
    if ids:
        wait_healthy(ids)


def restore_database(
    config: dict, point_id: str | None = None, keep_previous: bool = False
) -> dict:
    """Restore the logical dump of a point into a scratch database, check it, then swap it in.

    The live database is renamed only after pg_restore (errors fatal) and the
    row counts succeeded: a failed restore leaves it untouched.
    """
    db = config["db"]
    result = {"method": "logical"}
    t0 = time.monotonic()
    with lock(config):
        point = find_point(config, point_id)
        result["point"] = point.id
        dump = stage(config, point, "postgres", "dump")
        live = inspect(container(config, "postgres"))
        network = f"{config['project']}_data"
        scratch = f"{db['name']}_restoring"
        previous = f"{db['name']}_before_restore_{utcnow():%Y%m%d%H%M%S}"
        try:
            with app_stopped(config) as stopped:
                result["stopped"] = len(stopped)
                psql(config, f"DROP DATABASE IF EXISTS {ident(scratch)}", dbname="postgres")
                psql(
                    config,
                    f"CREATE DATABASE {ident(scratch)} OWNER {ident(db['user'])} "
                    "TEMPLATE template0",
                    dbname="postgres",
                )
                try:
                    pg_restore_file(
                        config, dump, scratch, network, "postgres", live["Config"]["Image"]
                    )
                    expected = next(
                        a for a in point.manifest["artifacts"] if a["part"] == "postgres"
                    ).get("rows", {})
                    problems = check_rows(expected, count_rows(config, scratch))
                    if problems:
                        raise BackupError(
                            f"the restored database does not match the dump: {'; '.join(problems)}"
                        )
                except BaseException:
                    psql(config, f"DROP DATABASE IF EXISTS {ident(scratch)}", dbname="postgres")
                    raise
                psql(
                    config,
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "  # noqa: S608  quoted
                    f"WHERE datname = {literal(db['name'])}",
                    dbname="postgres",
                )
                psql(
                    config,
                    f"ALTER DATABASE {ident(db['name'])} RENAME TO {ident(previous)}",
                    dbname="postgres",
                )
                psql(
                    config,
                    f"ALTER DATABASE {ident(scratch)} RENAME TO {ident(db['name'])}",
                    dbname="postgres",
                )
                result["rows"] = expected
        finally:
            os.unlink(dump)
        if keep_previous:
            result["previous_database"] = previous
        else:
            psql(config, f"DROP DATABASE IF EXISTS {ident(previous)}", dbname="postgres")
    result["seconds"] = round(time.monotonic() - t0, 3)
    return result


def _pitr_base(config: dict, target: dt.datetime | None, point_id: str | None) -> Point:
    if point_id:
        return find_point(config, point_id)
    candidates = [
        p
        for p in list_points(config)
        if p.complete and p.scope in ("daily", "full") and (target is None or p.created <= target)
    ]
    for point in reversed(candidates):
        if not verify_point(point):
            return point
    when = f" made before {target:%Y-%m-%d %H:%M:%S} UTC" if target else ""
    raise BackupError(
        f"no verified base backup (a daily or full point){when} in {points_dir(config)}"
    )


def restore_point_in_time(
    config: dict, target_time: str | None = None, point_id: str | None = None
) -> dict:
    """Recover the cluster from a base backup and the WAL archive, to
    ``target_time`` or as far as the archive goes.

    The cluster's directory is moved aside, not deleted: when recovery fails,
    the old one is put back and started.
    """
    target = None
    if target_time:
        target = dt.datetime.fromisoformat(target_time.replace("Z", "+00:00"))
        if target.tzinfo is None:
            target = target.replace(tzinfo=dt.timezone.utc)
    result = {"method": "point-in-time", "target_time": target.isoformat() if target else "latest"}
    t0 = time.monotonic()
    with lock(config):
        point = _pitr_base(config, target, point_id)
        result["base"] = point.id
        data = config["postgres_data_dir"]
        aside = f"{data}.before-restore-{utcnow():%Y%m%d%H%M%S}"
        owner = os.stat(data)
        pg = container(config, "postgres", running=False)
        with app_stopped(config) as stopped:
            result["stopped"] = len(stopped)
            run(["docker", "stop", "--time", "60", pg])
            os.rename(data, aside)
            try:
                os.mkdir(data, 0o700)
                os.chown(data, owner.st_uid, owner.st_gid)
                pipeline(
                    [
                        core.zstd_decompress_argv(),
                        ["tar", "--extract", "--file=-", f"--directory={data}"],
                    ],
                    stdin_path=os.path.join(point.path, core.ARTIFACT_FILES["postgres-base"]),
                )
                run(["chown", "-R", f"{owner.st_uid}:{owner.st_gid}", data])
                settings = [
                    "restore_command = 'gzip -dc /var/lib/postgresql/wal-archive/%f.gz > %p'",
                    "recovery_target_timeline = 'latest'",
                    "recovery_target_action = 'promote'",
                ]
                if target:
                    settings.append(f"recovery_target_time = '{target:%Y-%m-%d %H:%M:%S.%f}+00'")
                with open(
                    os.path.join(data, "postgresql.auto.conf"), "a", encoding="utf-8"
                ) as conf:
                    conf.write(
                        "# point-in-time recovery (ytempire database_restore)\n"
                        + "\n".join(settings)
                        + "\n"
                    )
                signal = os.path.join(data, "recovery.signal")
                open(signal, "w").close()  # noqa: SIM115
                os.chown(signal, owner.st_uid, owner.st_gid)
                run(["docker", "start", pg])
                wait_recovered(config, pg)
                psql(config, "ALTER SYSTEM RESET restore_command")
                psql(config, "ALTER SYSTEM RESET recovery_target_timeline")
                psql(config, "ALTER SYSTEM RESET recovery_target_action")
                psql(config, "ALTER SYSTEM RESET recovery_target_time")
                psql(config, "SELECT pg_reload_conf()")
            except BaseException as exc:
                run(["docker", "stop", "--time", "30", pg], check=False)
                failed = f"{data}.failed-restore-{utcnow():%Y%m%d%H%M%S}"
                if os.path.exists(data):
                    os.rename(data, failed)
                os.rename(aside, data)
                run(["docker", "start", pg], check=False)
                raise BackupError(
                    "point-in-time recovery failed, the cluster is back as it was "
                    f"({failed} kept): {exc}"
                ) from exc
        result["previous_data_dir"] = aside
        result["recovered_to"] = psql(
            config,
            "SELECT to_char(pg_last_xact_replay_timestamp() AT TIME ZONE 'UTC', "
            "'YYYY-MM-DD HH24:MI:SS')",
        )
    result["seconds"] = round(time.monotonic() - t0, 3)
    return result


def wait_recovered(config: dict, pg: str, timeout: float = 3600) -> None:
    """Until recovery ended and the server accepts writes; the server's log when it gave up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = inspect(pg)["State"]
        if not state.get("Running") or state.get("Restarting"):
            logs = run(["docker", "logs", "--tail", "20", pg], check=False)
            raise BackupError(
                f"PostgreSQL stopped during recovery: {tail(logs.stdout + logs.stderr)}"
            )
        try:
            if psql(config, "SELECT pg_is_in_recovery()") == "f":
                return
        except BackupError:
            pass
        time.sleep(1)
    raise BackupError(f"recovery did not finish within {timeout:.0f} s")


def restore_redis(config: dict, point: Point, data_dir: str) -> dict:
    """Redis from the point's RDB: stopped, its append-only files moved aside,
    the RDB in, started."""
    redis = container(config, "redis", running=False)
    owner = os.stat(data_dir)
    rdb = stage(config, point, "redis", "rdb")
    run(["docker", "stop", "--time", "30", redis])
    aside = f"{data_dir}.before-restore-{utcnow():%Y%m%d%H%M%S}"
    os.mkdir(aside, 0o700)
    for name in os.listdir(data_dir):
        os.rename(os.path.join(data_dir, name), os.path.join(aside, name))
    shutil.move(rdb, os.path.join(data_dir, "dump.rdb"))
    os.chown(os.path.join(data_dir, "dump.rdb"), owner.st_uid, owner.st_gid)
    run(["docker", "start", redis])
    wait_healthy([redis])
    return {"keys": int(redis_cli(config, "DBSIZE") or 0), "previous_data_dir": aside}


def restore_files(config: dict, point: Point, part: str, destination: str = "/") -> dict:
    """Extract the files or the media of a point under ``destination`` (/ puts
    them back in place)."""
    os.makedirs(destination, mode=0o700, exist_ok=True)
    pipeline(
        [
            core.zstd_decompress_argv(),
            [
                "tar",
                "--extract",
                "--file=-",
                f"--directory={destination}",
                "--acls",
                "--xattrs",
            ],
        ],
        stdin_path=os.path.join(point.path, core.ARTIFACT_FILES[part]),
    )
    return {"part": part, "destination": destination}


# --- the restore drill ----------------------------------------------------------

_DRILL_COMPOSE = """name: {project}
services:
  postgres:
    image: {postgres_image}
    environment:
      POSTGRES_USER: {user}
      POSTGRES_PASSWORD: ${{PGPASSWORD:?}}
      POSTGRES_DB: postgres
      POSTGRES_INITDB_ARGS: --auth-host=scram-sha-256
    healthcheck:
      test: ["CMD-SHELL", "pg_isready -U {user} -d postgres"]
      interval: 2s
      retries: 60
  redis:
    image: {redis_image}
    command: [redis-server, --appendonly, "no", --save, ""]
    volumes:
      - {redis_dir}:/data
    healthcheck:
      test: ["CMD", "redis-cli", "ping"]
      interval: 2s
      retries: 60
"""


def drill(config: dict, point_id: str | None = None, objectives: dict | None = None) -> dict:
    """Restore the newest verified point into a scratch Compose project and check it.

    Checks every table's row count against the dump's and the point's sentinel
    row, loads the RDB; measures the recovery time (from the start until the
    data is checked) and the recovery point (how old the restored data is) and
    compares both with the database-failure objectives.
    """
    started_at = utcnow()
    t0 = time.monotonic()
    state = load_state(config)
    project = f"{config['project']}-drill"
    workdir = tempfile.mkdtemp(prefix="drill-", dir=config["backup_dir"])
    compose = [
        "docker",
        "compose",
        "--project-name",
        project,
        "--file",
        os.path.join(workdir, "compose.yml"),
    ]
    result = {"project": project}
    held = contextlib.ExitStack()
    try:
        held.enter_context(lock(config))
        point = find_point(config, point_id)
        result["point"] = point.id
        redis_dir = os.path.join(workdir, "redis")
        os.mkdir(redis_dir)
        pipeline(
            [core.zstd_decompress_argv()],
            os.path.join(redis_dir, "dump.rdb"),
            stdin_path=os.path.join(point.path, core.ARTIFACT_FILES["redis"]),
        )
        uid = int(
            run(
                ["docker", "exec", container(config, "redis"), "id", "-u", "redis"], check=False
            ).stdout
            or 999
        )
        for path in (redis_dir, os.path.join(redis_dir, "dump.rdb")):
            os.chown(path, uid, uid)
        with open(os.path.join(workdir, "compose.yml"), "w", encoding="utf-8") as handle:
            handle.write(
                _DRILL_COMPOSE.format(
                    project=project,
                    user=config["db"]["user"],
                    redis_dir=redis_dir,
                    postgres_image=inspect(container(config, "postgres"))["Config"]["Image"],
                    redis_image=inspect(container(config, "redis"))["Config"]["Image"],
                )
            )
        run([*compose, "up", "--detach", "--wait", "--wait-timeout", "300"], env=pg_env(config))
        drill_pg = (
            run([*compose, "ps", "--quiet", "postgres"], env=pg_env(config)).stdout.decode().strip()
        )
        dump = stage(config, point, "postgres", "dump")
        try:
            db = config["db"]["name"]
            psql(config, f"CREATE DATABASE {ident(db)} TEMPLATE template0", "postgres", drill_pg)
            pg_restore_file(
                config,
                dump,
                db,
                f"{project}_default",
                "postgres",
                inspect(drill_pg)["Config"]["Image"],
            )
        finally:
            os.unlink(dump)
        artifact = next(a for a in point.manifest["artifacts"] if a["part"] == "postgres")
        found = count_rows(config, db, exec_in=drill_pg)
        problems = check_rows(artifact.get("rows", {}), found)
        sentinel = point.manifest.get("sentinel", {})
        sentinel_sql = f"SELECT count(*) FROM {SENTINEL_TABLE} WHERE point_id = {literal(point.id)}"  # noqa: S608
        seen = psql(config, sentinel_sql, db, drill_pg, check=False)
        if seen != "1":
            problems.append(f"the sentinel row of {point.id} is not in the restored database")
        drill_redis = (
            run([*compose, "ps", "--quiet", "redis"], env=pg_env(config)).stdout.decode().strip()
        )
        keys = run(["docker", "exec", drill_redis, "redis-cli", "DBSIZE"]).stdout.decode().strip()
        if problems:
            raise BackupError("; ".join(problems))
        rto = time.monotonic() - t0
        written = dt.datetime.fromisoformat(sentinel["written_at"].replace("Z", "+00:00"))
        rpo = (started_at - written).total_seconds()
        result.update(
            rows=sum(found.values()),
            tables=len(found),
            redis_keys=int(keys or 0),
            rto_seconds=round(rto, 3),
            rpo_seconds=round(rpo, 3),
            size=point.manifest["size"],
        )
        if objectives:
            result["objectives"] = {
                "rto_seconds": core.parse_duration(objectives["rto"]),
                "rpo_seconds": core.parse_duration(objectives["rpo"]),
            }
            result["within_objectives"] = (
                rto <= result["objectives"]["rto_seconds"]
                and rpo <= result["objectives"]["rpo_seconds"]
            )
        state["drill"] = {
            **state.get("drill", {}),
            "last_success": int(time.time()),
            "rto": round(rto, 3),
            "rpo": round(rpo, 3),
            "success": 1 if result.get("within_objectives", True) else 0,
        }
        save_state(config, state)
        return result
    except BaseException as exc:
        state["drill"] = {**state.get("drill", {}), "last_failure": int(time.time()), "success": 0}
        save_state(config, state)
        warning = notify(
            config, f":x: YTEMPIRE restore drill on {config['hostname']} failed: {exc}"
        )
        error = exc if isinstance(exc, BackupError) else BackupError(f"{type(exc).__name__}: {exc}")
        error.result = {**result, "warnings": [warning] if warning else []}  # type: ignore[attr-defined]
        if error is exc:
            raise
        raise error from exc
    finally:
        run([*compose, "down", "--volumes", "--timeout", "10"], env=pg_env(config), check=False)
        shutil.rmtree(workdir, ignore_errors=True)
        held.close()


def fetch_point(config: dict, point_id: str, scope: str | None = None) -> dict:
    """Download a point from S3 into the local points (``latest``: the newest
    complete one, of ``scope`` when given)."""
    remote = offsite(config)
    if remote is None:
        raise BackupError("no offsite storage is configured")
    if point_id == "latest":
        complete = sorted(
            p["id"] for p in remote.list_points() if p["complete"] and scope in (None, p["scope"])
        )
        if not complete:
            raise BackupError(
                f"S3 holds no complete restore point{' of scope ' + scope if scope else ''}"
            )
        point_id = complete[-1]
    local = {p.id: p for p in list_points(config)}
    if point_id in local and local[point_id].complete and not verify_point(local[point_id]):
        return {"id": point_id, "downloaded": False}
    with lock(config):
        os.makedirs(points_dir(config), mode=0o700, exist_ok=True)
        if point_id in local:
            shutil.rmtree(local[point_id].path)
        started = time.monotonic()
        try:
            remote.download_point(point_id, points_dir(config))
        except Exception as exc:  # boto3's and ours
            shutil.rmtree(os.path.join(points_dir(config), point_id), ignore_errors=True)
            raise BackupError(f"downloading {point_id}: {exc}") from exc
    return {"id": point_id, "downloaded": True, "seconds": round(time.monotonic() - started, 3)}
