"""One run per thread at a time: the lease a run, resume or rerun holds on its thread.

Two processes resuming one thread would each run every remaining task: every model
call and tool side effect twice. So whatever runs a checkpointed thread first takes
its lease, and a second taker fails at once with `ThreadBusy`:

- in one process, a table of the threads its runs hold (per checkpoint store);
- PostgreSQL: a session-level advisory lock (`pg_try_advisory_lock`) on a key derived
  from the thread id, held on a session of its own to the saver's server (never the
  saver's connection, nor one of its pool's);
  the server releases it when the session ends, so a killed process frees it;
- SQLite: an exclusive `flock` on a small file per thread, in a folder beside the
  database (`run.sqlite.leases/`); the kernel releases it when the holder's process
  ends, however it ends, and the file names the holder (pid, host, since when);
- any other saver (in memory, your own): the in-process table only.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import inspect
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver

from fanfold.nodes.errors import ThreadBusy

_HELD: dict[tuple[str, str], str] = {}
"""The threads this process's runs hold: (store, thread id) -> who holds it."""


def _digest(thread_id: str) -> bytes:
    return hashlib.sha256(f"fanfold-thread:{thread_id}".encode()).digest()


def advisory_key(thread_id: str) -> int:
    """Return the PostgreSQL advisory-lock key of a thread: a signed 64-bit integer."""
    return int.from_bytes(_digest(thread_id)[:8], "big", signed=True)


def lease_file(database: str | Path, thread_id: str) -> Path:
    """Return the lock file of a thread of a SQLite database."""
    db = Path(database)
    return db.with_name(db.name + ".leases") / f"{_digest(thread_id).hex()[:32]}.lock"


async def _sqlite_file(saver: BaseCheckpointSaver[Any]) -> str | None:
    """Return the database file of an `AsyncSqliteSaver` (None: in memory, or not SQLite)."""
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    if not isinstance(saver, AsyncSqliteSaver):
        return None
    async with saver.conn.execute("PRAGMA database_list") as cursor:
        rows = await cursor.fetchall()
    main = next((row[2] for row in rows if row[1] == "main"), "")
    return str(main) or None  # SQLite gives the absolute path; "" in memory


def _postgres(saver: BaseCheckpointSaver[Any]) -> Any:
    """Return the saver's psycopg connection or pool when it is a Postgres saver."""
    try:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    except ImportError:  # pragma: no cover - the postgres extra is not installed
        return None
    return saver.conn if isinstance(saver, AsyncPostgresSaver) else None


@contextlib.contextmanager
def _flock(path: Path, thread_id: str) -> Iterator[None]:
    """Hold an exclusive lock on `path` (made if missing) or raise `ThreadBusy`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_of(fd)
            os.close(fd)
            raise ThreadBusy(thread_id, holder) from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # a holder removed the file as it let go: lock the new one
    try:
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # still locked: nobody else holds this file
        os.close(fd)


def _holder_of(fd: int) -> str:
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"{}")
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(record["since"])))
        return f"process {int(record['pid'])} on {record['host']} (since {since})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextlib.asynccontextmanager
async def _advisory_lock(conn: Any, thread_id: str) -> AsyncIterator[None]:
    """Hold a session-level advisory lock on the thread's key, or raise `ThreadBusy`.

    On a session of its own to the saver's server, never on the saver's connection: a
    run cancelled mid-query can leave that connection busy, and a pool's connections
    would be taken from the checkpoint writes for a run's whole length. It unlocks at
    the end, and closing the session lets go of the lock whatever state the run ended in.
    """
    import psycopg

    own = await psycopg.AsyncConnection.connect(await _conninfo(conn), autocommit=True)
    async with own:
        key = advisory_key(thread_id)
        cursor = await own.execute("SELECT pg_try_advisory_lock(%s)", (key,))
        if not _first(await cursor.fetchone()):
            raise ThreadBusy(thread_id, await _backend_holding(own, key))
        try:
            yield
        finally:
            # Let go before closing: a closed session's backend releases its locks only
            # as it exits, after `close()` returned, and a resume right after would find
            # the thread still held. If this fails (cancelled), closing lets go later.
            with contextlib.suppress(Exception):
                await own.execute("SELECT pg_advisory_unlock(%s)", (key,))


async def _conninfo(conn: Any) -> str:
    """Return the connection string of a psycopg connection or pool (password included)."""
    from psycopg.conninfo import make_conninfo
    from psycopg_pool import AsyncConnectionPool

    if isinstance(conn, AsyncConnectionPool):
        info = conn.conninfo() if callable(conn.conninfo) else conn.conninfo
        return str(await info if inspect.isawaitable(info) else info)
    params = conn.info.get_parameters()  # host, port, dbname, user...: no password
    password = conn.pgconn.password
    if password:
        params["password"] = password.decode()
    return make_conninfo("", **params)


def _first(row: Any) -> Any:
    return row[0] if row else None  # the lease's own session returns plain tuples


async def _backend_holding(conn: Any, key: int) -> str:
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    query = (
        "SELECT l.pid FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted"
        " AND l.classid = %s::bigint::oid AND l.objid = %s::bigint::oid AND l.objsubid = 1"
    )
    try:
        cursor = await conn.execute(query, (unsigned >> 32, unsigned & 0xFFFFFFFF))
        pid = _first(await cursor.fetchone())
    except Exception:  # noqa: BLE001 - a nicer message only
        pid = None
    return f"PostgreSQL session {pid}" if pid else "another PostgreSQL session"


async def _store(saver: BaseCheckpointSaver[Any]) -> tuple[str, str | None, Any]:
    """Return the store's identity, its SQLite file (if any) and its Postgres connection."""
    path = await _sqlite_file(saver)
    if path is not None:
        return f"sqlite:{path}", path, None
    conn = _postgres(saver)
    if conn is not None:
        return f"postgres:{id(conn)}", None, conn
    return f"saver:{id(saver)}", None, None


@contextlib.asynccontextmanager
async def thread_lease(saver: Any, thread_id: str) -> AsyncIterator[None]:
    """Hold the lease on a thread of a checkpoint store for as long as the block runs.

    Raises:
        ThreadBusy: another run holds it (in this process or another one).
    """
    if not isinstance(saver, BaseCheckpointSaver):
        yield  # no checkpointer: no thread to share
        return
    store, path, conn = await _store(saver)
    key = (store, thread_id)
    if key in _HELD:
        raise ThreadBusy(thread_id, _HELD[key])
    _HELD[key] = "another run in this process"
    try:
        if path is not None:
            with _flock(lease_file(path, thread_id), thread_id):
                yield
        elif conn is not None:
            async with _advisory_lock(conn, thread_id):
                yield
        else:
            yield
    finally:
        _HELD.pop(key, None)
