"""Big plans in hostile order: a linear check, once per plan, and linear bookkeeping."""

from __future__ import annotations

import time
from typing import Any

import pytest

from fanfold import RunSettings, arun
from fanfold.nodes import domain
from fanfold.nodes.domain import Plan, Task, structural_problems
from fanfold.nodes.errors import PlanError
from fanfold.nodes.policy import blocked_ids, can_still_succeed
from fanfold.nodes.reducer import skipped_results

N = 10_000


def _chain(n: int) -> list[dict[str, Any]]:
    """Return a chain t0 <- t1 <- ... as task data, listed backwards (dependents first)."""
    tasks = [
        {"id": f"t{i}", "description": f"step {i}", "depends_on": [f"t{i - 1}"] if i else []}
        for i in range(n)
    ]
    return tasks[::-1]


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the plan's structural checks (a list: one entry per check, its task count)."""
    seen: list[int] = []

    def spy(tasks: Any) -> list[str]:
        seen.append(len(tasks))
        return structural_problems(tasks)

    monkeypatch.setattr(domain, "structural_problems", spy)
    return seen


# --- the check is linear -----------------------------------------------------------------


@pytest.mark.alone  # a bound on wall time: no other test's load
def test_a_reversed_chain_of_10000_tasks_validates_in_under_2s() -> None:
    # networkx's find_cycle without a source searched afresh from every node: 2000
    # tasks listed backwards took 34 s per check.
    data = {"tasks": _chain(N)}
    started = time.perf_counter()
    plan = Plan.model_validate(data)
    generations = plan.generations()
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0, f"{elapsed:.2f} s"
    assert len(generations) == N and generations[0] == ["t0"]


@pytest.mark.alone  # a bound on wall time: no other test's load
def test_a_cycle_through_10000_reversed_tasks_is_named_in_under_2s() -> None:
    tasks = _chain(N)
    tasks[-1]["depends_on"] = [f"t{N - 1}"]  # t0 now needs the last task: one long cycle
    started = time.perf_counter()
    problems = structural_problems([Task.model_validate(t) for t in tasks])
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0, f"{elapsed:.2f} s"
    [problem] = problems
    assert problem.startswith(f"dependency cycle: t{N - 1} -> t0 -> t1 -> ")
    assert problem.count(" -> ") == N


# --- once per plan -----------------------------------------------------------------------


async def test_a_given_plan_is_checked_once_per_run(checks: list[int]) -> None:
    plan = Plan.model_validate({"tasks": _chain(300)})  # it enters here: the one check
    settings = RunSettings(model="demo:latency=0", max_tasks=300)
    out = await arun("", settings=settings, plan=plan)
    # The planner's validate_plan and the run's output hold the same, unchanged plan.
    assert checks == [300]
    assert out.status == "ok"
    assert [r.task_id for r in out.results] == [t.id for t in plan.tasks]


async def test_a_planned_run_checks_each_new_plan_once(checks: list[int]) -> None:
    # The demo plans 5 tasks, adds a follow-up in round 2 and declines in round 3.
    settings = RunSettings(model="demo:latency=0", max_rounds=3)
    out = await arun("tea, coffee and 2 + 3 cups", settings=settings)
    assert out.status == "ok" and out.plan is not None and len(out.plan.tasks) == 6
    assert checks == [5, 6]  # the model's plan, then the plan with round 2's task merged in


async def test_a_plan_changed_after_its_check_is_checked_again(checks: list[int]) -> None:
    settings = RunSettings(model="demo:latency=0")
    plan = Plan(tasks=[Task(id="a", description="do a"), Task(id="b", description="do b")])
    plan.tasks.append(Task(id="c", description="do c", depends_on=["ghost"]))
    with pytest.raises(PlanError, match="ghost"):
        await arun("", settings=settings, plan=plan)
    plan.tasks.pop()
    plan.tasks[0].depends_on.append("b")
    plan.tasks[1].depends_on.append("a")
    with pytest.raises(PlanError, match="dependency cycle: a -> b -> a"):
        await arun("", settings=settings, plan=plan)
    assert checks == [2, 3, 2]


def test_the_check_never_makes_plans_unequal() -> None:
    tasks = [Task(id="a", description="do a")]
    assert Plan.model_construct(tasks=list(tasks), rationale="") == Plan(tasks=list(tasks))


# --- bookkeeping over a failed chain -------------------------------------------------------


@pytest.mark.timeout(30)  # linear: a fraction of a second; the fixpoint took minutes
def test_a_failed_head_skips_a_reversed_chain_in_one_pass() -> None:
    n = 20_000
    # Unchecked: this test is about the bookkeeping alone (the check has its own above).
    plan = Plan.model_construct(tasks=[Task.model_validate(t) for t in _chain(n)])
    status = {"t0": "failed"}
    skipped = skipped_results(plan, status)
    # In plan order, each blamed on its own dependency.
    assert [r.task_id for r in skipped] == [f"t{i}" for i in range(n - 1, 0, -1)]
    assert skipped[-1].error is not None and skipped[-1].error.message == "`t0` failed"
    assert skipped[0].error is not None and skipped[0].error.message == f"`t{n - 2}` skipped"
    assert blocked_ids(plan, status) == {r.task_id for r in skipped}
    assert can_still_succeed(plan, status) == 0
    assert can_still_succeed(plan, {"t0": "ok", f"t{n - 2}": "timed_out"}) == n - 2
