"""Durable runs: open a checkpointer from a location (a SQLite path or a Postgres URL)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver

from fanfold.graphs.serde import allow_fanfold_types

POSTGRES_PREFIXES = ("postgres://", "postgresql://")


def is_postgres(location: str) -> bool:
    """Tell whether a checkpoint location is a PostgreSQL URL."""
    return location.startswith(POSTGRES_PREFIXES)


@contextlib.asynccontextmanager
async def open_checkpointer(location: str | Path) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """Open an async checkpointer: a SQLite file (the embedded default) or PostgreSQL.

    `postgresql://user@host:port/db` uses langgraph-checkpoint-postgres (the
    `postgres` extra) and creates its tables on first use; anything else is a
    SQLite file path, created if missing.

    Raises:
        ImportError: a Postgres URL without the `postgres` extra installed.
    """
    text = str(location)
    if is_postgres(text):
        try:
            from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        except ImportError as exc:  # pragma: no cover - the dev extra installs it
            msg = "a Postgres checkpoint needs `pip install 'fanfold[postgres]'`"
            raise ImportError(msg) from exc
        async with AsyncPostgresSaver.from_conn_string(text) as pg_saver:
            await pg_saver.setup()
            yield allow_fanfold_types(pg_saver)
        return
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    Path(text).parent.mkdir(parents=True, exist_ok=True)
    async with AsyncSqliteSaver.from_conn_string(text) as saver:
        yield allow_fanfold_types(saver)
