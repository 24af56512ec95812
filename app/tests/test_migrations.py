"""Schema migrations against the real PostgreSQL, each test on a database of its own."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from ytvideo import migrate
from ytvideo.db import Database, NewJob
from ytvideo_services import APP_DIR, PostgresServer

# The schema the first release created from its request handlers, before migrations.
FIRST_RELEASE_SCHEMA = (APP_DIR / "ytvideo/migrations/0001_jobs.sql").read_text()


@pytest.fixture
def fresh(postgres: PostgresServer) -> Iterator[Database]:
    name = f"migrate_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(postgres.url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    db = Database(postgres.url.rsplit("/", 1)[0] + f"/{name}")
    yield db
    db.close()
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    admin.close()


def tables(db: Database) -> set[str]:
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r[0] for r in cur.fetchall()}


def test_a_fresh_database_gets_every_migration_once(fresh: Database) -> None:
    versions = [m.version for m in migrate.migrations()]
    assert migrate.apply(fresh) == versions
    assert migrate.apply(fresh) == []
    assert {"video_jobs", "users", "schema_migrations"} <= tables(fresh)
    assert migrate.status(fresh).pending == []


def test_a_database_of_the_first_release_adopts_the_migrations_with_its_jobs(
    fresh: Database,
) -> None:
    with fresh.connection() as conn, conn.cursor() as cur:
        cur.execute(FIRST_RELEASE_SCHEMA.split("\n", 3)[3])  # without the header comments
    job = NewJob(uuid.uuid4(), "Old", "Kept.", 128, 72, 1.0, 10, "q")
    with fresh.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO video_jobs (id, title, script, width, height, duration_seconds, fps,"
            " queue, status) VALUES (%s, 'Old', 'Kept.', 128, 72, 1, 10, 'q', 'completed')",
            (str(job.id),),
        )
    assert migrate.apply(fresh) == [m.version for m in migrate.migrations()]
    row = fresh.get_job(job.id)
    assert row is not None
    assert row["title"] == "Old"
    assert row["user_id"] is None


def _write(directory: Path, name: str, compatible: bool, sql: str) -> None:
    header = f"-- compatible: {'true' if compatible else 'false'}\n"
    (directory / name).write_text(header + sql)


def test_an_incompatible_migration_is_refused_before_any_is_applied(
    fresh: Database, tmp_path: Path
) -> None:
    _write(tmp_path, "0001_a.sql", True, "CREATE TABLE a (id int);")
    _write(tmp_path, "0002_b.sql", True, "CREATE TABLE b (id int);")
    _write(tmp_path, "0003_drop.sql", False, "DROP TABLE a;")
    with pytest.raises(migrate.MigrationError, match="0003_drop is not compatible"):
        migrate.apply(fresh, directory=tmp_path)
    assert tables(fresh) <= {"schema_migrations"}  # nothing of 1 and 2 either
    assert migrate.apply(fresh, allow_incompatible=True, directory=tmp_path) == [1, 2, 3]
    assert tables(fresh) == {"schema_migrations", "b"}


def test_a_failing_migration_leaves_the_database_as_it_was(fresh: Database, tmp_path: Path) -> None:
    _write(tmp_path, "0001_a.sql", True, "CREATE TABLE a (id int);")
    _write(tmp_path, "0002_bad.sql", True, "ALTER TABLE missing ADD COLUMN x int;")
    with pytest.raises(Exception, match="missing"):
        migrate.apply(fresh, directory=tmp_path)
    assert tables(fresh) <= {"schema_migrations"}


def test_malformed_migration_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("CREATE TABLE a (id int);")
    with pytest.raises(migrate.MigrationError, match="first line"):
        migrate.migrations(tmp_path)
    _write(tmp_path, "0001_a.sql", True, "")
    _write(tmp_path, "0003_c.sql", True, "")
    with pytest.raises(migrate.MigrationError, match="without gaps"):
        migrate.migrations(tmp_path)


def test_a_database_from_a_newer_release_is_refused(fresh: Database) -> None:
    migrate.apply(fresh)
    with fresh.connection() as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO schema_migrations VALUES (999, 'future', true)")
    with pytest.raises(migrate.MigrationError, match="newer release"):
        migrate.status(fresh)


def test_migrate_check_says_what_is_pending(fresh: Database) -> None:
    env = {"DATABASE_URL": fresh.url, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(APP_DIR)}
    check = [sys.executable, "-m", "ytvideo", "migrate", "--check"]
    done = subprocess.run(check, cwd=APP_DIR, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    shipped = [f"{m.version:04d}_{m.name}" for m in migrate.migrations()]
    assert shipped[:3] == ["0001_jobs", "0002_accounts", "0003_youtube"]
    assert json.loads(done.stdout)["pending"] == shipped
    apply = [sys.executable, "-m", "ytvideo", "migrate"]
    done = subprocess.run(apply, cwd=APP_DIR, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert '"pending": []' in done.stdout


def test_the_images_schema_labels_are_the_migrations() -> None:
    """The deploy reads these labels to refuse a color the serving one cannot run beside."""
    dockerfile = (APP_DIR / "Dockerfile").read_text()
    version = re.search(r'org\.ytempire\.schema\.version="(\d+)"', dockerfile)
    floor = re.search(r'org\.ytempire\.schema\.compatible-from="(\d+)"', dockerfile)
    assert version is not None
    assert floor is not None
    assert int(version.group(1)) == migrate.schema_version()
    assert int(floor.group(1)) == migrate.compatible_from()
