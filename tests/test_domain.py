"""Domain rules: plan validation, the plan's graph, overlap of intervals, usage, errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from fanfold.nodes.domain import (
    ErrorInfo,
    Plan,
    SubagentResult,
    Task,
    Usage,
    peak_overlap,
    structural_problems,
    validate_plan,
)
from fanfold.nodes.errors import FanfoldError, PlanError

KINDS = ["general", "analyst"]
TOOLS = ["calculator", "text_stats"]


def _task(tid: str, *deps: str, **kw: Any) -> Task:
    return Task(id=tid, description=f"do {tid}", depends_on=list(deps), **kw)


def _unchecked(*tasks: Task) -> Plan:
    """Return a plan that skipped its own validator, as a model might hand one over."""
    return Plan.model_construct(tasks=list(tasks), rationale="")


def _problems(plan: Plan, *, max_tasks: int = 10) -> list[str]:
    with pytest.raises(PlanError) as info:
        validate_plan(plan, kinds=KINDS, tools=TOOLS, max_tasks=max_tasks)
    return info.value.problems


# --- each rule alone -------------------------------------------------------------------


def test_empty_plan_is_one_problem() -> None:
    [problem] = _problems(_unchecked())
    assert "no tasks" in problem


def test_duplicate_ids_are_named() -> None:
    [problem] = _problems(_unchecked(_task("a"), _task("b"), _task("a")))
    assert "duplicate" in problem and "'a'" in problem and "'b'" not in problem


def test_unknown_dependency_names_task_and_dependency() -> None:
    [problem] = _problems(_unchecked(_task("a"), _task("b", "ghost")))
    assert "`b`" in problem and "ghost" in problem


def test_self_dependency_names_the_task() -> None:
    [problem] = _problems(_unchecked(_task("a"), _task("b", "b")))
    assert "`b`" in problem and "itself" in problem


def test_cycle_names_its_members_only() -> None:
    plan = _unchecked(_task("root"), _task("x", "z", "root"), _task("y", "x"), _task("z", "y"))
    [problem] = _problems(plan)
    assert problem.startswith("dependency cycle")
    for member in ("x", "y", "z"):
        assert member in problem
    assert "root" not in problem


def test_unknown_agent_kind_names_task_and_kind() -> None:
    [problem] = _problems(_unchecked(_task("a"), _task("b", kind="wizard")))
    assert "`b`" in problem and "`wizard`" in problem and "analyst" in problem


def test_unknown_tool_names_task_and_tool() -> None:
    [problem] = _problems(_unchecked(_task("a", tools=["calculator", "shell"])))
    # Only the unknown name is blamed; the known ones are listed as a hint.
    assert "`a`" in problem and "(s) ['shell'] (known" in problem


def test_more_than_max_tasks() -> None:
    [problem] = _problems(_unchecked(_task("a"), _task("b"), _task("c")), max_tasks=2)
    assert "3 tasks" in problem and "max_tasks=2" in problem


def test_exactly_max_tasks_is_fine() -> None:
    plan = Plan(tasks=[_task("a"), _task("b")])
    assert validate_plan(plan, kinds=KINDS, tools=TOOLS, max_tasks=2) is plan


def test_every_problem_is_listed_at_once() -> None:
    plan = _unchecked(
        _task("a"),
        _task("a", "ghost"),
        _task("b", kind="wizard"),
        _task("c", tools=["shell"]),
    )
    problems = _problems(plan, max_tasks=3)
    assert len(problems) == 5, problems
    text = str(PlanError(problems))
    for needle in ("duplicate", "ghost", "wizard", "shell", "max_tasks=3"):
        assert needle in text
    assert isinstance(PlanError(problems), FanfoldError)


def test_a_cycle_is_listed_along_with_other_problems() -> None:
    # The planner gets one repair round: a cycle it only hears about after fixing
    # an unknown dependency can no longer be repaired.
    plan = _unchecked(_task("a", "ghost"), _task("b", "c"), _task("c", "b"))
    problems = _problems(plan)
    assert any("ghost" in p for p in problems), problems
    assert any("cycle" in p and "b" in p and "c" in p for p in problems), problems


def test_structural_problems_of_a_valid_dag_is_empty() -> None:
    assert structural_problems([_task("a"), _task("b", "a")]) == []


# --- Plan construction -----------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        {"tasks": []},
        {"tasks": [{"id": "a", "description": "x"}, {"id": "a", "description": "y"}]},
        {"tasks": [{"id": "a", "description": "x", "depends_on": ["a"]}]},
        {"tasks": [{"id": "a", "description": "x", "depends_on": ["b"]}]},
        {
            "tasks": [
                {"id": "a", "description": "x", "depends_on": ["b"]},
                {"id": "b", "description": "y", "depends_on": ["a"]},
            ]
        },
        {"tasks": [{"id": "", "description": "x"}]},
        {"tasks": [{"id": "a", "description": ""}]},
        {"tasks": [{"id": "a", "description": "x", "timeout_s": 0}]},
        {"tasks": "not a list"},
    ],
    ids=[
        "empty",
        "dupe",
        "self",
        "unknown-dep",
        "cycle",
        "empty-id",
        "empty-desc",
        "timeout",
        "type",
    ],
)
def test_plan_from_invalid_data_raises_validation_error(data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Plan.model_validate(data)


def test_plan_validation_error_carries_the_problem() -> None:
    with pytest.raises(ValidationError, match="depends on unknown task"):
        Plan(tasks=[_task("a", "nope")])


# --- graph and generations -------------------------------------------------------------


def _diamond() -> Plan:
    # Ids deliberately not in sorted order: generations follow the plan.
    return Plan(
        tasks=[
            _task("zeta"),
            _task("alpha"),
            _task("mid", "zeta", "alpha"),
            _task("beta"),
            _task("end", "mid", "beta"),
        ]
    )


def test_graph_has_a_node_per_task_and_edges_from_dependency() -> None:
    g = _diamond().graph()
    assert set(g.nodes) == {"zeta", "alpha", "mid", "beta", "end"}
    assert set(g.edges) == {("zeta", "mid"), ("alpha", "mid"), ("mid", "end"), ("beta", "end")}
    assert g.nodes["mid"]["task"].depends_on == ["zeta", "alpha"]


def test_generations_are_in_plan_order() -> None:
    assert _diamond().generations() == [["zeta", "alpha", "beta"], ["mid"], ["end"]]


def test_task_lookup_and_order() -> None:
    plan = _diamond()
    assert plan.task("mid").id == "mid"
    with pytest.raises(KeyError):
        plan.task("nope")
    assert plan.order() == {"zeta": 0, "alpha": 1, "mid": 2, "beta": 3, "end": 4}


# --- peak_overlap ----------------------------------------------------------------------

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _span(tid: str, start: float | None, end: float | None) -> SubagentResult:
    return SubagentResult(
        task_id=tid,
        status="ok",
        started_at=None if start is None else T0 + timedelta(seconds=start),
        ended_at=None if end is None else T0 + timedelta(seconds=end),
    )


def test_peak_overlap_counts_the_most_at_once() -> None:
    spans = [_span("a", 0, 10), _span("b", 1, 3), _span("c", 2, 4), _span("d", 4, 6)]
    assert peak_overlap(spans) == 3


def test_touching_intervals_do_not_overlap() -> None:
    assert peak_overlap([_span("a", 0, 1), _span("b", 1, 2), _span("c", 2, 3)]) == 1
    # Given in reverse order, too.
    assert peak_overlap([_span("c", 2, 3), _span("b", 1, 2), _span("a", 0, 1)]) == 1


def test_a_zero_length_interval_still_counts() -> None:
    # on_subagent_error gives a failed task started_at == ended_at; it still ran.
    assert peak_overlap([_span("a", 5, 5)]) == 1
    assert peak_overlap([_span("a", 0, 10), _span("b", 5, 5)]) == 2


def test_peak_overlap_ignores_results_without_times() -> None:
    spans = [_span("a", 0, 2), _span("b", None, None), _span("c", 1, None), _span("d", 1, 3)]
    assert peak_overlap(spans) == 2
    assert peak_overlap([]) == 0


# --- Usage and ErrorInfo ---------------------------------------------------------------


def test_usage_adds_field_by_field() -> None:
    a = Usage(input_tokens=1, output_tokens=2, total_tokens=3)
    b = Usage(input_tokens=10, output_tokens=20, total_tokens=30)
    assert a + b == Usage(input_tokens=11, output_tokens=22, total_tokens=33)
    assert a == Usage(input_tokens=1, output_tokens=2, total_tokens=3)  # operands untouched


def test_usage_total() -> None:
    usages = [Usage(input_tokens=i, output_tokens=2 * i, total_tokens=3 * i) for i in range(1, 5)]
    assert Usage.total(usages) == Usage(input_tokens=10, output_tokens=20, total_tokens=30)
    assert Usage.total(iter([])) == Usage()


def test_usage_is_frozen() -> None:
    with pytest.raises(ValidationError):
        Usage().input_tokens = 5  # type: ignore[misc]


def test_error_info_of_an_exception() -> None:
    assert ErrorInfo.of("TaskError", ValueError("bad value")) == ErrorInfo(
        type="TaskError", message="bad value", exception="ValueError"
    )


def test_error_info_names_a_library_exception_with_its_package() -> None:
    from pydantic import ValidationError

    try:
        Usage(input_tokens="many")  # type: ignore[arg-type]
    except ValidationError as exc:
        info = ErrorInfo.of("ModelError", exc)
    assert info.exception == "pydantic_core.ValidationError"


def test_error_info_of_an_exception_without_message_uses_repr() -> None:
    info = ErrorInfo.of("TaskError", RuntimeError())
    assert info.type == "TaskError" and info.message == "RuntimeError()"


def test_error_types_are_a_closed_set() -> None:
    with pytest.raises(ValidationError):
        ErrorInfo(type="SomethingElse", message="x")  # type: ignore[arg-type]
