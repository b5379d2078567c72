"""State schemas of the orchestrator and of one subagent."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, NotRequired

from langchain_core.messages import AnyMessage
from langgraph.channels.delta import DeltaChannel
from langgraph.graph.message import add_messages
from langgraph.types import Overwrite
from typing_extensions import TypedDict

from fanfold.nodes.domain import ErrorInfo, Plan, RunMetrics, SubagentResult, Task, Usage
from fanfold.nodes.lg import NEVER_SNAPSHOT, DeltaValue


def merge_results(
    left: list[SubagentResult] | None, right: list[SubagentResult] | None
) -> list[SubagentResult]:
    """Append results: parallel subagents write here in the same superstep.

    Appending costs a list copy per write; an upsert by task id rebuilt a dict of
    every result per write (O(N^2) over a run). The `reducer` node, which runs after
    every superstep of subagents, keeps the last result per task id (its `Ledger`)
    and, once every task has one, writes the list back in plan order.
    """
    if not right:
        return left if left is not None else []
    return [*(left or []), *right]


def append_batches(
    left: list[SubagentResult], writes: Sequence[list[SubagentResult]]
) -> list[SubagentResult]:
    """Append a batch of writes in one call: the `results` channel's delta reducer."""
    out = list(left)
    for w in writes:
        out.extend(w)
    return out


def add_usage(left: Usage | None, right: Usage | None) -> Usage:
    """Sum token usage written by several nodes."""
    return (left or Usage()) + (right or Usage())


class OrchestratorInput(TypedDict):
    """What a run starts from."""

    request: str
    """The user's request, in words."""
    given_plan: NotRequired[Plan]
    """A ready plan: when given, the planner validates it and calls no model."""
    depth: NotRequired[int]
    """Nesting depth of this run's subagents (1, unless a subagent delegated it)."""
    settings: NotRequired[dict[str, Any]]
    """The run's settings as JSON (`arun` gives them), saved with the input so a run that
    stops before its plan is saved resumes with them; the planner saves them otherwise."""


class OrchestratorOutput(TypedDict):
    """What a run hands back."""

    answer: str
    """The synthesized answer."""
    status: str
    """`ok`, `partial`, `budget_exceeded` or `rejected` (the plan, at approval)."""
    plan: Plan
    """The plan that ran."""
    results: list[SubagentResult]
    """One result per task, in plan order."""
    metrics: RunMetrics
    """What the run cost and how parallel it was."""
    views: NotRequired[dict[str, str]]
    """The perspectives graph only: each perspective's view, by kind."""


class OrchestratorState(TypedDict):
    """The orchestrator's whole state."""

    request: Annotated[str, DeltaValue()]
    """The user's request."""
    given_plan: Plan | None
    """A ready plan from the input; the planner consumes it (sets it back to None)."""
    plan: Annotated[Plan, DeltaValue()]
    """The validated plan (None only when the run's budget ran out while it planned)."""
    results: Annotated[
        list[SubagentResult], DeltaChannel(append_batches, snapshot_frequency=NEVER_SNAPSHOT)
    ]
    """One result per finished task; subagents write here in parallel."""
    usage: Annotated[Usage, add_usage]
    """Tokens spent by the planner and the synthesizer (subagents' are in results)."""
    started_at: datetime
    """When the planner began: the start of wall time."""
    settings: dict[str, Any]
    """The run's settings as JSON (model specs, limits, policy), so a resume can reuse them."""
    rounds: int
    """Fan-out rounds dispatched so far."""
    plan_round: int
    """Planning rounds so far (1: the first plan)."""
    replan_done: bool
    """The planner declined to add tasks: no further planning round."""
    depth: int
    """Nesting depth of this run's subagents: 1 at the top."""
    metrics: RunMetrics
    """Metrics as of the last reducer or synthesizer step."""
    status: str
    """`ok` or `partial`."""
    answer: str
    """The final answer."""
    rejection: str
    """Why the plan was rejected at approval, when it was."""
    stopped: ErrorInfo | None
    """Why the run stopped early (`BudgetExceeded`, `QuorumReached`, `RunStopped`), as the
    reducer saw it; None while it goes on. Later steps, and a resumed run, read it here."""
    views: dict[str, str]
    """The perspectives graph only: each perspective's view, by kind."""


class OrchestratorUpdate(TypedDict, total=False):
    """What an orchestrator node may return: any keys of the state, checked by mypy."""

    request: str
    given_plan: Plan | None
    plan: Plan | None
    results: list[SubagentResult] | Overwrite
    usage: Usage | Overwrite
    started_at: datetime
    settings: dict[str, Any]
    rounds: int
    plan_round: int
    replan_done: bool
    depth: int
    metrics: RunMetrics
    status: str
    answer: str
    rejection: str
    stopped: ErrorInfo | None
    views: dict[str, str]


class TaskSpec(TypedDict):
    """How one task runs, resolved once (the task, then its kind, then the run).

    Plain values, so it travels in a `Send` and in checkpoints.
    """

    model: str
    """A model spec, or `@run`, `@planner` or `@kind:<name>` for a chat-model object
    the run's settings hold (looked up where the subagent runs)."""
    tools: list[str] | None
    """The tool names the task may call; None: every tool of the run."""
    delegate: bool
    """Whether the task may delegate sub-tasks (the `delegate` tool)."""
    timeout_s: float | None
    """The task's timeout; None: none."""
    system_prompt: str
    """The system message the subagent starts from."""


class SubagentInput(TypedDict):
    """The `Send` payload: all one subagent sees of the run."""

    task: Task
    """The task to do."""
    spec: NotRequired[TaskSpec]
    """How it runs: model, tools, timeout and prompt, resolved once by dispatch (a
    subagent run on its own, without one, resolves it when it starts)."""
    dependency_outputs: dict[str, str]
    """Outputs of the tasks this one depends on, by task id."""
    round: NotRequired[int]
    """The dispatch round (1 = first window) that started this task."""
    depth: NotRequired[int]
    """Nesting depth: 1 for the orchestrator's own subagents."""
    awaits: NotRequired[list[str]]
    """Dependencies still running when this task was sent (in the same window): the
    subagent waits for their results, in process, before it starts."""
    window: NotRequired[str]
    """An eager window's key: the subagent publishes its result under it, in process,
    for the tasks of the window that wait for it."""
    timeout_s: NotRequired[float | None]
    """With `awaits`: the task's timeout, counted from when its inputs are ready (the
    Send itself then has none, as its clock would count the wait)."""
    run_tokens: NotRequired[int]
    """On Temporal: the tokens the run had spent when it dispatched this task."""
    run_deadline: NotRequired[float]
    """On Temporal: when the run's wall-time budget ends, in seconds since the epoch."""


class SubagentOutput(TypedDict):
    """A subagent's only write to its parent."""

    results: Annotated[list[SubagentResult], merge_results]
    """Exactly one result: this task's."""


class SubagentState(SubagentInput, SubagentOutput):
    """A subagent's private state: its own message history and ledger."""

    messages: Annotated[list[AnyMessage], add_messages]
    """This subagent's conversation, isolated from every other subagent."""
    started_at: datetime
    """When the subagent began."""
    usage: Usage
    """Tokens spent so far."""
    steps: int
    """Model calls made so far."""
    tool_calls: int
    """Tool calls requested so far."""
    retries: int
    """Model calls retried after transient faults so far."""
    tool_errors: int
    """Tool calls that came back as errors (unknown tool, bad arguments, raised, timed out)."""
    error: ErrorInfo | None
    """Set when the subagent cannot go on."""
    cancelled: bool
    """The run stopped (budget, quorum) while this subagent ran."""
    subtasks: list[SubagentResult]
    """Results of the sub-tasks this subagent delegated (from its `delegate` calls)."""


class SubagentUpdate(TypedDict, total=False):
    """What a subagent step may return: any keys of its state, checked by mypy."""

    task: Task
    spec: TaskSpec
    messages: list[AnyMessage]
    started_at: datetime
    usage: Usage
    steps: int
    tool_calls: int
    retries: int
    tool_errors: int
    error: ErrorInfo | None
    cancelled: bool
    subtasks: list[SubagentResult]
    results: list[SubagentResult]
