import os
import sqlite3
import subprocess
import sys

from sqlalchemy import text

from services.store.db import make_engine


def test_sqlite_runs_with_wal_busy_timeout_and_foreign_keys(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 5000


def test_dashboard_queries_use_indexes(portal):
    with portal.jobs.session() as s:
        plan = s.execute(text(
            "EXPLAIN QUERY PLAN SELECT * FROM jobs WHERE status_group='Completed' ORDER BY id DESC LIMIT 11"
        )).all()
    detail = " ".join(str(r[-1]) for r in plan)
    assert "ix_jobs_group_id" in detail and "TEMP B-TREE" not in detail


def test_online_backup_while_the_portal_runs_holds_every_job(portal, user, workspace_script, tmp_path):
    from services.store.backup import backup

    script = workspace_script("quick.py", "print('loss=0.5')\n")
    ids = [portal.jobs.submit(user, {"name": f"b{i}", "script": script}) for i in range(3)]
    dest = backup(portal.settings, tmp_path / "backups" / "portal-backup.db")
    with sqlite3.connect(dest) as conn:
        assert sorted(r[0] for r in conn.execute("SELECT id FROM jobs")) == sorted(ids)
    # The admin's command, as docs/admin.md gives it.
    env = {**os.environ, "PORTAL_DATA_DIR": str(portal.settings.data_dir)}
    out = subprocess.run([sys.executable, "-m", "services.store.backup", str(tmp_path / "second.db")],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0 and "backed up to" in out.stdout, out.stderr
    live = str(portal.settings.data_dir / "portal.db")
    refused = subprocess.run([sys.executable, "-m", "services.store.backup", live],
                             capture_output=True, text=True, timeout=60, env=env)
    assert refused.returncode == 1 and "must not overwrite" in refused.stderr
