"""Schema migrations: numbered SQL files in ``migrations/``, applied in order.

Each file is ``NNNN_name.sql`` and starts with ``-- compatible: true`` or
``-- compatible: false``: whether the code of the release before it still
runs against the schema it makes (new tables and nullable columns are; a
dropped or renamed column is not). The applied ones are recorded in
``schema_migrations``, each in the transaction that applies it, under an
advisory lock, so two processes starting at once apply each file once.

The blue-green deploy starts the new color while the old one serves, so an
incompatible migration is never applied on the way: ``apply`` refuses it
unless asked (``python -m ytvideo migrate --allow-incompatible``, in a
maintenance window), and the image's labels (``org.ytempire.schema.version``
and ``org.ytempire.schema.compatible-from``, checked against these files by
the tests) let the deploy refuse such an image before it starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .db import Database

_LOCK = 0x79747669  # pg_advisory_xact_lock key: "ytvi" (the one the schema used before)
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_HEADER = re.compile(r"^-- compatible: (true|false)\s*$", re.M)

_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    compatible boolean NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(RuntimeError):
    """A migration file is malformed, or an incompatible one is pending."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    compatible: bool
    sql: str


def migrations(directory: Path | None = None) -> list[Migration]:
    """Every migration shipped with this code (or in ``directory``), in order;
    malformed files raise."""
    found = []
    where = directory or resources.files(__package__).joinpath("migrations")
    for entry in where.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _NAME.match(entry.name)
        if not match:
            raise MigrationError(f"{entry.name}: a migration is named NNNN_name.sql")
        sql = entry.read_text(encoding="utf-8")
        header = _HEADER.match(sql.splitlines()[0] if sql else "")
        if not header:
            raise MigrationError(f"{entry.name}: the first line must be -- compatible: true|false")
        found.append(Migration(int(match.group(1)), match.group(2), header.group(1) == "true", sql))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migrations must be numbered 1, 2, 3... without gaps: {versions}")
    return found


def schema_version() -> int:
    """The schema this code migrates to."""
    return migrations()[-1].version


def compatible_from() -> int:
    """The oldest schema whose code still runs against ``schema_version()``."""
    return max((m.version for m in migrations() if not m.compatible), default=1)


@dataclass(frozen=True)
class Status:
    applied: list[int]
    pending: list[Migration]

    @property
    def incompatible(self) -> list[Migration]:
        return [m for m in self.pending if not m.compatible]

    def as_dict(self) -> dict[str, object]:
        return {
            "schema_version": schema_version(),
            "compatible_from": compatible_from(),
            "applied": self.applied,
            "pending": [f"{m.version:04d}_{m.name}" for m in self.pending],
            "incompatible_pending": [f"{m.version:04d}_{m.name}" for m in self.incompatible],
        }


def status(db: Database, directory: Path | None = None) -> Status:
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute(_TABLE)
        cur.execute("SELECT version FROM schema_migrations ORDER BY version")
        applied = [int(r[0]) for r in cur.fetchall()]
    known = migrations(directory)
    unknown = sorted(set(applied) - {m.version for m in known})
    if unknown:
        raise MigrationError(
            f"the database has schema migrations {unknown} that this code does not know: "
            "it was migrated by a newer release"
        )
    return Status(applied, [m for m in known if m.version not in applied])


def apply(
    db: Database, allow_incompatible: bool = False, directory: Path | None = None
) -> list[int]:
    """Apply the pending migrations in order; the versions applied.

    Refuses, before applying any, when a pending one is incompatible and
    ``allow_incompatible`` is not set."""
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
        cur.execute(_TABLE)
        cur.execute("SELECT version FROM schema_migrations")
        applied = {int(r[0]) for r in cur.fetchall()}
        pending = [m for m in migrations(directory) if m.version not in applied]
        blocking = [m for m in pending if not m.compatible]
        if blocking and not allow_incompatible:
            names = ", ".join(f"{m.version:04d}_{m.name}" for m in blocking)
            raise MigrationError(
                f"migration {names} is not compatible with the running release: apply it in "
                "a maintenance window with `python -m ytvideo migrate --allow-incompatible`"
            )
        for migration in pending:
            cur.execute(migration.sql)
            cur.execute(
                "INSERT INTO schema_migrations (version, name, compatible) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.compatible),
            )
    return [m.version for m in pending]
