"""The data that flows through a run: tasks, plans, results and metrics."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Literal

import networkx as nx
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from fanfold.nodes.errors import PlanError


def this_worker() -> str:
    """Return this process's name in results: `"<hostname>:<pid>"`.

    Read at each call: a forked worker has a pid of its own.
    """
    return f"{socket.gethostname()}:{os.getpid()}"


TaskStatus = Literal["ok", "failed", "timed_out", "cancelled", "skipped"]
"""How a task ended: `ok`, `failed` (raised), `timed_out`, `cancelled`, or
`skipped` (a dependency did not finish ok)."""

TASK_STATUSES: tuple[TaskStatus, ...] = ("ok", "failed", "timed_out", "cancelled", "skipped")


class Usage(BaseModel):
    """Token counts, as the model reported them."""

    model_config = ConfigDict(frozen=True)

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
        )

    @classmethod
    def total(cls, usages: Iterable[Usage]) -> Usage:
        """Sum many usages (one object built, not one per term)."""
        inp = out = tot = 0
        for u in usages:
            inp += u.input_tokens
            out += u.output_tokens
            tot += u.total_tokens
        return cls(input_tokens=inp, output_tokens=out, total_tokens=tot)


class Task(BaseModel):
    """One unit of work for one subagent."""

    id: str = Field(min_length=1, max_length=64, description="Unique id, e.g. `t1`.")
    description: str = Field(min_length=1, description="What the subagent must do.")
    kind: str = Field(default="general", description="Agent kind that runs the task.")
    depends_on: list[str] = Field(
        default_factory=list, description="Ids of tasks whose output this task needs."
    )
    tools: list[str] | None = Field(
        default=None, description="Allowed tool names; null means the kind's default tools."
    )
    timeout_s: float | None = Field(
        default=None, gt=0, description="Per-task timeout; null means the run's."
    )
    round: int = Field(default=1, ge=1, description="The planning round that added the task.")


def _find_cycle(graph: nx.DiGraph, order: Iterable[str]) -> list[str] | None:
    """Return one dependency cycle, or None: linear in the plan's size.

    `nx.find_cycle` without a source starts a fresh search at every node: quadratic
    on a chain listed backwards (2000 tasks: 40 s a check). A topological sort tells
    whether there is a cycle at all; then one search starts on a cycle.
    """
    if nx.is_directed_acyclic_graph(graph):
        return None
    looped = set().union(*(c for c in nx.strongly_connected_components(graph) if len(c) > 1))
    start = next(n for n in order if n in looped)  # the first task on a cycle, in plan order
    edges = nx.find_cycle(graph, source=start)
    return [str(u) for u, _ in edges] + [str(edges[0][0])]


def structural_problems(tasks: Sequence[Task]) -> list[str]:
    """Return every structural rule the tasks break (empty list: a valid DAG).

    Linear in the number of tasks and dependencies, whatever their order.
    """
    problems: list[str] = []
    if not tasks:
        return ["the plan has no tasks"]
    ids = [t.id for t in tasks]
    seen: set[str] = set()
    dupes = sorted({i for i in ids if i in seen or seen.add(i)})  # type: ignore[func-returns-value]
    if dupes:
        problems.append(f"duplicate task ids: {dupes}")
    known = set(ids)
    for t in tasks:
        if t.id in t.depends_on:
            problems.append(f"task `{t.id}` depends on itself")
        unknown = [d for d in t.depends_on if d not in known]
        if unknown:
            problems.append(f"task `{t.id}` depends on unknown task(s) {unknown}")
    if not dupes:
        # Report a cycle along with any other problem: the planner gets one repair round.
        graph = nx.DiGraph()
        graph.add_nodes_from(ids)
        graph.add_edges_from(
            (d, t.id) for t in tasks for d in t.depends_on if d in known and d != t.id
        )
        cycle = _find_cycle(graph, ids)
        if cycle:
            problems.append("dependency cycle: " + " -> ".join(cycle))
    return problems


def _dag(tasks: Sequence[Task]) -> nx.DiGraph:
    g = nx.DiGraph()
    for t in tasks:
        g.add_node(t.id, task=t)
    for t in tasks:
        for dep in t.depends_on:
            g.add_edge(dep, t.id)
    return g


Shape = tuple[tuple[str, tuple[str, ...]], ...]
"""What the structural check of a plan reads: each task's id and dependencies."""


def _shape(tasks: Sequence[Task]) -> Shape:
    return tuple((t.id, tuple(t.depends_on)) for t in tasks)


class _Checked:
    """The shape of a plan's tasks when they were last found to be a valid DAG.

    A cache, so it never makes two plans unequal (pydantic compares private
    attributes); replaced, never changed, so a plan's copies may share it.
    """

    __slots__ = ("shape",)

    def __init__(self, shape: Shape | None = None) -> None:
        self.shape = shape

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Checked)

    __hash__ = None  # type: ignore[assignment]


class Plan(BaseModel):
    """A task graph: tasks with dependencies, always a valid DAG once built.

    The DAG check runs when a plan is built from data, and once per shape (the
    tasks' ids and dependencies). pydantic runs it again on a plan handed to another
    model (`RunOutput(plan=plan)`) or to `Plan.model_validate`, and `validate_plan`
    asks for it: there an unchanged plan costs a comparison, while one whose ids or
    dependencies changed since (in place, through `model_copy(update=...)`, or never
    checked: `model_construct`) is checked in full.
    """

    tasks: list[Task] = Field(description="The tasks, each with a unique id.")
    rationale: str = Field(default="", description="Why the work is split this way.")
    _checked: _Checked = PrivateAttr(default_factory=_Checked)

    @model_validator(mode="after")
    def _check_dag(self) -> Plan:
        problems = self.structural_problems()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def structural_problems(self) -> list[str]:
        """Return every structural rule the tasks break (empty list: a valid DAG)."""
        shape = _shape(self.tasks)
        if shape == self._checked.shape:
            return []
        problems = structural_problems(self.tasks)
        self._checked = _Checked(None if problems else shape)
        return problems

    def graph(self) -> nx.DiGraph:
        """Return the plan as a networkx DAG, edges from dependency to dependent."""
        return _dag(self.tasks)

    def generations(self) -> list[list[str]]:
        """Return task ids by topological generation, each in plan order."""
        order = {t.id: i for i, t in enumerate(self.tasks)}
        return [
            sorted(gen, key=order.__getitem__) for gen in nx.topological_generations(self.graph())
        ]

    def task(self, task_id: str) -> Task:
        """Return the task with this id.

        Raises:
            KeyError: no such task.
        """
        for t in self.tasks:
            if t.id == task_id:
                return t
        raise KeyError(task_id)

    def order(self) -> dict[str, int]:
        """Return each task id's position in the plan."""
        return {t.id: i for i, t in enumerate(self.tasks)}


def validate_plan(
    plan: Plan,
    *,
    kinds: Iterable[str],
    tools: Iterable[str],
    max_tasks: int,
) -> Plan:
    """Check a plan against what this run knows; return it unchanged when valid.

    Raises:
        PlanError: naming every rule the plan broke.
    """
    problems = plan.structural_problems()
    if len(plan.tasks) > max_tasks:
        problems.append(f"{len(plan.tasks)} tasks exceed max_tasks={max_tasks}")
    known_kinds, known_tools = set(kinds), set(tools)
    for t in plan.tasks:
        if t.kind not in known_kinds:
            problems.append(
                f"task `{t.id}` has unknown agent kind `{t.kind}` (known: {sorted(known_kinds)})"
            )
        unknown = [n for n in (t.tools or []) if n not in known_tools]
        if unknown:
            problems.append(
                f"task `{t.id}` asks for unknown tool(s) {unknown} (known: {sorted(known_tools)})"
            )
    if problems:
        raise PlanError(problems)
    return plan


ErrorType = Literal[
    "TaskTimeout",
    "DependencyFailed",
    "Cancelled",
    "QuorumReached",
    "BudgetExceeded",
    "RunStopped",
    "MaxStepsExceeded",
    "ModelError",
    "TaskError",
    "PlanRejected",
    "PlanError",
    "TaskFailed",
    "QuorumUnreachable",
    "BadInput",
    "Unreachable",
    "ThreadBusy",
]
"""Why a task (or a run) did not end ok: a closed set of causes.

Tasks: `TaskTimeout` (timed_out), `DependencyFailed` (skipped), `QuorumReached`,
`BudgetExceeded` and `RunStopped` (cancelled; `BudgetExceeded` is also a failed task
past its own token budget), `MaxStepsExceeded`, `ModelError` (a model call failed for
good) and `TaskError` (the subagent raised anywhere else) (failed). Runs: `PlanRejected`,
`PlanError`, `TaskFailed` (fail_fast), `QuorumUnreachable`, `BadInput`, `Unreachable`
(a model server or database), `ThreadBusy` (another process runs the thread)."""


class ErrorInfo(BaseModel):
    """Why a task (or a run) did not end ok."""

    type: ErrorType
    """The cause, one of a closed set (`ErrorType`)."""
    message: str
    """What happened, in words."""
    exception: str | None = None
    """The exception behind it, when there was one (e.g. `openai.APIConnectionError`)."""

    @classmethod
    def of(cls, kind: ErrorType, exc: BaseException) -> ErrorInfo:
        """Describe an exception as a cause of this kind."""
        return cls(type=kind, message=str(exc) or repr(exc), exception=exception_name(exc))


def exception_name(exc: BaseException) -> str:
    """Return an exception's class name, qualified unless it is a builtin."""
    cls = type(exc)
    module = cls.__module__.split(".")[0]
    return cls.__name__ if module == "builtins" else f"{module}.{cls.__name__}"


class SubagentResult(BaseModel):
    """What one subagent hands back: exactly one per task."""

    task_id: str
    status: TaskStatus
    output: str = ""
    error: ErrorInfo | None = None
    attempts: int = 1
    started_at: datetime | None = None
    ended_at: datetime | None = None
    duration_s: float = 0.0
    usage: Usage = Field(default_factory=Usage)
    tool_calls: int = 0
    tool_errors: int = 0
    """Tool calls that came back to the model as errors."""
    subtasks: list[SubagentResult] = Field(default_factory=list)
    """Results of the sub-tasks this task delegated (their tokens are in `usage`)."""
    worker: str = Field(default_factory=lambda: this_worker())
    """Where the result was made, `"<hostname>:<pid>"`: the process that ran the task (a
    Temporal worker's, on Temporal), or that decided it (a skipped task's: the run's)."""


class RunMetrics(BaseModel):
    """What a run cost and how parallel it was."""

    tasks: int = 0
    counts: dict[str, int] = Field(default_factory=dict)
    peak_concurrency: int = 0
    wall_time_s: float = 0.0
    """From the run's start (a rerun's: when the rerun began) to its end."""
    task_time_s: float = 0.0
    """The summed durations of the tasks that ran within the wall time (a rerun: the
    tasks it ran, not the results it kept)."""
    speedup: float = 0.0
    """`task_time_s / wall_time_s`."""
    tokens: Usage = Field(default_factory=Usage)
    """Every result's tokens plus the planner's and the synthesizer's."""
    rounds: int = 0
    retries: int = 0
    """Model calls retried after a transient fault, run-wide."""
    faults: dict[str, int] = Field(default_factory=dict)
    """Transient faults seen, by kind (`rate_limited` counts 429s)."""
    effective_concurrency: list[tuple[float, int]] = Field(default_factory=list)
    """(seconds since the run began, model-call limit) at each change of the adaptive limit."""
    request_pace: list[tuple[float, float | None]] = Field(default_factory=list)
    """(seconds since the run began, requests per second) at each change of the pace the
    adaptive limit set after 429s of the run's own load; None: no longer paced."""
    stop_reason: str | None = None
    """Why the run stopped early (budget, quorum), if it did."""
    tool_cache: dict[str, int] = Field(default_factory=dict)
    """Tool registry look-ups during the run: hits, misses, refreshes, errors."""
    mcp: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Each MCP server's state (`up`, `down`, `closed`) and counts: connects, tool
    lists, calls, call errors, and its last error."""


def peak_overlap(results: Iterable[SubagentResult]) -> int:
    """Return the most results whose [started_at, ended_at] intervals overlap at once."""
    # (time, rank, delta): at one instant, ends of intervals that lasted come first
    # (the slot was handed on), then starts, then ends of zero-length intervals, so
    # a task that started and ended in the same instant still counts.
    events: list[tuple[datetime, int, int]] = []
    for r in results:
        if r.started_at is not None and r.ended_at is not None:
            events.append((r.started_at, 1, 1))
            events.append((r.ended_at, 2 if r.ended_at <= r.started_at else 0, -1))
    events.sort(key=lambda e: (e[0], e[1]))
    peak = cur = 0
    for _, _, delta in events:
        cur += delta
        peak = max(peak, cur)
    return peak
