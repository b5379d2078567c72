"""ProgressBar on real demo runs: what it counts and what it prints."""

from __future__ import annotations

import io
import re
import sys
from typing import Any

import pytest

from fanfold.graphs.api import arun
from fanfold.graphs.progress import ProgressBar
from fanfold.nodes.context import RunSettings
from fanfold.nodes.errors import TaskFailedError
from fanfold.nodes.events import EVENT_KEY

REQUEST = "Compare tea, coffee and cocoa; estimate 3 * 120 cups"


def _bar() -> tuple[ProgressBar, io.StringIO]:
    out = io.StringIO()
    # mininterval=0: print every update, so the test sees each step.
    return ProgressBar(file=out, mininterval=0, ascii=True), out


def _frames(text: str) -> list[str]:
    return [f for f in re.split(r"[\r\n]", text) if f.strip()]


async def test_bar_advances_per_finished_task_and_closes_itself() -> None:
    bar, text = _bar()
    out = await arun(
        REQUEST,
        settings=RunSettings(model="demo:latency=0.01", max_concurrency=2),
        on_event=bar,
    )
    assert out.plan is not None and out.status == "ok"
    n = len(out.plan.tasks)
    assert bar.total == n == 6
    assert bar.finished == n
    assert bar.counts == out.metrics.counts
    assert bar.counts["ok"] == sum(bar.counts.values()) == 6
    assert bar.closed and bar.running == 0
    frames = _frames(text.getvalue())
    done = [int(m.group(1)) for f in frames if (m := re.search(rf"(\d+)/{n} ", f))]
    assert done[0] == 0 and done[-1] == n
    assert done == sorted(done), "the bar only moves forward"
    assert set(done) == set(range(n + 1)), "one step per finished task"
    assert any("running=2" in f for f in frames), "the postfix shows tasks running in parallel"
    assert not any("running=3" in f for f in frames), "max_concurrency=2 is never exceeded"
    assert frames[-1].rstrip().endswith("ok=6]")
    assert bar.summary() == "tasks: 6/6 finished (ok=6)"
    assert "finished (" not in text.getvalue()  # a text bar shows its last state itself


async def test_bar_counts_timeouts_and_skipped_tasks() -> None:
    bar, text = _bar()
    out = await arun(
        "alpha, beta",
        settings=RunSettings(model="demo:latency=0.3", task_timeout_s=0.1),
        on_event=bar,
    )
    assert out.status == "partial"
    assert bar.counts == out.metrics.counts
    assert bar.counts["timed_out"] == 2 and bar.counts["skipped"] == 2
    assert bar.closed and bar.finished == bar.total == 4
    assert _frames(text.getvalue())[-1].rstrip().endswith("timed_out=2 skipped=2]")


async def test_bar_as_context_manager_closes_when_fail_fast_stops_the_run() -> None:
    bar, _ = _bar()
    with pytest.raises(TaskFailedError) as caught, bar:
        await arun(
            "alpha, beta",
            settings=RunSettings(model="demo:latency=0.3", task_timeout_s=0.1, policy="fail_fast"),
            on_event=bar,
        )
    assert bar.closed
    assert bar.total == 4
    # The bar saw each task that ended before the run raised: the timeouts, and the
    # siblings the stop cancelled; the error has a result for every task.
    assert 1 <= bar.finished <= bar.total
    assert len(caught.value.results) == bar.total
    seen = {r.task_id: r.status for r in caught.value.results if r.task_id in bar._status}
    assert bar.counts["timed_out"] + bar.counts["cancelled"] == bar.finished
    assert "timed_out" in seen.values()


def _event(name: str, **fields: Any) -> dict[str, Any]:
    return {EVENT_KEY: name, **fields}


def test_a_task_finishing_twice_is_counted_once_with_its_last_status() -> None:
    bar, text = _bar()
    bar({"something": "else"})
    bar(_event("not_a_progress_event"))
    assert text.getvalue() == "", "other events do not open the bar"
    bar(_event("plan_ready", tasks=2, generations=1))
    bar(_event("task_started", task_id="a", kind="general", at="now"))
    bar(_event("task_finished", task_id="a", status="failed"))
    bar(_event("task_started", task_id="a", kind="general", at="now"))
    bar(_event("task_finished", task_id="a", status="ok"))
    assert bar.finished == 1 and bar.counts["ok"] == 1 and bar.counts["failed"] == 0
    assert not bar.closed
    bar(_event("task_finished", task_id="b", status="skipped"))
    assert bar.closed and bar.postfix() == "ok=1 skipped=1"
    before = text.getvalue()
    bar(_event("task_finished", task_id="c", status="ok"))
    assert text.getvalue() == before and bar.finished == 2, "a closed bar ignores events"


def test_progress_bar_names_the_viz_extra_when_tqdm_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    with pytest.raises(ImportError, match=r"fanfold\[viz\]"):
        ProgressBar()


async def test_events_arrive_while_the_run_goes_on_not_at_its_end() -> None:
    import time

    from fanfold import RunSettings, arun
    from tests.fakes import TaskScript, TaskScriptedModel

    plan = {
        "tasks": [
            {"id": "fast", "description": "x"},
            {"id": "slow", "description": "y"},
            {"id": "after", "description": "z", "depends_on": ["fast", "slow"]},
        ]
    }
    scripts = {
        "fast": TaskScript(latency=0.05),
        "slow": TaskScript(latency=0.6),
        "after": TaskScript(latency=0.3),
    }
    model = TaskScriptedModel(scripts=scripts, plan=plan)
    seen: list[tuple[float, str, str]] = []
    t0 = time.monotonic()

    def on_event(event: dict) -> None:
        seen.append((time.monotonic() - t0, event["fanfold"], event.get("task_id", "")))

    await arun("x", settings=RunSettings(model=model, start_jitter_s=0), on_event=on_event)
    end = time.monotonic() - t0
    at = {(name, tid): t for t, name, tid in seen}
    order = [(name, tid) for _, name, tid in seen]
    # In order: each task starts before it finishes; `after` starts after both inputs.
    for tid in ("fast", "slow", "after"):
        assert order.index(("task_started", tid)) < order.index(("task_finished", tid))
    assert order.index(("task_finished", "slow")) < order.index(("task_started", "after"))
    # Live: `fast` was reported finished while `slow` was still running, long before the end.
    assert at[("task_finished", "fast")] < at[("task_finished", "slow")] - 0.3
    assert at[("task_finished", "fast")] < end - 0.5
