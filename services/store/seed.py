"""Bulk-insert synthetic finished jobs (for benchmarks, demos and paging tests)."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine

from services.job_text import search_text
from services.models import GROUP_OF, JobStatus
from services.store.final_metrics import rebuild_final_metrics
from services.store.orm import utcnow
from services.store.totals import rebuild_job_totals

BATCH = 50_000
# From this many rows on, a load drops the table's secondary indexes and builds them again afterwards.
REBUILD_INDEXES_FROM = 200_000
MIX = [JobStatus.SUCCEEDED] * 6 + [JobStatus.FAILED] * 2 + [JobStatus.STOPPED] + [JobStatus.RUNNING]
# A team's spread for varied=True: most runs on one GPU, some on none or on a node's worth.
GPU_MIX = [0, 1, 1, 1, 2, 4, 8]
TEMPLATE_MIX = [None, None, "bert-finetune", "resnet-sweep", "llm-lora", "diffusion"]


COLUMNS = ("submission_id", "owner", "name", "status", "status_group", "reason", "backend", "backend_ref", "request",
           "spec", "gpus", "nodes", "cost_per_hour", "template", "created_at", "started_at", "updated_at",
           "finished_at", "epoch", "total_epochs", "progress", "latest_metrics", "final_metrics", "search_text",
           "tags", "note", "final_loss", "cost", "gpu_hours", "runtime_seconds")


def seed_jobs(engine: Engine, n: int, owner: str | Sequence[str] = "researcher", *,
              status: JobStatus | None = None, seed: int = 0, varied: bool = False) -> None:
    """n finished (and some running) jobs of `owner` (or of owners drawn from a list). varied=True also
    spreads GPUs and templates, as a team's real history would.

    Rows go to the database driver as ready-made tuples (COPY on PostgreSQL, executemany on SQLite): a
    million jobs through the ORM's per-value conversion would take minutes longer."""
    sqlite = engine.dialect.name == "sqlite"

    def when(t: datetime) -> Any:
        # The text SQLAlchemy's SQLite DateTime stores (UTC, naive, with microseconds).
        return t.strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else t

    bulk = n >= REBUILD_INDEXES_FROM
    with indexes_rebuilt_after(engine, "jobs", bulk), indexes_rebuilt_after(engine, "job_final_metrics", bulk):
        skipped = _seed_jobs(engine, n, owner, status, seed, varied, when, bulk)
    if skipped:  # the triggers did not keep the running totals and final-metric rows: write them once now
        with engine.begin() as conn:
            rebuild_job_totals(conn)
            rebuild_final_metrics(conn)


def skip_triggers(conn: Connection) -> bool:
    """For the rest of this transaction, skip triggers and foreign-key checks, where the database allows it
    (PostgreSQL, as a superuser): a bulk load of rows that are consistent by construction, whose derived
    data is rebuilt afterwards. Returns whether they are skipped."""
    if conn.dialect.name != "postgresql" or not conn.exec_driver_sql(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user").scalar():
        return False
    conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
    return True


def _seed_jobs(engine: Engine, n: int, owner: str | Sequence[str], status: JobStatus | None, seed: int,
               varied: bool, when: Any, bulk: bool) -> bool:
    """Inserts the rows; returns whether the triggers were skipped for any of them."""
    skipped = False
    rng = random.Random(seed)
    now = utcnow()
    rows: list[tuple[Any, ...]] = []
    for i in range(n):
        st = status or rng.choice(MIX)
        who = owner if isinstance(owner, str) else rng.choice(owner)
        gpus = rng.choice(GPU_MIX) if varied else 1
        template = rng.choice(TEMPLATE_MIX) if varied else None
        # Seeded history lies in the past: each job started a minute after the last and ran 30 minutes.
        created = now - timedelta(minutes=n - i + 30)
        lr = rng.choice([1e-4, 3e-4, 1e-3, 3e-3])
        name = f"exp-{i:07d}"
        loss = round(rng.uniform(0.05, 2.0), 4)
        running = st is JobStatus.RUNNING
        metrics = {"loss": loss}
        if varied:  # a team's runs report more than a loss, and not all the same things
            metrics["accuracy"] = round(rng.uniform(0.5, 0.99), 4)
            if rng.random() < 0.5:
                metrics["eval_loss"] = round(loss * rng.uniform(1.0, 1.3), 4)
        request = {"name": name, "script": "train_example.py", "learning_rate": lr, "epochs": 10,
                   "batch_size": rng.choice([16, 32, 64]), "gpus": gpus, "nodes": 1, "max_runtime_hours": 8,
                   "template": template or ""}
        rows.append((
            str(uuid.UUID(int=rng.getrandbits(128))), who, name, st.value, GROUP_OF[st].value,
            "Exited with code 1" if st is JobStatus.FAILED else None, "local", "null", json.dumps(request),
            "null", gpus, 1, 2.9 * max(gpus, 0.25), template, when(created), when(created), when(created),
            None if running else when(created + timedelta(minutes=30)), 10, 10,
            1.0 if st is JobStatus.SUCCEEDED else 0.5, json.dumps(metrics),
            "{}" if running else json.dumps(metrics), search_text(name, who, request, [], ""), "[]", "",
            None if running else loss, None if running else round(1.45 * max(gpus, 0.25), 4),
            None if running else 0.5 * gpus, None if running else 1800.0,
        ))
        if len(rows) >= BATCH:
            skipped |= _flush(engine, rows, bulk)
    return _flush(engine, rows, bulk) or skipped


def _flush(engine: Engine, rows: list[tuple[Any, ...]], bulk: bool) -> bool:
    if not rows:
        return False
    with engine.begin() as conn:
        skipped = bulk and skip_triggers(conn)
        cursor = conn.connection.dbapi_connection.cursor()
        if engine.dialect.name == "postgresql":
            with cursor.copy(f"COPY jobs ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            # A bulk load touches every index at random places: give it a page cache that holds them.
            cursor.execute("PRAGMA cache_size=-262144")
            cursor.executemany(f"INSERT INTO jobs ({', '.join(COLUMNS)}) "  # noqa: S608 (constant column names)
                               f"VALUES ({', '.join('?' * len(COLUMNS))})", rows)
            cursor.execute("PRAGMA cache_size=-2000")  # back to SQLite's default for the pooled connection
        cursor.close()
    rows.clear()
    return skipped


@contextmanager
def indexes_rebuilt_after(engine: Engine, table: str, rebuild: bool = True) -> Iterator[None]:
    """A bulk load without the table's secondary indexes, which are built again afterwards: one sort per
    index instead of a random insert per row and index. Their definitions come from the database's own
    catalog, so migration-made expression indexes come back exactly; constraint indexes stay."""
    if not rebuild:
        yield
        return
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            found = conn.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND "
                                         "tbl_name = ? AND sql IS NOT NULL", (table,)).all()
        else:
            found = conn.exec_driver_sql(
                "SELECT indexname, indexdef FROM pg_indexes i WHERE tablename = %(t)s AND NOT EXISTS "
                "(SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)", {"t": table}).all()
        for name, _sql in found:
            conn.exec_driver_sql(f'DROP INDEX "{name}"')
    try:
        yield
    finally:
        with engine.begin() as conn:
            for _name, sql in found:
                conn.exec_driver_sql(sql)
