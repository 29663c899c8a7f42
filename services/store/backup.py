"""A consistent copy of the portal's SQLite database, taken while the portal runs (SQLite's online backup).

    python -m services.store.backup /data/backup-2026-11-26.db

With PostgreSQL (``PORTAL_DATABASE_URL``) use ``pg_dump`` instead: this refuses with a sentence.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

from sqlalchemy.engine import make_url

from services.config import Settings, get_settings


def backup(settings: Settings, dest: Path) -> Path:
    url = make_url(settings.sqlalchemy_url)
    if url.get_backend_name() != "sqlite" or not url.database:
        raise ValueError("The database is not a SQLite file: back it up with the database's own tools (pg_dump).")
    source = Path(url.database)
    if not source.is_file():
        raise ValueError(f"There is no database at {source} yet.")
    dest = dest.expanduser().resolve()
    if dest == source.resolve():
        raise ValueError("The backup must not overwrite the live database.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    try:
        dst = sqlite3.connect(dest)
        try:
            src.backup(dst, pages=1024)  # in steps, so the portal's writers are never blocked for long
        finally:
            dst.close()
    finally:
        src.close()
    return dest


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m services.store.backup DESTINATION.db", file=sys.stderr)
        return 2
    try:
        out = backup(get_settings(), Path(argv[0]))
    except (ValueError, sqlite3.Error) as exc:
        print(f"backup failed: {exc}", file=sys.stderr)
        return 1
    print(f"backed up to {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
