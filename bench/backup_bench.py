#!/usr/bin/env python3
"""Backup benchmark: the guide's pg_dump | gzip against the project's database backup.

    python3 bench/backup_bench.py [--size-gb 1.0] [--jobs N] [--rounds N] [--json PATH] [--keep]

Starts a throwaway PostgreSQL 15 cluster (Debian's binaries in
/usr/lib/postgresql/15/bin, run as the ``postgres`` system user when started as
root) in a temporary directory, fills a database shaped like the platform's
(channels, videos, jobs, daily metrics: text, jsonb, timestamps, numeric costs,
indexes and foreign keys) to at least ``--size-gb`` GB (pg_database_size), and
then, in one run, on that same database:

  * the guide's backup:   pg_dump -U ytempire ytempire | gzip > database.sql.gz
  * the project's backup: pg_dump_argv() | zstd_compress_argv() > postgres.dump.zst
  * the guide's restore:  gunzip -c database.sql.gz | psql -U ytempire ytempire
  * the project's restore: zstd_decompress_argv() < postgres.dump.zst > postgres.dump,
                           then pg_restore_argv(..., jobs=N)

The project's commands are those of plugins/module_utils/ytempire_backup.py,
imported, not copied. Each restore goes into a fresh empty database and must
give back the source's row counts, indexes and constraints, or the benchmark
stops: a broken restore must not look fast. Prints wall time, client CPU time
and size of each, the ratios guide / project and whether the goal (a backup at
least 3x faster than the guide's, no larger) is met. ``--rounds N`` repeats
the two backups, then the two restores, N times, alternating which goes first,
and takes the medians.
``--also-levels`` times more project backups at other zstd levels (backup only),
``--also-jobs`` more project restores with other pg_restore --jobs.
The cluster and every file are removed at the end, also on Ctrl-C or failure,
unless ``--keep``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins" / "module_utils"))

import ytempire_backup as yb  # noqa: E402

PG_BIN = Path("/usr/lib/postgresql/15/bin")
OWNER = "ytempire"
SOURCE_DB = "ytempire"
GOAL_SPEEDUP = 3.0
MIB = 1 << 20

# Content words for the generated titles, descriptions, scripts and tags: text
# that compresses like prose, drawn at random so that no two rows are alike.
VOCAB_TEXT = """
money passive income investing stocks crypto budget saving retirement side hustle
business startup marketing growth audience channel subscribers algorithm views
watch time thumbnail title hook story script voice narration editing render upload
history science space planets galaxy black hole physics chemistry biology ocean
animals wildlife nature forest mountain travel city culture food recipe kitchen
fitness workout health sleep habits productivity focus learning study memory
technology artificial intelligence robots future gadgets smartphone laptop gaming
review tutorial guide beginner advanced tips tricks secrets mistakes facts myths
ancient empire war kingdom legend mystery unsolved documentary explained simple
quick easy best top ten ultimate complete why how what when where the a of and to
in is that for it with as on this you are be at by from they we can your more
every great first new most people world life time year day way thing part make
"""
VOCAB = VOCAB_TEXT.split()

STATUSES = ["published"] * 8 + ["rendered", "scripted", "failed", "queued"]
JOB_KINDS = ["script", "voice", "images", "render", "upload"]


class BenchError(RuntimeError):
    """Something the benchmark needs is missing, or a step failed."""


def sql_text_array(values: list[str]) -> str:
    return "ARRAY[" + ",".join("'" + v.replace("'", "''") + "'" for v in values) + "]::text[]"


SCHEMA = f"""
CREATE FUNCTION bench_words(n int) RETURNS text LANGUAGE sql VOLATILE AS $$
  SELECT string_agg(({sql_text_array(VOCAB)})[1 + floor(random() * {len(VOCAB)})::int], ' ')
  FROM generate_series(1, n)
$$;

CREATE TABLE channels (
  id bigint PRIMARY KEY,
  name text NOT NULL,
  niche text NOT NULL,
  settings jsonb NOT NULL,
  created_at timestamptz NOT NULL
);
CREATE TABLE videos (
  id bigint PRIMARY KEY,
  channel_id bigint NOT NULL REFERENCES channels (id),
  youtube_id text,
  title text NOT NULL,
  description text NOT NULL,
  script text NOT NULL,
  tags jsonb NOT NULL,
  metadata jsonb NOT NULL,
  thumbnail_sha256 bytea NOT NULL,
  status text NOT NULL,
  cost numeric(10, 4) NOT NULL,
  created_at timestamptz NOT NULL,
  published_at timestamptz
);
CREATE TABLE jobs (
  id bigint PRIMARY KEY,
  video_id bigint NOT NULL REFERENCES videos (id),
  kind text NOT NULL,
  state text NOT NULL,
  attempts int NOT NULL,
  payload jsonb NOT NULL,
  log text NOT NULL,
  error text,
  cost numeric(10, 4) NOT NULL,
  queued_at timestamptz NOT NULL,
  started_at timestamptz,
  finished_at timestamptz
);
CREATE TABLE video_metrics (
  video_id bigint NOT NULL REFERENCES videos (id),
  day date NOT NULL,
  views bigint NOT NULL,
  watch_seconds bigint NOT NULL,
  likes int NOT NULL,
  revenue numeric(12, 4) NOT NULL,
  PRIMARY KEY (video_id, day)
);

SELECT setseed(0.42);
INSERT INTO channels
SELECT c,
       'Channel ' || c || ' ' || bench_words(2),
       ({sql_text_array(["finance", "history", "science", "tech", "health", "travel"])})[1 + c % 6],
       jsonb_build_object('voice', 'en-US-' || (ARRAY['aria','guy','jenny','davis'])[1 + c % 4],
                          'upload_hour', c % 24, 'daily_videos', 1 + c % 3,
                          'api_key_ref', md5(c::text)),
       timestamptz '2025-01-01' + c * interval '1 day'
FROM generate_series(1, 250) c;
"""  # noqa: S608 (constants of this file, no input)

# One chunk of videos [lo, hi), four jobs and 14 days of metrics for each; each
# chunk is seeded by its first id, so that every run generates the same data.
CHUNK = f"""
SELECT setseed(:lo / 1e9);
INSERT INTO videos
SELECT v,
       1 + v % 250,
       CASE WHEN v % 12 < 8 THEN substr(md5(random()::text), 1, 5) || lpad(to_hex(v), 6, '0') END,
       initcap(bench_words(6 + v % 6)),
       bench_words(40 + v % 40) || E'\\n\\nChapters:\\n00:00 Intro\\n01:'
         || lpad((v % 60)::text, 2, '0') || E' Main part\\n\\nLinks: https://ytempire.example/v/'
         || md5(v::text),
       bench_words(110 + v % 60),
       jsonb_build_array(bench_words(1), bench_words(1), bench_words(2), bench_words(1),
                         bench_words(2)),
       jsonb_build_object('duration_s', 60 + floor(random() * 900)::int,
                          'resolution', '1920x1080', 'fps', 30, 'model', 'gpt-4o-mini',
                          'prompt_tokens', floor(random() * 4000)::int,
                          'completion_tokens', floor(random() * 2000)::int, 'score', random(),
                          'thumbnail', 'https://cdn.ytempire.example/thumbs/'
                                       || md5(random()::text) || '.jpg'),
       sha256(v::text::bytea || random()::text::bytea),
       ({sql_text_array(STATUSES)})[1 + v % {len(STATUSES)}],
       round((random() * 3)::numeric, 4),
       timestamptz '2025-06-01' + v * interval '97 seconds' + random() * interval '1 hour',
       CASE WHEN v % 12 < 8 THEN timestamptz '2025-06-02' + v * interval '97 seconds' END
FROM generate_series(:lo, :hi - 1) v;

INSERT INTO jobs
SELECT v * 5 + k,
       v,
       ({sql_text_array(JOB_KINDS)})[1 + k],
       CASE WHEN random() < 0.97 THEN 'done' ELSE 'failed' END,
       1 + floor(random() * random() * 3)::int,
       jsonb_build_object('video_id', v, 'worker', 'worker-' || (v + k) % 8, 'queue', 'default',
                          'params', jsonb_build_object('seed', floor(random() * 1e9)::bigint,
                                                       'voice', 'en-US-aria', 'width', 1920,
                                                       'height', 1080),
                          'result', jsonb_build_object('path', '/media/' || v || '/'
                                                                 || md5(random()::text),
                                                       'bytes', floor(random() * 2e8)::bigint)),
       format(E'%s INFO job %s started on worker-%s\\n%s INFO step load took %ss\\n'
              || E'%s INFO step work took %ss (%s items)\\n%s INFO step save took %ss\\n'
              || E'%s INFO job %s finished, cost %s USD\\n',
              now(), v * 5 + k, (v + k) % 8, now(), round(random()::numeric, 3), now(),
              round((random() * 90)::numeric, 3), floor(random() * 500), now(),
              round(random()::numeric, 3), now(), v * 5 + k, round((random() * 0.5)::numeric, 4)),
       CASE WHEN random() < 0.02 THEN E'Traceback (most recent call last):\\n'
         || E'  File "worker.py", line 88\\n'
         || 'TimeoutError: upstream did not answer in 30 s' END,
       round((random() * 0.5)::numeric, 4),
       timestamptz '2025-06-01' + v * interval '97 seconds' + k * interval '3 minutes',
       timestamptz '2025-06-01' + v * interval '97 seconds' + k * interval '3 minutes'
         + interval '5 s',
       timestamptz '2025-06-01' + v * interval '97 seconds' + k * interval '3 minutes'
         + random() * interval '3 minutes'
FROM generate_series(:lo, :hi - 1) v, generate_series(0, 4) k;

INSERT INTO video_metrics
SELECT v, date '2025-06-01' + (v / 900)::int + d,
       floor(random() * random() * 100000)::bigint,
       floor(random() * random() * 3000000)::bigint,
       floor(random() * random() * 5000)::int,
       round((random() * random() * 40)::numeric, 4)
FROM generate_series(:lo, :hi - 1) v, generate_series(0, 13) d;
"""  # noqa: S608 (constants of this file, no input)

INDEXES = """
CREATE UNIQUE INDEX videos_youtube_id ON videos (youtube_id);
CREATE INDEX videos_channel_created ON videos (channel_id, created_at);
CREATE INDEX videos_status ON videos (status);
CREATE INDEX jobs_video_id ON jobs (video_id);
CREATE INDEX jobs_state_queued ON jobs (state, queued_at);
CREATE INDEX video_metrics_day ON video_metrics (day);
"""

TABLES = ("channels", "videos", "jobs", "video_metrics")
VIDEOS_PER_CHUNK = 20000


@dataclass
class Step:
    """One timed command line (a pipeline or a sequence of them)."""

    name: str
    commands: str
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    # The figures of each round; those above are their medians.
    rounds: list[float] = field(default_factory=list)
    cpu_rounds: list[float] = field(default_factory=list)
    part_rounds: dict[str, list[float]] = field(default_factory=dict)
    size: int = 0
    parts: dict[str, float] = field(default_factory=dict)


class Cluster:
    """A throwaway PostgreSQL cluster in ``root``, on a unix socket there and 127.0.0.1:port."""

    def __init__(self, root: Path):
        self.root = root
        self.data = root / "data"
        self.sock = root / "sock"
        self.log = root / "postgres.log"
        self.port = free_port()
        self.user = None
        if os.geteuid() == 0:
            try:
                self.user = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise BenchError(
                    "running as root, but there is no 'postgres' system user to run the cluster as "
                    "(apt-get install postgresql-15 creates it)"
                ) from exc
        self.env = {
            "PATH": f"{PG_BIN}:/usr/bin:/bin",
            "HOME": str(root),
            "LANG": "C.UTF-8",
            "PGHOST": str(self.sock),
            "PGPORT": str(self.port),
        }
        self.started = False

    def popen_kwargs(self) -> dict:
        kwargs: dict = {"env": self.env, "cwd": self.root}
        if self.user is not None:
            kwargs |= {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        return kwargs

    def run(self, argv: list[str], stdin_text: str | None = None) -> str:
        proc = subprocess.run(
            argv, input=stdin_text, capture_output=True, text=True, **self.popen_kwargs()
        )
        if proc.returncode != 0:
            raise BenchError(f"{' '.join(argv[:3])} ... failed ({proc.returncode}):\n{proc.stderr}")
        return proc.stdout

    def init_and_start(self) -> None:
        self.sock.mkdir()
        if self.user is not None:
            for path in (self.root, self.sock):
                os.chown(path, self.user.pw_uid, self.user.pw_gid)
        self.run(
            [
                str(PG_BIN / "initdb"),
                "--pgdata",
                str(self.data),
                "--username=postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ]
        )
        options = " ".join(
            [
                "-c listen_addresses=127.0.0.1",
                f"-c port={self.port}",
                f"-c unix_socket_directories={self.sock}",
                "-c shared_buffers=512MB",
                "-c maintenance_work_mem=256MB",
                "-c max_wal_size=8GB",
                "-c checkpoint_timeout=30min",
                "-c max_connections=30",
            ]
        )
        self.run(
            [
                str(PG_BIN / "pg_ctl"),
                "--pgdata",
                str(self.data),
                "--log",
                str(self.log),
                "--wait",
                "--options",
                options,
                "start",
            ]
        )
        self.started = True

    def stop(self) -> None:
        if self.started:
            with contextlib.suppress(BenchError, OSError):
                self.run([str(PG_BIN / "pg_ctl"), "--pgdata", str(self.data), "-m", "fast", "stop"])
            self.started = False

    def psql(self, db: str, sql: str, user: str = "postgres") -> str:
        return self.run(
            ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-U", user, "-d", db, "-f", "-"],
            stdin_text=sql,
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_tools() -> None:
    missing = [
        str(PG_BIN / t)
        for t in ("initdb", "pg_ctl", "postgres", "pg_dump", "pg_restore", "psql")
        if not (PG_BIN / t).exists()
    ]
    missing += [t for t in ("gzip", "zstd") if shutil.which(t) is None]
    if missing:
        raise BenchError(
            "missing: "
            + ", ".join(missing)
            + "\n  install them with: apt-get install postgresql-15 gzip zstd"
        )


def pipeline(
    cluster: Cluster, argvs: list[list[str]], stdin: Path | None, stdout: Path | None, log: Path
) -> tuple[float, float]:
    """Run argvs piped into each other; returns wall and client CPU seconds."""
    usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    procs: list[subprocess.Popen] = []
    with contextlib.ExitStack() as stack:
        errors = stack.enter_context(open(log, "ab"))
        first_in = stack.enter_context(open(stdin, "rb")) if stdin else subprocess.DEVNULL
        last_out = stack.enter_context(open(stdout, "wb")) if stdout else subprocess.DEVNULL
        try:
            for i, argv in enumerate(argvs):
                procs.append(
                    subprocess.Popen(
                        argv,
                        stdin=procs[-1].stdout if procs else first_in,
                        stdout=last_out if i == len(argvs) - 1 else subprocess.PIPE,
                        stderr=errors,
                        **cluster.popen_kwargs(),
                    )
                )
                if i:
                    procs[-2].stdout.close()  # the next one holds it; so a failure propagates
            codes = [p.wait() for p in procs]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    seconds = time.perf_counter() - start
    usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if any(codes):
        text = " | ".join(a[0] for a in argvs)
        raise BenchError(f"{text} exited {codes}:\n{log.read_text(errors='replace')[-2000:]}")
    cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    return seconds, cpu


def shape(cluster: Cluster, db: str) -> dict[str, int]:
    """Row counts, indexes and constraints of ``db``: what a restore must give back."""
    counts = "\n".join(f"SELECT 'rows {t}', count(*) FROM {t};" for t in TABLES)  # noqa: S608
    out = cluster.psql(
        db,
        counts + "\nSELECT 'indexes', count(*) FROM pg_indexes WHERE schemaname = 'public';"
        "\nSELECT 'constraints', count(*) FROM pg_constraint c JOIN pg_namespace n"
        " ON n.oid = c.connamespace WHERE n.nspname = 'public' AND c.convalidated;",
    )
    return {k: int(v) for k, v in (line.split("|") for line in out.splitlines())}


def database_size(cluster: Cluster, db: str) -> int:
    return int(cluster.psql(db, f"SELECT pg_database_size('{db}');"))


def generate(cluster: Cluster, size_gb: float) -> None:
    target = int(size_gb * 1e9)
    cluster.psql(
        "postgres",
        f"CREATE ROLE {OWNER} LOGIN SUPERUSER; CREATE DATABASE {SOURCE_DB} OWNER {OWNER};",
    )
    cluster.psql(SOURCE_DB, SCHEMA, user=OWNER)
    lo, indexed = 1, False
    start = time.perf_counter()
    while True:
        hi = lo + VIDEOS_PER_CHUNK
        cluster.psql(SOURCE_DB, CHUNK.replace(":lo", str(lo)).replace(":hi", str(hi)), user=OWNER)
        lo = hi
        size = database_size(cluster, SOURCE_DB)
        print(
            f"  generated {lo - 1:>8} videos: {size / MIB:8.0f} MiB"
            f"{' (indexed)' if indexed else ''}  {time.perf_counter() - start:6.0f} s",
            flush=True,
        )
        # Indexes are built once the heap is most of the way: building them is
        # faster than keeping them up to date, and they count towards the size.
        if not indexed and size >= 0.8 * target:
            cluster.psql(SOURCE_DB, INDEXES, user=OWNER)
            indexed = True
            size = database_size(cluster, SOURCE_DB)
            print(f"  indexed: {size / MIB:.0f} MiB", flush=True)
        if indexed and size >= target:
            break
    cluster.psql(SOURCE_DB, "VACUUM (FREEZE, ANALYZE);", user=OWNER)


def fresh_db(cluster: Cluster, name: str) -> None:
    cluster.psql("postgres", f"CREATE DATABASE {name} OWNER {OWNER} TEMPLATE template0;")


def settle(cluster: Cluster) -> None:
    """Between steps: write out what the last one left dirty, so the next does not pay for it."""
    cluster.psql("postgres", "CHECKPOINT;")
    os.sync()


def record(steps: dict[str, Step], key: str, step: Step) -> None:
    """Add one round of a step to ``steps``: its figures become the medians of the rounds."""
    if key in steps:
        step.rounds, step.cpu_rounds = steps[key].rounds, steps[key].cpu_rounds
        step.part_rounds = steps[key].part_rounds
    step.rounds.append(step.seconds)
    step.cpu_rounds.append(step.cpu_seconds)
    for part, seconds in step.parts.items():
        step.part_rounds.setdefault(part, []).append(seconds)
    step.seconds = statistics.median(step.rounds)
    step.cpu_seconds = statistics.median(step.cpu_rounds)
    step.parts = {part: statistics.median(values) for part, values in step.part_rounds.items()}
    steps[key] = step


def fmt_cmd(argvs: list[list[str]], src: str | None = None, dst: str | None = None) -> str:
    text = " | ".join(" ".join(a) for a in argvs)
    return text + (f" < {src}" if src else "") + (f" > {dst}" if dst else "")


def bench(args: argparse.Namespace, work: Path) -> dict:
    cluster = Cluster(work)
    try:
        cluster.init_and_start()
        version = cluster.psql("postgres", "SHOW server_version;").strip()
        print(
            f"backup benchmark: PostgreSQL {version} in {work}, {os.cpu_count()} CPUs, "
            f"target {args.size_gb:g} GB",
            flush=True,
        )
        t0 = time.perf_counter()
        generate(cluster, args.size_gb)
        gen_s = time.perf_counter() - t0
        source_size = database_size(cluster, SOURCE_DB)
        source_shape = shape(cluster, SOURCE_DB)
        # Read every table once so that neither backup finds a colder cache than the other.
        cluster.psql(SOURCE_DB, "\n".join(f"SELECT count(*) FROM {t};" for t in TABLES))  # noqa: S608
        print(
            f"  database: {source_size / MIB:.0f} MiB, {gen_s:.0f} s to generate; {source_shape}",
            flush=True,
        )

        host, port = "127.0.0.1", cluster.port
        guide_file, project_file = work / "database.sql.gz", work / "postgres.dump.zst"
        dump_file = work / "postgres.dump"
        log = work / "commands.log"
        guide_dump = [["pg_dump", "-U", OWNER, SOURCE_DB], ["gzip"]]
        project_dump = [
            yb.pg_dump_argv(OWNER, SOURCE_DB, host=host, port=port),
            yb.zstd_compress_argv(level=args.zstd_level, threads=args.zstd_threads),
        ]
        steps: dict[str, Step] = {}

        def backup(name: str, argvs: list[list[str]], out: Path) -> Step:
            settle(cluster)
            step = Step(name, fmt_cmd(argvs, dst=out.name))
            print(f"  {name}: {step.commands}", flush=True)
            step.seconds, step.cpu_seconds = pipeline(cluster, argvs, None, out, log)
            step.size = out.stat().st_size
            print(f"    {step.seconds:.1f} s, {step.size / MIB:.1f} MiB", flush=True)
            return step

        # With --rounds the two backups (then the two restores) alternate which goes first
        # and the median of each counts, so that a burst of other load skews less.
        backups = {
            "guide_backup": ("guide backup", guide_dump, guide_file),
            "project_backup": ("project backup", project_dump, project_file),
        }
        for r in range(args.rounds):
            for key in list(backups)[:: 1 if r % 2 == 0 else -1]:
                record(steps, key, backup(*backups[key]))

        def check(name: str, db: str) -> None:
            got = shape(cluster, db)
            if got != source_shape:
                raise BenchError(f"{name} restored {got}, the source has {source_shape}")

        def guide_restore() -> Step:
            fresh_db(cluster, "restore_guide")
            settle(cluster)
            argvs = [["gunzip", "-c", guide_file.name], ["psql", "-U", OWNER, "restore_guide"]]
            step = Step("guide restore", fmt_cmd(argvs))
            print(f"  guide restore: {step.commands}", flush=True)
            step.seconds, step.cpu_seconds = pipeline(cluster, argvs, None, None, log)
            check("the guide's restore", "restore_guide")
            cluster.psql("postgres", "DROP DATABASE restore_guide;")
            print(f"    {step.seconds:.1f} s", flush=True)
            return step

        # The project's restore: decompress to a file pg_restore can seek in, restore in parallel.
        def project_restore(jobs: int, name: str = "project restore") -> Step:
            fresh_db(cluster, "restore_project")
            settle(cluster)
            decompress = [yb.zstd_decompress_argv()]
            restore = [
                yb.pg_restore_argv(
                    OWNER, "restore_project", dump_file.name, jobs=jobs, host=host, port=port
                )
            ]
            step = Step(
                name,
                fmt_cmd(decompress, project_file.name, dump_file.name) + "; " + fmt_cmd(restore),
            )
            print(f"  {name}: {step.commands}", flush=True)
            d_s, d_cpu = pipeline(cluster, decompress, project_file, dump_file, log)
            r_s, r_cpu = pipeline(cluster, restore, None, None, log)
            step.seconds, step.cpu_seconds = d_s + r_s, d_cpu + r_cpu
            step.parts = {"decompress_s": d_s, "pg_restore_s": r_s}
            check(f"the {name}", "restore_project")
            cluster.psql("postgres", "DROP DATABASE restore_project;")
            print(f"    {step.seconds:.1f} s (decompress {d_s:.1f} s, pg_restore {r_s:.1f} s)")
            return step

        restores = {
            "guide_restore": guide_restore,
            "project_restore": lambda: project_restore(args.jobs),
        }
        for r in range(args.rounds):
            for key in list(restores)[:: 1 if r % 2 == 0 else -1]:
                record(steps, key, restores[key]())
        restore_variants = []
        for jobs in args.also_jobs:
            step = project_restore(jobs, f"project restore, --jobs={jobs}")
            restore_variants.append({"jobs": jobs, "seconds": step.seconds, **step.parts})
        dump_size = dump_file.stat().st_size
        dump_file.unlink()

        variants = []
        for level in args.also_levels:
            argvs = [project_dump[0], yb.zstd_compress_argv(level=level, threads=args.zstd_threads)]
            out = work / f"postgres-{level}.dump.zst"
            variant = backup(f"project backup, zstd -{level}", argvs, out)
            out.unlink()
            variants.append(
                {
                    "zstd_level": level,
                    "seconds": variant.seconds,
                    "cpu_seconds": variant.cpu_seconds,
                    "size": variant.size,
                }
            )
    finally:
        cluster.stop()

    g_b, p_b = steps["guide_backup"], steps["project_backup"]
    g_r, p_r = steps["guide_restore"], steps["project_restore"]
    speedup = g_b.seconds / p_b.seconds
    size_ratio = g_b.size / p_b.size
    return {
        "postgres_version": version,
        "cpus": os.cpu_count(),
        "database_bytes": source_size,
        "database_shape": source_shape,
        "generate_seconds": gen_s,
        "zstd_level": args.zstd_level,
        "zstd_threads": args.zstd_threads,
        "pg_restore_jobs": args.jobs,
        "rounds": args.rounds,
        "custom_dump_uncompressed_bytes": dump_size,
        "steps": {k: vars(v) for k, v in steps.items()},
        "backup_time_ratio": speedup,
        "backup_size_ratio": size_ratio,
        "restore_time_ratio": g_r.seconds / p_r.seconds,
        "goal": {
            "speedup_at_least": GOAL_SPEEDUP,
            "met": speedup >= GOAL_SPEEDUP and p_b.size <= g_b.size,
        },
        "zstd_levels": variants,
        "pg_restore_jobs_variants": restore_variants,
    }


def report(fig: dict) -> None:
    steps = fig["steps"]
    print()
    print(
        f"database {fig['database_bytes'] / MIB:.0f} MiB (pg_database_size), "
        f"PostgreSQL {fig['postgres_version']}, {fig['cpus']} CPUs; project: zstd "
        f"-{fig['zstd_level']} --threads={fig['zstd_threads']}, pg_restore --jobs="
        f"{fig['pg_restore_jobs']}"
    )
    print(f"  {'step':<16} {'wall s':>8} {'client CPU s':>13} {'size bytes':>14} {'MiB':>8}")
    for key in ("guide_backup", "project_backup", "guide_restore", "project_restore"):
        s = steps[key]
        size = f"{s['size']:>14} {s['size'] / MIB:>8.1f}" if key.endswith("backup") else ""
        line = f"  {s['name']:<16} {s['seconds']:>8.1f} {s['cpu_seconds']:>13.1f} {size}"
        print(line.rstrip())
        if len(s["rounds"]) > 1:
            print(f"    (median of rounds: {', '.join(f'{x:.1f}' for x in s['rounds'])} s)")
    if steps["project_restore"]["parts"]:
        parts = steps["project_restore"]["parts"]
        print(
            f"  (project restore: decompress {parts['decompress_s']:.1f} s, "
            f"pg_restore {parts['pg_restore_s']:.1f} s)"
        )
    print("ratios guide / project:")
    print(f"  backup time  {fig['backup_time_ratio']:6.2f}x  (goal >= {GOAL_SPEEDUP:g}x)")
    print(f"  backup size  {fig['backup_size_ratio']:6.2f}x  (goal >= 1: no larger)")
    print(f"  restore time {fig['restore_time_ratio']:6.2f}x")
    print(f"goal met: {'yes' if fig['goal']['met'] else 'no'}")
    if fig["zstd_levels"]:
        g = steps["guide_backup"]
        print("project backup at other zstd levels (backup only):")
        for v in fig["zstd_levels"]:
            print(
                f"  zstd -{v['zstd_level']:<3} {v['seconds']:8.1f} s {v['size'] / MIB:9.1f} MiB  "
                f"time {g['seconds'] / v['seconds']:5.2f}x  size {g['size'] / v['size']:5.2f}x"
            )

    if fig["pg_restore_jobs_variants"]:
        g = steps["guide_restore"]
        print("project restore with other pg_restore --jobs (decompress included):")
        for v in fig["pg_restore_jobs_variants"]:
            print(
                f"  --jobs={v['jobs']:<3} {v['seconds']:8.1f} s"
                f" (pg_restore {v['pg_restore_s']:.1f} s)"
                f"  time {g['seconds'] / v['seconds']:5.2f}x"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=1.0, help="database size (default 1.0)")
    parser.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="pg_restore --jobs for the project's restore (default: the CPUs)",
    )
    parser.add_argument("--zstd-level", type=int, default=3, help="the project's zstd level (3)")
    parser.add_argument("--zstd-threads", type=int, default=0, help="zstd --threads (0: all CPUs)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="rounds of the backups and of the restores, alternating; the medians count (1)",
    )
    parser.add_argument(
        "--also-levels",
        default="",
        help="comma-separated zstd levels to time as extra project backups",
    )
    parser.add_argument(
        "--also-jobs",
        default="",
        help="comma-separated pg_restore --jobs to time as extra project restores",
    )
    parser.add_argument("--json", type=Path, help="also write the figures as JSON to PATH")
    parser.add_argument(
        "--keep", action="store_true", help="keep the (stopped) cluster's directory and the dumps"
    )
    parser.add_argument("--workdir", type=Path, help="where to make the temporary directory")
    args = parser.parse_args()
    args.also_levels = [int(x) for x in args.also_levels.split(",") if x.strip()]
    args.also_jobs = [int(x) for x in args.also_jobs.split(",") if x.strip()]

    # Ctrl-C raises KeyboardInterrupt; make SIGTERM and SIGHUP do the same, so cleanup runs.
    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)

    try:
        check_tools()
    except BenchError as exc:
        print(f"backup_bench: {exc}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="backup-bench-", dir=args.workdir))
    try:
        figures = bench(args, work)
    except BenchError as exc:
        print(f"backup_bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("backup_bench: interrupted", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
