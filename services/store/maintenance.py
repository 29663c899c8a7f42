"""The planner's statistics, kept current by the portal itself.

Without them both databases guess: at a million jobs SQLite then sorts a status's 600,000 jobs for "Completed, by
final loss" (0.4 s) instead of walking the index in that order (3 ms). Nothing else collects them on SQLite, and
on PostgreSQL autovacuum does, but only some time after a bulk load, and the statistics of an expression index
(ix_jobs_param_*) appear only once the table is analyzed after the index was made.

`refresh_statistics` runs at every start-up (after the migrations) and from the sync loop; it analyzes only the
tables whose statistics are missing or stale, so when they are current it costs a few catalog reads.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import Connection, Engine

log = logging.getLogger(__name__)

# The sync loop looks this often whether a table's statistics are stale (cheap; analyzing only when they are).
CHECK_EVERY_SECONDS = 600.0
# SQLite: a table is analyzed again once its row count is this many times larger or smaller than ANALYZE saw.
# The plans the History page needs turn on proportions (a status's share of jobs), not exact counts.
SQLITE_GROWTH_FACTOR = 2.0
# PostgreSQL: rows changed since the last ANALYZE beyond which the portal analyzes a table itself, also when
# autovacuum has not yet (its own default is 50 + 10 % of the rows, so normally it comes first).
PG_CHANGED_ROWS = 1000
PG_CHANGED_FRACTION = 0.2


def refresh_statistics(engine: Engine) -> list[str]:
    """Analyze the portal's tables whose planner statistics are missing or stale. Returns the tables analyzed."""
    t = time.perf_counter()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if engine.dialect.name == "sqlite":
            stale = _sqlite_stale(conn)
            for table in stale:
                conn.exec_driver_sql(f'ANALYZE "{table}"')
        else:
            stale = _pg_stale(conn)
            for table in stale:
                conn.exec_driver_sql(f'ANALYZE "{table}"')
    if stale and engine.dialect.name == "sqlite":
        # A connection reads the statistics when it loads the schema: the pooled ones open again with the new ones.
        engine.dispose()
    if stale:
        log.info("planner statistics refreshed for %s in %.1f s", ", ".join(stale), time.perf_counter() - t)
    return stale


def _sqlite_stale(conn: Connection) -> list[str]:
    tables = [name for _schema, name, kind, _ncol, without_rowid, _strict in conn.exec_driver_sql(
        "SELECT * FROM pragma_table_list WHERE schema = 'main'") if kind == "table" and not without_rowid
        and not name.startswith("sqlite_")]
    indexed = {name for (name,) in conn.exec_driver_sql(
        "SELECT DISTINCT tbl_name FROM sqlite_master WHERE type = 'index'")}
    seen: dict[str, int] = {}
    if conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_stat1'").first():
        for table, stat in conn.exec_driver_sql("SELECT tbl, stat FROM sqlite_stat1"):
            rows = int((stat or "0").split()[0])
            seen[table] = max(seen.get(table, 0), rows)
    stale = []
    for table in tables:
        if table not in indexed:
            continue  # without an index there is no plan to choose
        # The span of rowids: a bound on the rows read from the two ends of the table's b-tree, where count(*)
        # would read every row of a 20,000,000-point table. Ids only grow (migration 0015), so it follows growth.
        low, high = conn.exec_driver_sql(f'SELECT min(rowid), max(rowid) FROM "{table}"').one()  # noqa: S608
        rows = 0 if high is None else high - low + 1
        known = seen.get(table, 0)
        if rows and (not known or rows >= known * SQLITE_GROWTH_FACTOR or rows * SQLITE_GROWTH_FACTOR <= known):
            stale.append(table)
    return stale


def _pg_stale(conn: Connection) -> list[str]:
    stale = []
    for table, reltuples, analyzed, changed in conn.exec_driver_sql(
            "SELECT s.relname, c.reltuples, coalesce(s.last_analyze, s.last_autoanalyze) IS NOT NULL, "
            "s.n_mod_since_analyze FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid "
            "WHERE s.schemaname = current_schema() ORDER BY s.relname"):
        if analyzed and (changed or 0) <= PG_CHANGED_ROWS + PG_CHANGED_FRACTION * max(reltuples, 0) and not \
                _pg_expression_index_unanalyzed(conn, table):
            continue
        # Never analyzed (a bulk load, a restored database) or much changed since: only an empty table can wait.
        if conn.exec_driver_sql(f'SELECT EXISTS (SELECT 1 FROM "{table}")').scalar():  # noqa: S608
            stale.append(table)
    return stale


def _pg_expression_index_unanalyzed(conn: Connection, table: str) -> bool:
    """An expression index made after the table's last ANALYZE (a migration, a bulk load's rebuild) has no
    statistics of its own until the next one."""
    return bool(conn.exec_driver_sql(
        "SELECT EXISTS (SELECT 1 FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
        "WHERE x.indrelid = CAST(%(t)s AS regclass) AND x.indexprs IS NOT NULL AND NOT EXISTS "
        "(SELECT 1 FROM pg_stats p WHERE p.schemaname = current_schema() AND p.tablename = i.relname))",
        {"t": table}).scalar())
