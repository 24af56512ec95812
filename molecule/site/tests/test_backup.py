"""Backups on the converged server, against the real stack and a real S3
server (moto, on the controller): restore points, their faults, restores of
the database (logical and to a point in time), retention and the drill.

Each fault test ends with what it must show and with every earlier point
still verifying. The module leaves the platform serving, with its data.
"""

from __future__ import annotations

import json
import shlex
import time

import pytest

from tests.support.webhook import webhook_receiver

testinfra_hosts = ["ansible://ytempire"]

POINTS = "/backup/points"
CONFIG = "/etc/ytempire/backup.json"
METRICS = "/var/lib/prometheus/node-exporter/ytempire_backup.prom"
TIMERS = [
    "ytempire-backup-daily",
    "ytempire-backup-database",
    "ytempire-backup-full",
    "ytempire-restore-drill",
]
ROWS = 20000


def container(host, service: str) -> str:
    return host.check_output(
        "docker ps -q --filter label=com.docker.compose.project=ytempire"
        f" --filter label=com.docker.compose.service={service}"
    )


def sql(host, statement: str, db: str = "ytempire") -> str:
    """One statement in the live database (psql on the container's socket)."""
    return host.check_output(
        f"docker exec -u postgres {container(host, 'postgres')} psql -X -At -v ON_ERROR_STOP=1 "
        f"-U ytempire -d {db} -c {shlex.quote(statement)}"
    )


def redis(host, *args: str) -> str:
    return host.check_output(f"docker exec {container(host, 'redis')} redis-cli {shlex.join(args)}")


def points(host) -> list[str]:
    return sorted(host.check_output(f"ls {POINTS}").split())


def manifest(host, pid: str) -> dict:
    return json.loads(host.file(f"{POINTS}/{pid}/manifest.json").content_string)


@pytest.fixture(scope="module")
def backup(run_playbook):
    """playbooks/backup.yml with settings over the server's for this run: (rc, output)."""

    def _backup(scope: str = "daily", **settings) -> tuple[int, str]:
        return run_playbook(
            "playbooks/backup.yml", {"backup_scope": scope, "backup_run_settings": settings}
        )

    return _backup


@pytest.fixture(scope="module")
def restore_point(run_module):
    """The restore_point module on the target, as the playbooks call it: its result."""

    def _restore_point(**args) -> dict:
        return run_module("restore_point", args)

    return _restore_point


def assert_all_verify(host) -> None:
    """Every point on disk verifies (the earlier, good ones survived the test)."""
    out = host.run("/usr/local/sbin/ytempire-backup verify")
    assert out.rc == 0, out.stdout + out.stderr


def offsite_settings(host, **changes) -> dict:
    offsite = json.loads(host.file(CONFIG).content_string)["offsite"]
    return {**offsite, **changes}


@pytest.fixture(scope="module", autouse=True)
def timers_paused(host):
    """The backup timers stopped during these tests (a scheduled run would race them)."""
    host.run(f"systemctl stop {' '.join(t + '.timer' for t in TIMERS)}")
    yield
    host.run(f"systemctl start {' '.join(t + '.timer' for t in TIMERS)}")


@pytest.fixture(scope="module")
def seeded(host):
    """A table of the application's database with ROWS rows, of text that
    compresses and text that does not."""
    create = (
        "CREATE TABLE IF NOT EXISTS backup_rows "
        "(id bigint PRIMARY KEY, note text, noise text, at timestamptz DEFAULT now())"
    )
    fill = (
        "INSERT INTO backup_rows SELECT g, repeat('video ', 20), "
        "md5(g::text) || md5((g * 7)::text), now() "
        "FROM generate_series(1, %d) g ON CONFLICT DO NOTHING"
    )
    sql(host, f"{create}; {fill % ROWS}")
    return ROWS


@pytest.fixture(scope="module")
def daily(host, s3, seeded, run_playbook) -> str:
    """A first daily point, made by the playbook, with its S3 copy checked."""
    before = set(points(host))
    rc, out = run_playbook(
        "playbooks/backup.yml", {"backup_scope": "daily", "backup_verify_remote": True}
    )
    assert rc == 0, out
    (pid,) = set(points(host)) - before
    return pid


def test_the_timers_are_scheduled(host):
    for timer in TIMERS:
        unit = host.file(f"/etc/systemd/system/{timer}.timer").content_string
        assert "Persistent=true" in unit
        assert host.service(f"{timer}.timer").is_enabled
    calendars = {t: host.file(f"/etc/systemd/system/{t}.timer").content_string for t in TIMERS}
    assert "OnCalendar=*-*-* 2:0:00" in calendars["ytempire-backup-daily"]
    assert "OnCalendar=*-*-* *:0:00" in calendars["ytempire-backup-database"]
    assert "OnCalendar=Sun *-*-* 3:0:00" in calendars["ytempire-backup-full"]
    assert (
        "ExecStart=/usr/local/sbin/ytempire-backup run database"
        in host.file("/etc/systemd/system/ytempire-backup-database.service").content_string
    )


def test_wal_is_archived_continuously(host):
    assert sql(host, "SHOW archive_mode") == "on"
    assert sql(host, "SHOW archive_timeout") == "30s"
    segment = sql(host, "SELECT pg_walfile_name(pg_current_wal_lsn())")
    sql(host, "SELECT pg_switch_wal()")
    deadline = time.monotonic() + 60
    while not host.file(f"/backup/wal/{segment}.gz").exists and time.monotonic() < deadline:
        time.sleep(1)
    assert host.file(f"/backup/wal/{segment}.gz").exists
    assert host.file("/backup/wal").uid == 999
    assert sql(host, "SELECT failed_count FROM pg_stat_archiver") == "0"


def test_a_daily_point_holds_every_part_with_checksums(host, daily, seeded, s3):
    m = manifest(host, daily)
    parts = {a["part"]: a for a in m["artifacts"]}
    assert set(parts) == {
        "postgres",
        "postgres-globals",
        "postgres-base",
        "redis",
        "files",
        "images",
    }
    for artifact in m["artifacts"]:
        line = host.check_output(f"sha256sum {POINTS}/{daily}/{artifact['file']}")
        assert line.split()[0] == artifact["sha256"]
        assert host.file(f"{POINTS}/{daily}/{artifact['file']}").size == artifact["size"]
    assert parts["postgres"]["rows"]["public.backup_rows"] == seeded
    assert m["sentinel"]["point_id"] == daily
    assert m["versions"]["postgres_server"].startswith("15")
    assert m["versions"]["pg_dump"].startswith("pg_dump (PostgreSQL) 15")
    assert m["versions"]["redis_server"].startswith("7.")
    assert set(m["durations"]) >= {"postgres", "redis", "files"}
    assert parts["redis"]["checked_with"] == "redis-check-rdb"
    # The running images' digests, the .env and the nginx configuration.
    images = json.loads(host.file(f"{POINTS}/{daily}/images.json").content_string)
    assert {e["service"] for e in images} >= {"postgres", "redis", "api-blue", "worker-blue"}
    assert all(e["image_id"].startswith("sha256:") for e in images)
    listing = host.check_output(f"zstd -dc {POINTS}/{daily}/files.tar.zst | tar -t")
    assert "opt/ytempire/.env" in listing.split()
    assert "etc/nginx/sites-available/ytempire" in listing.split()
    # Root only: the point holds the secrets.
    assert host.file(f"{POINTS}/{daily}").mode == 0o700
    # In S3, encrypted: the manifest object last, no plaintext.
    keys = s3.listing(f"site/points/{daily}/")
    assert f"site/points/{daily}/manifest.json.enc" in keys
    assert len(keys) == len(m["artifacts"]) + 1
    body = (
        s3.client()
        .get_object(Bucket=s3.bucket, Key=f"site/points/{daily}/manifest.json.enc")["Body"]
        .read()
    )
    assert daily.encode() not in body
    assert b"sha256" not in body
    metrics = host.file(METRICS).content_string
    assert 'ytempire_backup_last_success_timestamp_seconds{scope="daily"}' in metrics


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"db": {"password": "not-the-password"}}, "password authentication failed"),
        # The module masks its settings (no_log), the database's name with them.
        ({"db": {"name": "no_such_database"}}, "does not exist"),
    ],
    ids=["wrong-password", "missing-database"],
)
def test_a_failing_dump_leaves_nothing_and_runs_no_retention(
    host, daily, s3, settings, says, backup
):
    before, keys = points(host), s3.listing()
    rc, out = backup("daily", **settings)
    assert rc != 0
    assert says in out, out
    assert points(host) == before
    assert s3.listing() == keys
    assert (
        'ytempire_backup_last_failure_timestamp_seconds{scope="daily"}'
        in host.file(METRICS).content_string
    )
    assert_all_verify(host)


@pytest.fixture
def webhook(host):
    """An HTTP server on the controller that records what is posted to it: (url, bodies)."""
    gateway = host.check_output("ip -4 route show default").split()[2]
    with webhook_receiver() as (port, bodies):
        yield f"http://{gateway}:{port}/services/T0/B0/test", bodies


def test_a_failure_is_posted_to_slack_and_a_failed_post_only_warns(host, daily, backup, webhook):
    url, bodies = webhook
    rc, out = backup("database", db={"password": "wrong"}, slack_webhook_url=url)
    assert rc != 0
    assert len(bodies) == 1
    assert "database backup" in bodies[0]["text"]
    assert "failed" in bodies[0]["text"]
    assert "password authentication failed" in bodies[0]["text"]
    # A webhook nobody answers: the backup's own failure is reported, the post only warned of.
    rc, out = backup(
        "database", db={"password": "wrong"}, slack_webhook_url="http://127.0.0.1:9/hook"
    )
    assert rc != 0
    assert "password authentication failed" in out
    assert "the Slack notification was not sent" in out, out


def test_a_stopped_database_fails_the_backup(host, daily, s3, backup):
    before, keys = points(host), s3.listing()
    host.check_output(f"docker stop {container(host, 'postgres')}")
    try:
        rc, out = backup("database")
    finally:
        host.check_output("cd /opt/ytempire && docker compose up -d --wait postgres")
    assert rc != 0
    assert "no running postgres container" in out, out
    assert points(host) == before
    assert s3.listing() == keys


def test_no_point_and_no_pruning_while_a_recovery_holds_the_host(host, daily, s3, backup):
    """The hold a disaster recovery writes before site.yml: the timers' runs and the
    playbook's are refused, naming the file, and nothing reaches S3."""
    hold = "/backup/recovery-in-progress"
    before, keys = points(host), s3.listing()
    host.check_output(f"echo 'disaster recovery started (test)' > {hold}")
    try:
        rc, out = backup("database")
        timer = host.run("/usr/local/sbin/ytempire-backup run database")
        prune = host.run("/usr/local/sbin/ytempire-backup prune")
    finally:
        host.check_output(f"rm -f {hold}")
    assert rc != 0
    assert f"a disaster recovery is rebuilding this host ({hold} exists)" in out, out
    assert timer.rc != 0
    assert "no restore point is made" in timer.stderr, timer.stderr
    assert prune.rc != 0
    assert "no retention runs" in prune.stderr, prune.stderr
    assert points(host) == before
    assert s3.listing() == keys


@pytest.fixture
def small_disk(host):
    """A 4 MiB filesystem to back up to."""
    host.check_output(
        "mkdir -p /mnt/small-backup && mount -t tmpfs -o size=4m tmpfs /mnt/small-backup"
    )
    yield "/mnt/small-backup"
    host.run("umount /mnt/small-backup")


def test_too_little_free_space_is_refused_before_the_dump(host, daily, small_disk, backup):
    rc, out = backup("daily", backup_dir=small_disk, offsite=None)
    assert rc != 0
    assert "MiB free" in out, out
    assert "needs" in out, out
    assert host.check_output(f"ls -A {small_disk}/points") == ""


def test_a_disk_that_fills_during_the_dump_leaves_no_partial_files(
    host, daily, small_disk, seeded, backup
):
    # Enough rows that the dump does not fit; the guard lets it start (no
    # reserve, no earlier point there).
    sql(
        host,
        "CREATE TABLE IF NOT EXISTS filler AS "
        "SELECT g, md5(random()::text) || md5(random()::text) AS x "
        "FROM generate_series(1, 300000) g",
    )
    try:
        rc, out = backup("daily", backup_dir=small_disk, offsite=None, space_reserve_bytes=1)
    finally:
        sql(host, "DROP TABLE filler")
    assert rc != 0
    assert "No space left on device" in out, out
    assert host.check_output(f"ls -A {small_disk}/points") == ""
    assert_all_verify(host)


def test_a_corrupted_artifact_fails_verification_locally_and_in_s3(host, daily, s3, restore_point):
    copy = daily
    scratch = f"{POINTS}/.corrupt-test"
    host.check_output(f"rm -rf {scratch} && cp -a {POINTS}/{daily} {scratch}")
    try:
        # A flipped byte, then a truncation, each in a copy put in the point's place.
        for damage, expect in (
            ("printf '\\xff' | dd of={f} bs=1 seek=100 conv=notrunc status=none", "has sha256"),
            ("truncate -s -10 {f}", "bytes, the manifest says"),
        ):
            host.check_output(f"rm -rf {POINTS}/{copy} && cp -a {scratch} {POINTS}/{copy}")
            host.check_output(damage.format(f=f"{POINTS}/{copy}/redis.rdb.zst"))
            result = restore_point(state="verified", point=copy)
            assert result.get("failed"), result
            assert "redis.rdb.zst" in result["msg"], result["msg"]
            assert expect in result["msg"], result["msg"]
    finally:
        host.check_output(f"rm -rf {POINTS}/{copy} && mv {scratch} {POINTS}/{copy}")
    assert not restore_point(state="verified", point=daily).get("failed")
    # In S3: one byte of the dump's object flipped, then put back.
    key = f"site/points/{daily}/postgres.dump.zst.enc"
    stored = s3.client().get_object(Bucket=s3.bucket, Key=key)
    original, metadata = stored["Body"].read(), stored["Metadata"]
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0x01
    s3.client().put_object(Bucket=s3.bucket, Key=key, Body=bytes(damaged), Metadata=metadata)
    try:
        result = restore_point(state="verified", point=daily, remote=True)
        assert result.get("failed"), result
        assert "postgres.dump.zst" in result["msg"], result["msg"]
    finally:
        s3.client().put_object(Bucket=s3.bucket, Key=key, Body=original, Metadata=metadata)
    result = restore_point(state="verified", point=daily, remote=True)
    assert not result.get("failed"), result.get("msg")


def test_a_running_bgsave_and_writes_still_give_a_copy_from_after_the_start(
    host, daily, tmp_path, backup
):
    # 50k keys in database 1 (well under the test server's 64 MiB maxmemory),
    # saved slowly: the BGSAVE started here still runs when the backup starts.
    fill = "for i = 1, 50000 do redis.call('SET', 'bulk:' .. i, string.rep('x', 64)) end"
    redis(host, "-n", "1", "EVAL", fill, "0")
    redis(host, "CONFIG", "SET", "rdb-key-save-delay", "100")
    try:
        assert "started" in redis(host, "BGSAVE").lower()
        assert redis(host, "INFO", "persistence").count("rdb_bgsave_in_progress:1") == 1
        # A key short enough that the RDB keeps it uncompressed (LZF starts above 20 bytes).
        redis(host, "SET", "after-bgsave", "yes")
        # Writes all through the backup (database 1; it ends by itself).
        host.check_output(
            f"docker exec -d {container(host, 'redis')} timeout 90 "
            "redis-benchmark -q --dbnum 1 -n 5000000 -c 2 -t set -r 10000"
        )
        rc, out = backup("database", offsite=None)
        assert rc == 0, out
        assert "redis-benchmark" in host.check_output(f"docker top {container(host, 'redis')}"), (
            "the writes ended too soon"
        )
    finally:
        host.run(
            f"docker exec {container(host, 'redis')} "
            "sh -c 'kill $(pidof redis-benchmark timeout) 2>/dev/null'"
        )
        redis(host, "CONFIG", "SET", "rdb-key-save-delay", "0")
        redis(host, "-n", "1", "FLUSHDB")
    pid = points(host)[-1]
    assert pid.endswith("-database")
    assert manifest(host, pid)["sentinel"]["point_id"] == pid
    # The copy: a valid RDB, and it has the key written after the first BGSAVE began.
    check = host.run(
        f"zstd -dc {POINTS}/{pid}/redis.rdb.zst > /tmp/copy.rdb && docker cp /tmp/copy.rdb "
        f"{container(host, 'redis')}:/tmp/copy.rdb && "
        f"docker exec {container(host, 'redis')} redis-check-rdb /tmp/copy.rdb"
    )
    assert check.rc == 0, check.stdout + check.stderr
    assert "RDB looks OK" in check.stdout, check.stdout
    keys = host.run("grep -c after-bgsave /tmp/copy.rdb")
    assert keys.stdout.strip() == "1"
    host.run(f"rm -f /tmp/copy.rdb; docker exec {container(host, 'redis')} rm -f /tmp/copy.rdb")


def test_a_restore_whose_sql_fails_leaves_the_live_database_untouched(
    host, daily, backup, run_playbook
):
    # A table owned by a role that will not exist when the point is restored.
    before = points(host)
    sql(
        host, "CREATE ROLE ghost; CREATE TABLE haunted (id int); ALTER TABLE haunted OWNER TO ghost"
    )
    try:
        rc, out = backup("database", offsite=None)
        assert rc == 0, out
        (broken,) = set(points(host)) - set(before)
        sql(host, "DROP TABLE haunted; DROP ROLE ghost")
        sql(host, "INSERT INTO backup_rows (id, note) VALUES (-1, 'written after the point')")
        rc, out = run_playbook("playbooks/restore-database.yml", {"restore_point": broken})
        assert rc != 0
        assert 'role "ghost" does not exist' in out, out
        assert sql(host, "SELECT note FROM backup_rows WHERE id = -1") == "written after the point"
        restoring = "SELECT count(*) FROM pg_database WHERE datname LIKE 'ytempire_restoring%'"
        assert sql(host, restoring) == "0"
        # The API and the worker are back.
        assert host.run("curl -sfk https://127.0.0.1/health").rc == 0
    finally:
        for pid in set(points(host)) - set(before):
            host.check_output(f"rm -rf {POINTS}/{pid}")
        sql(host, "DELETE FROM backup_rows WHERE id = -1; DROP TABLE IF EXISTS haunted")
        sql(host, "DROP ROLE IF EXISTS ghost")


def test_a_logical_restore_brings_back_the_point(host, daily, seeded, backup, run_playbook):
    rc, out = backup("database", offsite=None)
    assert rc == 0, out
    pid = points(host)[-1]
    sql(
        host,
        "INSERT INTO backup_rows (id, note) VALUES (-2, 'after the point'); "
        "DELETE FROM backup_rows WHERE id <= 100",
    )
    rc, out = run_playbook("playbooks/restore-database.yml", {"restore_point": pid})
    assert rc == 0, out
    assert sql(host, "SELECT count(*) FROM backup_rows") == str(seeded)
    assert sql(host, "SELECT count(*) FROM backup_rows WHERE id = -2") == "0"
    assert (
        sql(host, f"SELECT point_id FROM ytempire_backup.sentinel WHERE point_id = '{pid}'")  # noqa: S608
        == pid
    )
    assert "ytempire_before_restore" not in sql(
        host, "SELECT string_agg(datname, ',') FROM pg_database"
    )
    assert host.run("curl -sfk https://127.0.0.1/health").rc == 0


def test_point_in_time_recovery_loses_under_a_minute(host, daily, figure, run_playbook):
    """The RPO: a row committed T seconds before the cluster is destroyed comes back."""
    written_at = time.monotonic()
    sql(host, "INSERT INTO backup_rows (id, note) VALUES (-3, 'sentinel of the RPO test')")
    time.sleep(45)
    pg = container(host, "postgres")
    # Destroyed: killed (no shutdown checkpoint, no last archive) and its files gone.
    host.check_output(f"docker update --restart=no {pg} && docker kill {pg}")
    rpo_window = time.monotonic() - written_at
    host.check_output("find /data/postgres -mindepth 1 -delete")
    try:
        rc, out = run_playbook(
            "playbooks/restore-database.yml", {"restore_method": "point_in_time"}
        )
        assert rc == 0, out
    finally:
        host.check_output(f"docker update --restart=unless-stopped {pg}")
    assert sql(host, "SELECT note FROM backup_rows WHERE id = -3") == "sentinel of the RPO test"
    assert sql(host, "SELECT pg_is_in_recovery()") == "f"
    # Writable, and archiving on the new timeline.
    sql(host, "DELETE FROM backup_rows WHERE id = -3")
    assert sql(host, "SELECT failed_count FROM pg_stat_archiver") == "0"
    assert host.run("curl -sfk https://127.0.0.1/health").rc == 0
    figure(
        "PITR: committed this many s before the cluster was destroyed, and restored",
        round(rpo_window, 1),
    )
    print(f"RPO test: the row was committed {rpo_window:.1f} s before the cluster was destroyed")


def test_the_restore_drill_checks_the_latest_point_and_measures_rto_and_rpo(host, daily):
    out = host.run("systemctl start ytempire-restore-drill.service")
    assert out.rc == 0, host.check_output(
        "journalctl -u ytempire-restore-drill.service --no-pager -n 40"
    )
    metrics = host.file(METRICS).content_string
    assert "ytempire_restore_drill_success 1" in metrics
    samples = {
        line.split()[0]: float(line.split()[1])
        for line in metrics.splitlines()
        if line and line[0] != "#"
    }
    assert 0 < samples["ytempire_restore_drill_rto_seconds"] < 1800
    assert 0 < samples["ytempire_restore_drill_rpo_seconds"] < 3600
    # The scratch project is gone.
    assert "ytempire-drill" not in host.check_output("docker compose ls --all")


def test_s3_errors_and_timeouts_are_retried(host, daily, s3, backup, restore_point):
    proxied = offsite_settings(host, endpoint_url=s3.proxy.endpoint_url)
    s3.proxy.fail_next(2, method="PUT")
    s3.proxy.stall_next(1, seconds=15, method="PUT", after=2)
    rc, out = backup("daily", offsite=proxied)
    assert rc == 0, out
    assert s3.proxy.injected() == 3
    pid = points(host)[-1]
    assert f"site/points/{pid}/manifest.json.enc" in s3.listing()
    assert not restore_point(state="verified", point=pid, remote=True).get("failed")


def test_s3_failing_every_attempt_leaves_no_object_under_the_final_key(
    host, daily, s3, backup, restore_point
):
    proxied = offsite_settings(host, endpoint_url=s3.proxy.endpoint_url, max_attempts=3)
    s3.proxy.fail_next(1000, method="PUT")
    try:
        rc, out = backup("daily", offsite=proxied)
    finally:
        s3.proxy.clear()
    assert rc != 0
    assert "offsite copy failed" in out, out
    pid = points(host)[-1]
    # The local point is kept (verified); nothing of it is in S3, no upload is left open.
    assert not restore_point(state="verified", point=pid).get("failed")
    assert s3.listing(f"site/points/{pid}/") == []
    uploads = s3.client().list_multipart_uploads(Bucket=s3.bucket, Prefix=f"site/points/{pid}/")
    assert uploads.get("Uploads", []) == []
    # The next good run uploads it too.
    rc, out = backup("database")
    assert rc == 0, out
    assert f"site/points/{pid}/manifest.json.enc" in s3.listing()


def test_failed_runs_never_erase_the_last_verified_points(host, daily, s3, backup, restore_point):
    for _ in range(3):
        rc, _ = backup("daily", db={"password": "wrong"})
        assert rc != 0
    locally = [p for p in points(host) if p.endswith("-daily")]
    remote = sorted(
        {
            k.split("/")[2]
            for k in s3.listing("site/points/")
            if k.endswith("-daily/manifest.json.enc")
        }
    )
    assert len(locally) >= 1
    # Retention as if every point were past its days: only the newest
    # minimum_redundancy (2) of each scope stay.
    result = restore_point(state="pruned", settings={"retention_days": 0.000001})
    assert not result.get("failed"), result
    kept = [p for p in points(host) if p.endswith("-daily")]
    assert kept == locally[-2:]
    kept_remote = sorted(
        {
            k.split("/")[2]
            for k in s3.listing("site/points/")
            if k.endswith("-daily/manifest.json.enc")
        }
    )
    assert kept_remote == remote[-2:]
    assert_all_verify(host)
