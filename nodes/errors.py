"""One small hierarchy for the errors Fanfold raises on purpose."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fanfold.nodes.domain import SubagentResult


class FanfoldError(Exception):
    """Base of every error Fanfold raises on purpose."""


class PlanError(FanfoldError):
    """The planner could not produce a valid plan, or a given plan is invalid.

    Attributes:
        problems: each rule the plan broke, in words.
    """

    def __init__(self, problems: list[str], *, raw: str | None = None) -> None:
        self.problems = list(problems)
        self.raw = raw
        super().__init__("invalid plan: " + "; ".join(self.problems))


class TaskFailedError(FanfoldError):
    """A subagent failed under the `fail_fast` policy and stopped the run.

    Attributes:
        result: the failing task's result.
        results: every result finished before the run stopped, in task order
            (filled in by the run API, which sees every task's finish).
    """

    def __init__(self, result: SubagentResult, results: list[SubagentResult] | None = None) -> None:
        self.result = result
        self.results: list[SubagentResult] = list(results or [result])
        err = result.error
        why = f"{err.type}: {err.message}" if err else result.status
        super().__init__(f"task `{result.task_id}` {result.status} under fail_fast ({why})")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.result, self.results))


class MaxStepsExceeded(FanfoldError):
    """A subagent kept calling tools past its step bound."""


class BudgetExceeded(FanfoldError):
    """A run or task budget (tokens, wall time) is spent; never retried."""


class RunStopped(FanfoldError):
    """The run stopped (budget, quorum met) while this task was still running."""


class QuorumUnreachable(FanfoldError):
    """Under `quorum:K`, too few tasks can still succeed to reach K.

    Attributes:
        results: every result finished before the run stopped, in task order
            (filled in by the run API).
    """

    def __init__(self, message: str, results: list[SubagentResult] | None = None) -> None:
        self.results: list[SubagentResult] = list(results or [])
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.results))
