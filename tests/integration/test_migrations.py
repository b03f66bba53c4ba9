"""Migrations against the real Postgres: ordered, idempotent, tamper-evident, atomic."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from dmb.stores.migrate import MigrationError, applied_versions, discover, migrate


@pytest.fixture
def scratch_database(database_url: str) -> Iterator[str]:
    """A fresh, empty database on the session's Postgres, dropped afterwards."""
    name = f"scratch_{uuid.uuid4().hex[:12]}"
    admin_url = database_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield database_url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def _write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, sql in files.items():
        (folder / name).write_text(sql)
    return folder


def test_the_session_database_has_every_migration(database_url: str) -> None:
    assert applied_versions(database_url) == [m.version for m in discover()]


def test_migrate_applies_in_order_once(scratch_database: str) -> None:
    first = migrate(scratch_database)
    assert [m.version for m in first] == [m.version for m in discover()]
    assert migrate(scratch_database) == []
    with psycopg.connect(scratch_database) as conn:
        tables = {
            row[0]
            for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
    assert {"users", "follows", "posts", "likes", "comments", "schema_migrations"} <= tables


def test_an_applied_migration_that_was_edited_is_refused(
    scratch_database: str, tmp_path: Path
) -> None:
    folder = _write(tmp_path, {"0001_a.sql": "CREATE TABLE a (x int);"})
    migrate(scratch_database, folder)
    (folder / "0001_a.sql").write_text("CREATE TABLE a (x bigint);")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(scratch_database, folder)


def test_a_failing_migration_leaves_nothing_behind(scratch_database: str, tmp_path: Path) -> None:
    folder = _write(
        tmp_path,
        {
            "0001_ok.sql": "CREATE TABLE ok (x int);",
            "0002_broken.sql": "CREATE TABLE half (x int); SELECT * FROM no_such_table;",
        },
    )
    with pytest.raises(MigrationError, match="0002_broken failed"):
        migrate(scratch_database, folder)
    assert applied_versions(scratch_database) == [1]
    with psycopg.connect(scratch_database) as conn:
        row = conn.execute("SELECT to_regclass('half')").fetchone()
    assert row == (None,)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"1_bad_name.sql": "SELECT 1;"}, "NNNN_name.sql"),
        ({"0001_a.sql": "SELECT 1;", "0003_c.sql": "SELECT 1;"}, "without gaps"),
    ],
)
def test_badly_named_or_gapped_folders_are_refused(
    tmp_path: Path, files: dict[str, str], message: str
) -> None:
    with pytest.raises(MigrationError, match=message):
        discover(_write(tmp_path, files))


def test_revocations_are_a_table_with_an_expiry_index(scratch_database: str) -> None:
    """0005: revoked access tokens live in Postgres (Redis only caches them), and both token
    tables can be pruned by expiry without a scan."""
    migrate(scratch_database)
    with psycopg.connect(scratch_database) as conn:
        columns = {
            row[0]: row[1]
            for row in conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = 'revoked_access_tokens'"
            )
        }
        indexes = {
            row[0]
            for row in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")
        }
    assert columns == {
        "jti": "text",
        "user_id": "bigint",
        "expires_at": "timestamp with time zone",
        "revoked_at": "timestamp with time zone",
    }
    assert {"revoked_access_tokens_expires_idx", "refresh_tokens_expires_idx"} <= indexes
