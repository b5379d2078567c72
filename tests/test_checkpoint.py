"""The SQLite saver Fanfold opens: task writes that arrive together share one commit."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from fanfold.graphs.checkpoint import GroupCommitSqliteSaver, open_checkpointer

CONFIG: Any = {"configurable": {"thread_id": "t", "checkpoint_ns": "", "checkpoint_id": "c"}}


async def test_concurrent_task_writes_are_committed_before_each_call_returns(
    tmp_path: Path,
) -> None:
    path = tmp_path / "w.sqlite"
    async with open_checkpointer(path) as saver:
        assert isinstance(saver, GroupCommitSqliteSaver)
        commits = 0
        commit = saver.conn.commit

        async def counted() -> None:
            nonlocal commits
            commits += 1
            await commit()

        saver.conn.commit = counted  # type: ignore[method-assign]
        config: Any = {
            "configurable": {"thread_id": "t", "checkpoint_ns": "", "checkpoint_id": "c"}
        }

        async def one(i: int) -> None:
            await saver.aput_writes(config, [("results", [i]), ("branch:to:reducer", None)], f"{i}")
            # Committed when the call returns: another connection already sees both rows.
            with sqlite3.connect(path) as conn:
                rows = conn.execute("select count(*) from writes where task_id = ?", (f"{i}",))
                assert rows.fetchone()[0] == 2

        await asyncio.gather(*(one(i) for i in range(200)))
        assert 1 <= commits < 200  # writes that came together shared a transaction
        with sqlite3.connect(path) as conn:
            assert conn.execute("select count(*) from writes").fetchone()[0] == 400
        # A second write of the same task and index is ignored, as the stock saver does.
        await saver.aput_writes(config, [("results", ["again"])], "0")
        with sqlite3.connect(path) as conn:
            assert conn.execute("select count(*) from writes").fetchone()[0] == 400


async def test_a_failed_commit_fails_every_write_of_its_batch(tmp_path: Path) -> None:
    async with open_checkpointer(tmp_path / "w.sqlite") as saver:
        config: Any = {
            "configurable": {"thread_id": "t", "checkpoint_ns": "", "checkpoint_id": "c"}
        }

        async def broken() -> None:
            raise sqlite3.OperationalError("disk I/O error")

        saver.conn.commit = broken  # type: ignore[method-assign]
        calls = [saver.aput_writes(config, [("results", [i])], f"{i}") for i in range(5)]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(o, sqlite3.OperationalError) for o in outcomes)
        with pytest.raises(sqlite3.OperationalError):
            await saver.aput_writes(config, [("results", [9])], "9")
