"""A PostgreSQL server for the tests: `FANFOLD_TEST_POSTGRES_URL`, or one started here.

`.ci/run` starts one and sets the variable; without it, the session fixture starts a
throwaway server from a temporary data directory (and skips only when none can be
started at all, never under CI). Under pytest-xdist each worker gets a database of its
own on that server (`_database_of_this_worker`).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest


class PostgresUnavailable(Exception):
    """No PostgreSQL server could be started here."""


def _pg_bin_dir() -> Path:
    candidates = []
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).parent)
    candidates += sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for d in candidates:
        if all((d / name).exists() for name in ("initdb", "pg_ctl", "postgres")):
            return d
    msg = "no initdb, pg_ctl and postgres on PATH or in /usr/lib/postgresql/*/bin"
    raise PostgresUnavailable(msg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TempPostgres:
    """A throwaway PostgreSQL server on 127.0.0.1, from a temporary data directory."""

    def __init__(self, *, fsync: bool = False) -> None:
        self.fsync = fsync
        """Off for the tests (speed); the bench turns it on, as a real server runs."""
        self.bin = _pg_bin_dir()
        self.user: str | None = None
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            for name in ("postgres", "nobody"):
                with contextlib.suppress(KeyError):
                    pwd.getpwnam(name)
                    self.user = name
                    break
            if self.user is None or not shutil.which("runuser"):
                msg = "running as root with no `postgres`/`nobody` user or no `runuser`"
                raise PostgresUnavailable(msg)
        self.dir = Path(tempfile.mkdtemp(prefix="fanfold-pg-"))
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self.data = self.dir / "data"
        self.port = 0

    def _run(self, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bin / cmd[0]), *cmd[1:]]
        if self.user is not None:
            argv = ["runuser", "-u", self.user, "--", *argv]
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=False, cwd=self.dir
        )

    def start(self) -> str:
        init = self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "-N"
        )
        if init.returncode != 0:
            raise PostgresUnavailable(f"initdb failed: {init.stderr.strip()[-500:]}")
        errors = ""
        for _ in range(3):  # another process may take the free port first
            self.port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {self.port} "
                f"-c unix_socket_directories={self.dir} -c fsync={'on' if self.fsync else 'off'}"
            )
            started = self._run(
                "pg_ctl", "-D", str(self.data), "-l", str(self.dir / "server.log"),
                "-o", options, "-w", "-t", "30", "start",
            )  # fmt: skip
            if started.returncode == 0:
                break
            log = self.dir / "server.log"
            errors = started.stderr + (log.read_text()[-500:] if log.exists() else "")
        else:
            raise PostgresUnavailable(f"pg_ctl could not start a server: {errors.strip()}")
        import psycopg

        try:
            with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
                conn.execute("CREATE DATABASE fanfold")
        except psycopg.Error as exc:
            raise PostgresUnavailable(f"the server started but took no database: {exc}") from exc
        return self.url("fanfold")

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if self.port and (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL: `FANFOLD_TEST_POSTGRES_URL`, else a server started here.

    Skips only when no server can be started at all, and never under CI (`CI` set).
    """
    url = os.environ.get("FANFOLD_TEST_POSTGRES_URL")
    if url:
        with _database_of_this_worker(url) as own:
            yield own
        return
    server: TempPostgres | None = None
    try:
        server = TempPostgres()
        started = server.start()
    except BaseException as exc:
        if server is not None:
            server.stop()
        if not isinstance(exc, PostgresUnavailable):
            raise
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but no PostgreSQL could be started: {exc}")
        pytest.skip(f"no PostgreSQL could be started: {exc}")
    try:
        yield started  # a server of this process's own: nothing shared with another worker
    finally:
        server.stop()


@contextlib.contextmanager
def _database_of_this_worker(url: str) -> Iterator[str]:
    """Under pytest-xdist, a database of this worker's own on the server of `url`.

    Each worker creates (and drops at the end) a database named after the database of
    `url`, the worker and the test run, so workers of one run, and concurrent runs on
    one server, share no tables, thread ids or advisory locks (a lock's key is scoped
    to its database), and no two `setup()`s migrate one schema at once. Outside
    xdist, `url` itself.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        yield url
        return
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    base = parts.path.lstrip("/") or "fanfold"
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID", "")[:12]
    name = f"{base}_{worker}_{run}".lower()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            conn.execute(drop.format(sql.Identifier(name)))


@pytest.fixture(params=["sqlite", "postgres"])
def checkpoint_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A checkpoint location: a SQLite file, then the PostgreSQL URL (one test each)."""
    if request.param == "sqlite":
        return str(tmp_path / "run.sqlite")
    return str(request.getfixturevalue("postgres_url"))
