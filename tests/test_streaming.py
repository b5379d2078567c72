"""Token streaming: the demo model streams word by word; `stream_tokens` yields each
model's text by task id as it comes, in Python (a langgraph dev recipe is in
tests/test_studio.py)."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from pathlib import Path

import pytest

from fanfold import PlanError, RunSettings, arun, stream_tokens
from fanfold.nodes.demo_model import DemoChatModel

REQUEST = "tea and coffee"


async def test_stream_tokens_yields_each_task_s_reply_in_pieces_as_they_run() -> None:
    stream = stream_tokens(
        REQUEST, settings=RunSettings(model="demo:latency=0.2", start_jitter_s=0)
    )
    pieces: dict[str | None, list[str]] = defaultdict(list)
    order: list[str | None] = []
    async for task_id, text in stream:
        pieces[task_id].append(text)
        order.append(task_id)
    out = stream.output
    assert out is not None and out.status == "ok"
    for r in out.results:
        assert len(pieces[r.task_id]) >= 3, r.task_id  # word by word, not one piece
        assert "".join(pieces[r.task_id]) == r.output
    assert "".join(pieces[None]) == out.answer  # the answer streams too, under None
    # t1 and t2 run in parallel: their pieces interleave.
    t1 = [i for i, t in enumerate(order) if t == "t1"]
    t2 = [i for i, t in enumerate(order) if t == "t2"]
    assert t2[0] < t1[-1] and t1[0] < t2[-1]


async def test_arun_on_token_sees_the_same_pieces_and_the_output_is_unchanged() -> None:
    settings = RunSettings(model="demo:latency=0.05", start_jitter_s=0)
    seen: dict[str | None, str] = defaultdict(str)

    def on_token(task_id: str | None, text: str) -> None:
        seen[task_id] += text

    streamed = await arun(REQUEST, settings=settings, on_token=on_token)
    plain = await arun(REQUEST, settings=settings)  # not streamed: the same answers
    assert [r.output for r in streamed.results] == [r.output for r in plain.results]
    assert streamed.answer == plain.answer
    assert streamed.metrics.tokens == plain.metrics.tokens  # usage comes with the last piece
    assert {t: seen[t] for t in ("t1", "t2")} == {
        r.task_id: r.output for r in streamed.results if r.task_id in ("t1", "t2")
    }


async def test_leaving_the_loop_early_cancels_the_run(tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    model = DemoChatModel(latency=0.3, log=str(log))
    stream = stream_tokens(REQUEST, settings=RunSettings(model=model, start_jitter_s=0))
    started = time.monotonic()
    async for _task_id, _text in stream:
        break  # the first piece is enough
    assert time.monotonic() - started < 5
    assert stream.output is None
    calls = len(log.read_text().splitlines())
    await asyncio.sleep(0.8)  # the run would have gone on to its other tasks and the answer
    assert len(log.read_text().splitlines()) == calls
    with pytest.raises(RuntimeError, match="once"):
        async for _ in stream:
            pass


async def test_a_failing_run_raises_from_the_loop() -> None:
    from fanfold import Plan, Task

    bad = Plan(tasks=[Task(id="t1", description="x", tools=["no_such_tool"])])
    with pytest.raises(PlanError, match="no_such_tool"):
        async for _ in stream_tokens("x", plan=bad):
            pass
