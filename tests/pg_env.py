"""A throwaway PostgreSQL cluster for the test session (Debian's postgresql package: `make postgresql`).

It lives in a temporary directory, listens only on 127.0.0.1 (a free port) and on a Unix socket inside that
directory, runs with fsync off, and is stopped with `pg_ctl stop -m immediate` at the end. As root, initdb and
the server run as the unprivileged `postgres` user that the package creates. Each test gets its own database.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SUPERUSER = "postgres"
START_TIMEOUT_S = 60


def find_bindir() -> Path | None:
    """The newest /usr/lib/postgresql/N/bin that has initdb and pg_ctl."""
    found = [d / "bin" for d in Path("/usr/lib/postgresql").glob("*") if d.name.isdigit()]
    found = [d for d in found if (d / "initdb").is_file() and (d / "pg_ctl").is_file()]
    return max(found, key=lambda d: int(d.parent.name)) if found else None


def unavailable(why: str) -> None:
    """No server to test against: a failure in CI (which must provide one), one skip line elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must provide Debian's postgresql (make postgresql): {why}", pytrace=False)
    pytest.skip(f"PostgreSQL tests need Debian's postgresql (make postgresql): {why}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgServer:
    bindir: Path
    root: Path
    port: int
    password: str
    run_as: list[str]
    _names: itertools.count = field(default_factory=lambda: itertools.count(1))
    _running: bool = True

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{dbname}"

    def _admin(self):  # a psycopg connection to the maintenance database, in autocommit
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, password=self.password,
                               dbname="postgres", autocommit=True, connect_timeout=10)

    def create_database(self) -> str:
        """A new empty database (a copy of template0: a file copy, no WAL replay of a template's contents)."""
        name = f"t{os.getpid()}_{next(self._names)}"
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 ENCODING \'UTF8\'')
        return name

    def drop_database(self, name: str) -> None:
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self, remove: bool = True) -> None:
        """Stop this cluster (and only it) at once, then remove its files."""
        if self._running and (self.datadir / "postmaster.pid").exists():
            subprocess.run([*self.run_as, str(self.bindir / "pg_ctl"), "stop", "-D", str(self.datadir), "-m",
                            "immediate", "-w"], cwd=self.root, capture_output=True, timeout=60, check=False)
        if remove:
            self._running = False
            shutil.rmtree(self.root, ignore_errors=True)


def _run(cmd: list[str], cwd: Path, what: str) -> None:
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=START_TIMEOUT_S, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{what} failed ({out.returncode}): {out.stdout[-2000:]}{out.stderr[-2000:]}")


def start_server() -> PgServer:
    """initdb + pg_ctl start in a new temporary directory; skips (or fails under CI) without the binaries."""
    bindir = find_bindir()
    if bindir is None:
        unavailable("no initdb/pg_ctl under /usr/lib/postgresql/*/bin")
    run_as: list[str] = []
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:  # initdb refuses to run as root
        try:
            owner = pwd.getpwnam(SUPERUSER)
        except KeyError:
            unavailable("running as root, and there is no 'postgres' system user to run the server as")
        runuser = shutil.which("runuser")
        if runuser is None:
            unavailable("running as root without runuser (util-linux) to drop to the 'postgres' user")
        run_as = [runuser, "-u", SUPERUSER, "--"]

    root = Path(tempfile.mkdtemp(prefix="portal-pg-"))
    try:
        (root / "socket").mkdir(mode=0o700)
        password = secrets.token_urlsafe(24)
        pwfile = root / "pwfile"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        if owner is not None:
            for path in (root, root / "socket", pwfile):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        # Unix socket (0700 directory): trust; TCP on 127.0.0.1: this session's random password.
        _run([*run_as, str(bindir / "initdb"), "-D", str(root / "data"), "-U", SUPERUSER, "--pwfile", str(pwfile),
              "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"],
             root, "initdb")
        pwfile.unlink()
        with (root / "data" / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# tests/pg_env.py: a throwaway test cluster\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{root / 'socket'}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "shared_buffers = 32MB\nmax_connections = 200\n"
                "logging_collector = off\n"
            )
        last_error = ""
        for _ in range(3):  # the free port may be taken between choosing it and binding it
            port = _free_port()
            server = PgServer(bindir, root, port, password, run_as)
            try:
                _run([*run_as, str(bindir / "pg_ctl"), "start", "-D", str(root / "data"), "-w",
                      "-t", str(START_TIMEOUT_S), "-l", str(root / "server.log"), "-o", f"-p {port}"],
                     root, "pg_ctl start")
            except RuntimeError as exc:
                last_error = f"{exc}\n{_tail(root / 'server.log')}"
                server.stop(remove=False)
                continue
            atexit.register(server.stop)  # also when the session ends without running the fixture's teardown
            return server
        raise RuntimeError(f"PostgreSQL did not start: {last_error}")
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def _tail(path: Path, chars: int = 2000) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-chars:]
    return ""
