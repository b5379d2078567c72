"""One scope per run: runs share no limits, stops, ledgers or counts; none outlives its run."""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from langchain_core.tools import tool
from langgraph.graph import START, StateGraph
from langgraph.runtime import RunControl, get_runtime
from typing_extensions import TypedDict

from fanfold import Plan, RunSettings, Task, ToolRegistry, arun
from fanfold.graphs import api
from fanfold.graphs.orchestrator import compile_orchestrator
from fanfold.graphs.scoped import ScopedGraph, ScopedStateGraph, part_of_run, run_control
from fanfold.nodes.scope import RunScope, ScopedControl
from fanfold.tools import calculator
from tests.fakes import TaskScript, TaskScriptedModel

ROOT = Path(__file__).resolve().parent.parent


def _plan(*ids: str) -> Plan:
    return Plan(tasks=[Task(id=i, description=f"do {i}", tools=[]) for i in ids])


async def test_two_runs_with_one_context_object_do_not_stop_each_other() -> None:
    # One settings object for both: run A meets its quorum at once; run B, slower,
    # must go on to its own quorum (it used to end with every task cancelled,
    # "quorum of 3 ok tasks reached", 0 ok: the scope was keyed by the settings).
    scripts = {f"a{i}": TaskScript(latency=0.01) for i in range(1, 6)}
    scripts |= {f"b{i}": TaskScript(latency=0.3) for i in range(1, 5)}
    settings = RunSettings(
        model=TaskScriptedModel(scripts=scripts), policy="quorum:3", start_jitter_s=0
    )
    graph = compile_orchestrator(synthesize_answer=False)
    first, second = await asyncio.gather(
        graph.ainvoke(
            {"request": "", "given_plan": _plan("a1", "a2", "a3", "a4", "a5")}, context=settings
        ),
        graph.ainvoke(
            {"request": "", "given_plan": _plan("b1", "b2", "b3", "b4")}, context=settings
        ),
    )
    assert first["status"] == second["status"] == "ok"
    assert sum(r.status == "ok" for r in first["results"]) >= 3
    ok_b = [r.task_id for r in second["results"] if r.status == "ok"]
    assert len(ok_b) >= 3, second["results"]
    assert second["metrics"].stop_reason in (None, "quorum of 3 ok tasks reached")


async def test_two_runs_without_a_context_given_one_plan_object_both_finish() -> None:
    # No context: both runs use the defaults (the demo model). They used to share a
    # process-wide default scope, and the second run returned no result at all.
    plan = Plan(tasks=[Task(id=f"t{i}", description=f"estimate {i} * 7") for i in range(1, 9)])
    graph = compile_orchestrator(synthesize_answer=False)
    outs = await asyncio.gather(
        graph.ainvoke({"request": "", "given_plan": plan}),
        graph.ainvoke({"request": "", "given_plan": plan}),
    )
    for out in outs:
        assert [r.task_id for r in out["results"]] == [t.id for t in plan.tasks]
        assert {r.status for r in out["results"]} == {"ok"}


async def test_tool_cache_counts_are_per_run_with_a_shared_registry() -> None:
    calls = 0

    def provider() -> list[object]:
        nonlocal calls
        calls += 1
        return [calculator]

    registry = ToolRegistry()
    registry.add_provider(provider, ttl_s=3600)  # type: ignore[arg-type]
    scripts = {t: TaskScript(latency=0.02, expression="6 * 7") for t in ("x", "y", "z")}
    plan = Plan(
        tasks=[Task(id=t, description=f"do {t}", tools=["calculator"]) for t in ("x", "y", "z")]
    )

    def settings() -> RunSettings:
        return RunSettings(
            model=TaskScriptedModel(scripts=scripts), tool_registry=registry, start_jitter_s=0
        )

    alone = (await arun("", settings=settings(), plan=plan)).metrics.tool_cache
    together = await asyncio.gather(
        arun("", settings=settings(), plan=plan), arun("", settings=settings(), plan=plan)
    )
    looks = alone["hits"] + alone["misses"]
    assert looks > 0
    for out in together:
        cache = out.metrics.tool_cache
        # Each run counts its own look-ups only, not the other's.
        assert cache["hits"] + cache["misses"] == looks, cache
    assert calls == 1  # one refresh for every run that shares the registry


class _S(TypedDict, total=False):
    x: int


async def test_a_graph_run_inside_a_node_is_a_run_of_its_own_unless_part_of_the_run() -> None:
    seen: list[RunControl | None] = []

    async def inner_node(state: _S) -> _S:
        seen.append(get_runtime().control)
        return {}

    inner = ScopedStateGraph(_S)
    inner.add_node("n", inner_node)
    inner.add_edge(START, "n")
    separate = inner.compile()
    a_part = part_of_run(inner.compile())  # as Fanfold runs the subagent, a delegation
    which: list[ScopedGraph[_S, None, _S, _S]] = []

    async def outer_node(state: _S) -> _S:
        await which[-1].ainvoke({"x": 1})
        return {}

    outer = StateGraph(_S)  # someone's graph calling a Fanfold graph in a node or tool
    outer.add_node("o", outer_node)
    outer.add_edge(START, "o")
    compiled_outer = outer.compile()

    for graph in (separate, a_part):
        which.append(graph)
        for enclosing in (ScopedControl(), RunControl()):
            await compiled_outer.ainvoke({"x": 0}, control=enclosing)
            got = seen[-1]
            assert isinstance(got, ScopedControl)
            if graph is a_part and isinstance(enclosing, ScopedControl):
                assert got is enclosing  # a part of a Fanfold run shares its scope
            else:
                # A run of its own (an `arun` inside a tool of another run, say), whose
                # drains still reach it through the enclosing run's control.
                assert got is not enclosing and got.inner is enclosing


async def test_an_arun_inside_a_tool_of_another_run_is_a_run_of_its_own() -> None:
    inner_out: list[str] = []

    @tool
    async def ask_a_team(question: str) -> str:
        """Run a small team on a question."""
        model = TaskScriptedModel(scripts={"q": TaskScript(latency=0)})
        out = await arun(
            "",
            settings=RunSettings(model=model, policy="quorum:1", start_jitter_s=0),
            plan=Plan(tasks=[Task(id="q", description=question, tools=[])]),
        )
        inner_out.append(out.status)
        return out.results[0].output

    outer_model = TaskScriptedModel(
        scripts={
            "a": TaskScript(latency=0, call=("ask_a_team", {"question": "why"})),
            "b": TaskScript(latency=0.2),
        }
    )
    settings = RunSettings(model=outer_model, tools=[ask_a_team], start_jitter_s=0)
    plan = Plan(
        tasks=[
            Task(id="a", description="x", tools=["ask_a_team"]),
            Task(id="b", description="y", tools=[]),
        ]
    )
    out = await arun("", settings=settings, plan=plan)
    # The inner run met its own quorum: it did not stop the outer (settle) run.
    assert inner_out == ["ok"]
    assert [(r.task_id, r.status) for r in out.results] == [("a", "ok"), ("b", "ok")]
    assert out.metrics.stop_reason is None


def test_a_run_gets_a_control_of_its_own_wrapping_one_it_was_given() -> None:
    mine = run_control(None)
    assert isinstance(mine, ScopedControl) and mine.scope is None
    assert run_control(None) is not mine  # every run its own
    given = RunControl()
    wrapped = run_control(given)
    assert isinstance(wrapped, ScopedControl) and wrapped.inner is given
    given.request_drain("deploy")  # a drain asked of the caller's control reaches the run
    assert wrapped.drain_requested and wrapped.drain_reason == "deploy"
    assert run_control(wrapped) is wrapped


async def test_a_drain_requested_mid_run_stops_the_run() -> None:
    from langgraph.errors import GraphDrained

    given = RunControl()
    scripts = {f"t{i}": TaskScript(latency=0.2) for i in range(1, 5)}
    model = TaskScriptedModel(scripts=scripts)
    plan = Plan(
        tasks=[Task(id="t1", description="x", tools=[])]
        + [Task(id=f"t{i}", description="x", tools=[], depends_on=["t1"]) for i in range(2, 5)]
    )
    # Not the eager dispatch: t2..t4 are sent only after t1's step, where a drain stops.
    graph = compile_orchestrator(synthesize_answer=False, checkpoint_granularity="step")
    run = asyncio.ensure_future(
        graph.ainvoke(
            {"request": "", "given_plan": plan},
            context=RunSettings(model=model, start_jitter_s=0),
            control=given,
        )
    )
    await asyncio.sleep(0.05)
    given.request_drain("maintenance")
    with pytest.raises(GraphDrained):
        await asyncio.wait_for(run, timeout=10)
    assert "t2" not in model.recorder.calls  # drained after t1's step: nothing more ran


async def test_the_approval_graph_keeps_no_thread_after_a_run() -> None:
    model = TaskScriptedModel(
        scripts={"a": TaskScript(latency=0.01)},
        plan={"tasks": [{"id": "a", "description": "x", "tools": []}]},
    )
    settings = RunSettings(model=model, approve_plan=True, start_jitter_s=0)
    for _ in range(3):
        out = await arun("x", settings=settings, on_approval=lambda plan: "accept")
        assert out.status == "ok"
    saver = api._default_graph(True, memory=True).checkpointer
    assert getattr(saver, "storage", None) == {}  # every run's thread was dropped


async def test_a_scope_dies_with_its_run() -> None:
    import weakref

    scopes: list[weakref.ref[RunScope]] = []
    original = RunScope.__init__

    def tracking(self: RunScope, settings: RunSettings, **kwargs: Any) -> None:
        original(self, settings, **kwargs)
        scopes.append(weakref.ref(self))

    RunScope.__init__ = tracking  # type: ignore[method-assign]
    try:
        model = TaskScriptedModel(scripts={t: TaskScript(latency=0.01) for t in ("a", "b")})
        out = await arun("", settings=RunSettings(model=model), plan=_plan("a", "b"))
        assert out.status == "ok"
    finally:
        RunScope.__init__ = original  # type: ignore[method-assign]
    del out
    gc.collect()
    assert len(scopes) == 1 and scopes[0]() is None


LEAK_SCRIPT = textwrap.dedent(
    """
    import asyncio, gc, json, os, sys

    from fanfold import RunSettings, Task, execute_tasks_parallel
    from fanfold.nodes.domain import SubagentResult
    from fanfold.nodes.ledger import Ledger
    from fanfold.nodes.scope import RunScope
    from fanfold.nodes import models

    N, RUNS = int(sys.argv[1]), int(sys.argv[2])
    PAGE = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE

    def live(kind: type) -> int:
        return sum(1 for o in gc.get_objects() if isinstance(o, kind))

    tasks = [Task(id=f"t{i}", description=f"write part {i}", kind="writer") for i in range(N)]
    report = []
    for i in range(RUNS):
        async def one() -> int:
            results = await execute_tasks_parallel(
                tasks, model="demo:latency=0", max_concurrency=50,
                settings=RunSettings(start_jitter_s=0),
            )
            return sum(r.status == "ok" for r in results)
        ok = asyncio.run(one())
        gc.collect()
        loops = [o for o in gc.get_objects() if isinstance(o, asyncio.AbstractEventLoop)]
        report.append({
            "ok": ok, "rss": rss(), "scopes": live(RunScope), "ledgers": live(Ledger),
            "results": live(SubagentResult), "loops": len(loops),
            "loop_models": len(models._LOOP_MODELS),
        })
    print(json.dumps(report))
    """
)


@pytest.mark.slow
def test_ten_runs_of_2000_tasks_leave_nothing_behind(tmp_path: Path) -> None:
    script = tmp_path / "leak.py"
    script.write_text(LEAK_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), "2000", "10"],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert [r["ok"] for r in report] == [2000] * 10
    for r in report:
        # Nothing of a finished run is reachable: no scope, ledger, result, event loop
        # or per-loop model client.
        assert (r["scopes"], r["ledgers"], r["results"], r["loops"], r["loop_models"]) == (
            0,
            0,
            0,
            0,
            0,
        ), r
    growth = report[9]["rss"] - report[1]["rss"]
    assert growth < 10 * 2**20, [r["rss"] for r in report]
