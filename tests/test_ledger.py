"""The ledger: kept up to date window by window, it must agree with a rebuild from scratch."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fanfold.nodes.domain import Plan, SubagentResult
from fanfold.nodes.ledger import MAX_LEDGERS, Ledger, ledger_for
from fanfold.nodes.reducer import skipped_results


def _plan(deps: list[list[int]]) -> Plan:
    tasks: list[dict[str, Any]] = [
        {"id": f"t{i}", "description": f"task {i}", "depends_on": [f"t{d}" for d in ds]}
        for i, ds in enumerate(deps)
    ]
    return Plan.model_validate({"tasks": tasks})


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    n = draw(st.integers(1, 12))
    deps = [sorted(draw(st.sets(st.integers(0, i - 1), max_size=3))) if i else [] for i in range(n)]
    return _plan(deps)


def _result(tid: str, status: str) -> SubagentResult:
    return SubagentResult(task_id=tid, status=status)  # type: ignore[arg-type]


def _from_scratch(plan: Plan, status: dict[str, str]) -> list[str]:
    return [
        t.id
        for t in plan.tasks
        if t.id not in status and all(status.get(d) == "ok" for d in t.depends_on)
    ]


@settings(max_examples=150, deadline=None)
@given(plans(), st.randoms(use_true_random=False), st.integers(1, 4))
def test_windows_fed_incrementally_match_a_rebuild(plan: Plan, rng: Any, window: int) -> None:
    ledgers: dict[int, Ledger] = {}
    results: list[SubagentResult] = []
    dispatched: list[str] = []
    while True:
        ledger, _, _ = ledger_for(ledgers, plan, results)
        status = dict(ledger.status)
        assert status == {r.task_id: r.status for r in results}
        ready = [t.id for t in ledger.take_ready(window)]
        expected = _from_scratch(plan, status)
        # The window is the first `window` ready tasks in plan order, never one twice.
        assert ready == expected[:window]
        assert not set(ready) & set(dispatched)
        if not ready:
            break
        dispatched += ready
        new = [_result(tid, rng.choice(["ok", "ok", "ok", "failed"])) for tid in ready]
        rng.shuffle(new)  # subagents finish in any order
        results = [*results, *new]
        skipped = skipped_results(plan, {r.task_id: r.status for r in results})
        ledger, _, rebuilt = ledger_for(ledgers, plan, results)
        assert not rebuilt  # appended results never force a rebuild
        ledger.append(skipped)
        results = [*results, *skipped]
    # Every task ends with a result or is blocked by one that is not ok.
    final = {r.task_id: r.status for r in results}
    assert set(final) == {t.id for t in plan.tasks}


def test_a_rewritten_or_foreign_list_rebuilds_the_ledger() -> None:
    plan = _plan([[], [0], []])
    ledgers: dict[int, Ledger] = {}
    first = [_result("t0", "ok")]
    ledger, new, rebuilt = ledger_for(ledgers, plan, first)
    assert rebuilt and new == first
    assert [t.id for t in ledger.take_ready()] == ["t1", "t2"]
    # The same results, but not the objects it saw: rebuilt, and t1, t2 are ready again.
    again, _, rebuilt = ledger_for(ledgers, plan, [_result("t0", "ok")])
    assert rebuilt and again is not ledger
    assert [t.id for t in again.take_ready()] == ["t1", "t2"]
    # A result that turns from ok to failed cannot be taken back incrementally.
    seen = [*again_results(again)]
    _, _, rebuilt = ledger_for(ledgers, plan, [*seen, _result("t0", "failed")])
    assert rebuilt


def again_results(ledger: Ledger) -> list[SubagentResult]:
    return list(ledger.by_id.values())


def test_a_scope_keeps_a_bounded_number_of_ledgers() -> None:
    ledgers: dict[int, Ledger] = {}
    plans = [_plan([[]]) for _ in range(MAX_LEDGERS + 5)]
    for plan in plans:
        ledger_for(ledgers, plan, [])
    assert len(ledgers) == MAX_LEDGERS
    # The newest are kept; an evicted plan's ledger is simply rebuilt.
    assert ledgers[id(plans[-1])].plan is plans[-1]
    _, _, rebuilt = ledger_for(ledgers, plans[0], [])
    assert rebuilt
