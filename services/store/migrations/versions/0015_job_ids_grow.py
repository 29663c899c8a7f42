"""Ids only grow: a deleted job's (or template's) id is never handed out again, so a bookmark, a compare link or a
notebook's job handle never silently points at another job.

SQLite gives a plain INTEGER PRIMARY KEY the largest id plus one, so deleting the newest job hands its id to the
next one. AUTOINCREMENT (the high-water mark in sqlite_sequence) prevents that for every way a row is inserted
(ORM submit, clone, retry, the bulk seed), but SQLite can only add it by rebuilding the table: the rebuild keeps
every row and id, the columns exactly as declared, every index and trigger (their SQL read from sqlite_master
before, run again after), the planner's statistics, and the foreign keys of the tables that point at jobs. The
next id is the largest present plus one, as before; from then on the largest ever given plus one.

PostgreSQL's serial sequences never go back; the migration only makes sure each one is past the largest id
(an explicit-id restore could leave it behind). api_tokens rows are revoked, never deleted, so their ids
cannot come back on either database and the table is left as it is.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import re
import sqlite3

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

TABLES = ("jobs", "job_templates")
# How SQLAlchemy (migrations 0001, 0002) declared the key: a column, then a table constraint. AUTOINCREMENT is
# only allowed inline, written as SQLAlchemy writes it for sqlite_autoincrement=True.
ID_COLUMN = re.compile(r"(\bid\s+INTEGER\s+NOT\s+NULL)(\s*,)", re.IGNORECASE)
ID_KEY = re.compile(r",\s*PRIMARY\s+KEY\s*\(\s*id\s*\)", re.IGNORECASE)
AUTOINCREMENT = re.compile(r"\bAUTOINCREMENT\b", re.IGNORECASE)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        _sqlite_autoincrement(bind.connection.dbapi_connection, TABLES)
        return
    for table in TABLES:
        _sequence_past_max(bind, table)


def downgrade() -> None:
    """Nothing to undo: revision 0014's code reads and writes these tables alike with AUTOINCREMENT, and going
    back must not make ids reusable again (nor rebuild a million-job table for it)."""


# SQLite ---------------------------------------------------------------------------------------------------


def _has_autoincrement(raw: sqlite3.Connection, table: str) -> bool:
    row = raw.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
    return bool(AUTOINCREMENT.search(row[0]))


def _sqlite_autoincrement(raw: sqlite3.Connection, tables: tuple[str, ...]) -> None:
    if all(_has_autoincrement(raw, t) for t in tables):
        return  # a store made at this revision, or downgraded past it and upgraded again
    # Foreign keys must be off for the rebuild: with them on, DROP TABLE jobs deletes every job first, and
    # ON DELETE CASCADE takes every job's points, events, logs and final metrics with it. The pragma is a
    # no-op inside a transaction, so what the earlier revisions of this run did is committed first (each is
    # complete, and alembic_version already names the last of them).
    if raw.in_transaction:
        raw.commit()
    foreign_keys = raw.execute("PRAGMA foreign_keys").fetchone()[0]
    cache_size = int(raw.execute("PRAGMA cache_size").fetchone()[0])
    raw.execute("PRAGMA foreign_keys = OFF")
    if raw.execute("PRAGMA foreign_keys").fetchone()[0]:
        raise RuntimeError("Migration 0015: SQLite would not turn foreign keys off, so the jobs table cannot "
                           "be rebuilt safely; nothing was changed.")
    try:
        # The copy fills the unique index of submission ids at random places: a page cache that holds it (at a
        # million jobs the copy takes 5 s instead of 14).
        raw.execute("PRAGMA cache_size = -262144")
        raw.execute("BEGIN IMMEDIATE")  # the write lock first: a second portal starting now waits, then skips
        try:
            # Only what the rebuild would break stops it: an old orphan row must not keep the portal from starting.
            orphans = set(raw.execute("PRAGMA foreign_key_check").fetchall())
            for table in tables:
                if not _has_autoincrement(raw, table):
                    _rebuild_with_autoincrement(raw, table)
            broken = [row for row in raw.execute("PRAGMA foreign_key_check").fetchall() if row not in orphans]
            if broken:
                raise RuntimeError(f"Migration 0015: rows whose foreign key points nowhere after the rebuild "
                                   f"(table, rowid, parent): {broken[:5]}; nothing was changed.")
            raw.execute("COMMIT")
        except BaseException:
            raw.execute("ROLLBACK")
            raise
    finally:  # the connection goes back to the pool as it came
        raw.execute(f"PRAGMA cache_size = {cache_size}")
        raw.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")


def _rebuild_with_autoincrement(raw: sqlite3.Connection, table: str) -> None:
    """SQLite's own procedure for a schema change ALTER TABLE cannot make (sqlite.org/lang_altertable.html):
    create the new table, copy, drop the old, rename, make its indexes and triggers again."""
    new = f"{table}__ids_grow"
    (create,) = raw.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
    # Indexes and triggers in the order they were made (triggers on one event fire in a fixed order by it);
    # automatic indexes (sql NULL) belong to the table's own UNIQUE/PRIMARY KEY and come back with it.
    dependents = [sql for (sql,) in raw.execute(
        "SELECT sql FROM sqlite_master WHERE tbl_name = ? AND type IN ('index', 'trigger') AND sql IS NOT NULL "
        "ORDER BY rowid", (table,))]
    stats = _planner_stats(raw, table)
    columns = ", ".join(f'"{name}"' for _, name, *_ in raw.execute(f'PRAGMA table_info("{table}")'))
    raw.execute(_autoincrement_sql(create, table, new))
    # The same declaration, so the same columns in the same order: every row is copied as it is, id included.
    raw.execute(f'INSERT INTO "{new}" ({columns}) SELECT {columns} FROM "{table}" ORDER BY id')  # noqa: S608
    raw.execute(f'DROP TABLE "{table}"')
    raw.execute(f'ALTER TABLE "{new}" RENAME TO "{table}"')
    for sql in dependents:
        raw.execute(sql)
    # The high-water mark starts at the largest id there is (the copy has set it; said here so it is certain).
    raw.execute("DELETE FROM sqlite_sequence WHERE name IN (?, ?)", (table, new))
    raw.execute(f'INSERT INTO sqlite_sequence (name, seq) SELECT ?, max(id) FROM "{table}" '  # noqa: S608
                "HAVING max(id) IS NOT NULL", (table,))
    if stats:
        raw.executemany("INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES (?, ?, ?)", stats)


def _autoincrement_sql(create: str, table: str, new: str) -> str:
    """The table's CREATE TABLE text as it is stored, under the new name, with `id` declared AUTOINCREMENT."""
    renamed, n_name = re.subn(rf'^CREATE\s+TABLE\s+("?){re.escape(table)}\1\s*\(', f'CREATE TABLE "{new}" (',
                              create, count=1, flags=re.IGNORECASE)
    inline, n_column = ID_COLUMN.subn(r"\1 PRIMARY KEY AUTOINCREMENT\2", renamed, count=1)
    result, n_key = ID_KEY.subn("", inline)
    if (n_name, n_column, n_key) != (1, 1, 1):
        raise RuntimeError(f"Migration 0015: the {table} table is not declared as the portal's migrations made "
                           f"it (an 'id INTEGER NOT NULL' column and 'PRIMARY KEY (id)'), so it is left alone: "
                           f"{create!r}")
    return result


def _planner_stats(raw: sqlite3.Connection, table: str) -> list[tuple[str, str, str]]:
    """ANALYZE's figures for the table, which DROP TABLE deletes: the rebuilt indexes have the same names."""
    if not raw.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_stat1'").fetchone():
        return []
    return raw.execute("SELECT tbl, idx, stat FROM sqlite_stat1 WHERE tbl = ?", (table,)).fetchall()


# PostgreSQL -----------------------------------------------------------------------------------------------


def _sequence_past_max(bind: sa.Connection, table: str) -> None:
    sequence = bind.execute(sa.text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": table}).scalar()
    if sequence is None:
        raise RuntimeError(f"Migration 0015: {table}.id has no sequence (the portal's migrations make it serial).")
    # pg_sequence_last_value is NULL until the sequence has been used; the table name is this module's constant.
    bind.execute(sa.text(f"SELECT setval(CAST(:s AS regclass), max(id)) FROM {table} "  # noqa: S608
                         "HAVING max(id) > coalesce(pg_sequence_last_value(CAST(:s AS regclass)), 0)"),
                 {"s": sequence})
