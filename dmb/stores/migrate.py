"""Versioned SQL migrations, applied in order, each once, each in its own transaction.

Files are `NNNN_name.sql` in `dmb/stores/migrations/`. `schema_migrations` records the version
and a checksum; editing a file that was already applied is refused rather than silently
diverging. An advisory lock lets several processes run `migrate()` at once safely.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import psycopg

_FILE_PATTERN = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x646D62  # "dmb": serialises concurrent migrate() calls on one database


class MigrationError(RuntimeError):
    """A migration file is malformed, was changed after being applied, or failed to apply."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(folder: Path | None = None) -> list[Migration]:
    """All migrations, in version order; refuses gaps, duplicates and badly named files."""
    root = folder or Path(str(resources.files("dmb.stores.migrations")))
    found: list[Migration] = []
    for path in sorted(root.glob("*.sql")):
        match = _FILE_PATTERN.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files must be named NNNN_name.sql")
        found.append(Migration(int(match[1]), match[2], path.read_text()))
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise MigrationError(
                f"migration versions must run 1, 2, 3... without gaps; found {migration.version} "
                f"where {expected} was expected"
            )
    return found


def migrate(database_url: str, folder: Path | None = None) -> list[Migration]:
    """Apply the pending migrations; return those applied by this call."""
    migrations = discover(folder)
    applied_now: list[Migration] = []
    with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version    integer PRIMARY KEY,
                       name       text NOT NULL,
                       checksum   text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = {
                row[0]: row[1]
                for row in conn.execute("SELECT version, checksum FROM schema_migrations")
            }
            for migration in migrations:
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        raise MigrationError(
                            f"migration {migration.version:04d}_{migration.name} was changed after "
                            "it was applied; add a new migration instead of editing an old one"
                        )
                    continue
                try:
                    with conn.transaction():
                        conn.execute(migration.sql.encode())
                        conn.execute(
                            "INSERT INTO schema_migrations (version, name, checksum) "
                            "VALUES (%s, %s, %s)",
                            (migration.version, migration.name, migration.checksum),
                        )
                except psycopg.Error as exc:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name} failed: {exc}"
                    ) from exc
                applied_now.append(migration)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now


def applied_versions(database_url: str) -> list[int]:
    """Versions recorded in schema_migrations (empty when the table does not exist yet)."""
    with psycopg.connect(database_url, connect_timeout=10) as conn:
        exists = conn.execute("SELECT to_regclass('schema_migrations')").fetchone()
        if exists is None or exists[0] is None:
            return []
        return [row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
