"""One small hierarchy for the errors Fanfold raises on purpose."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fanfold.nodes.context import Flag
    from fanfold.nodes.domain import SubagentResult


class FanfoldError(Exception):
    """Base of every error Fanfold raises on purpose."""


@dataclass(frozen=True)
class SettingProblem:
    """One invalid or unknown run setting."""

    field: str
    """The setting's name, e.g. `max_concurrency`."""
    flag: Flag | None
    """Its command-line flag, if it has one."""
    requirement: str
    """What it accepts, e.g. `an integer >= 1`; empty for an unknown setting."""
    value: Any
    """What was given."""
    known: tuple[str, ...] = ()
    """For an unknown setting: the settings there are."""

    def text(self, *, cli: bool = False) -> str:
        """Return the problem in one line, naming the flag (`cli`) or the field."""
        if not self.requirement:
            return f"unknown setting `{self.field}` (known: {', '.join(self.known)})"
        name = self.flag.name if cli and self.flag is not None else f"`{self.field}`"
        return f"{name} must be {self.requirement}, got {shown(self.value)}"


class SettingsError(FanfoldError, ValueError):
    """Run settings that are invalid: each problem names the setting and what it accepts.

    Attributes:
        problems: every invalid or unknown setting.
    """

    def __init__(self, problems: list[SettingProblem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(p.text() for p in self.problems))

    def for_cli(self) -> str:
        """Return the message with command-line flags in place of field names."""
        return "; ".join(p.text(cli=True) for p in self.problems)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.problems,))


def shown(value: Any) -> str:
    """Return a value as an error message shows it (`nan`, `'3'`, `True`, `a ChatOpenAI`)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if hasattr(value, "model_fields"):  # a pydantic model: a chat model, a tool
        return f"a {type(value).__name__}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class PlanError(FanfoldError, ValueError):
    """The planner could not produce a valid plan, or a given plan is invalid.

    Attributes:
        problems: each rule the plan broke, in words.
        raw: what the model replied last, when a model planned.
    """

    RAW_SHOWN = 500
    """How much of the model's reply the message shows."""

    def __init__(self, problems: list[str], *, raw: str | None = None) -> None:
        self.problems = list(problems)
        self.raw = raw
        text = "invalid plan: " + "; ".join(self.problems)
        if raw:
            shown_raw = raw if len(raw) <= self.RAW_SHOWN else raw[: self.RAW_SHOWN] + "..."
            text += f"; the model replied: {shown_raw}"
        super().__init__(text)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_plan_error, (self.problems, self.raw))


def _plan_error(problems: list[str], raw: str | None) -> PlanError:
    return PlanError(problems, raw=raw)


class TaskFailedError(FanfoldError, RuntimeError):
    """A subagent failed under the `fail_fast` policy and stopped the run.

    Attributes:
        result: the failing task's result.
        results: one result per task, in plan order (filled in by the run API): the
            ones that ended before the stop, this failure, and `cancelled`
            (`RunStopped`) for every task the stop ended or never started.
    """

    MESSAGE = re.compile(r"task `(?P<task>[^`]+)` (?P<status>\w+) under fail_fast")
    """What the message starts with; `failed_task` reads it back from a saved error."""

    @classmethod
    def failed_task(cls, text: str) -> tuple[str, str] | None:
        """Return the task id and status a saved `TaskFailedError` names, if `text` is one.

        A checkpoint keeps a failed task's error as the exception's repr.
        """
        if "TaskFailedError" not in text:
            return None
        found = cls.MESSAGE.search(text)
        return (found["task"], found["status"]) if found else None

    def __init__(self, result: SubagentResult, results: list[SubagentResult] | None = None) -> None:
        self.result = result
        self.results: list[SubagentResult] = list(results or [result])
        err = result.error
        why = f"{err.type}: {err.message}" if err else result.status
        super().__init__(f"task `{result.task_id}` {result.status} under fail_fast ({why})")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.result, self.results))


class BudgetExceeded(FanfoldError):
    """A run or task budget (tokens, wall time) is spent; never retried."""


class RunStopped(FanfoldError):
    """The run stopped (budget, quorum met) while this task was still running."""


class QuorumUnreachable(FanfoldError, RuntimeError):
    """Under `quorum:K`, too few tasks can still succeed to reach K.

    Attributes:
        results: one result per task, in plan order (filled in by the run API), as
            for `TaskFailedError`.
    """

    def __init__(self, message: str, results: list[SubagentResult] | None = None) -> None:
        self.results: list[SubagentResult] = list(results or [])
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.results))


class ThreadBusy(FanfoldError, RuntimeError):
    """Another run holds the lease on this checkpointed thread (a run, resume or rerun).

    Attributes:
        thread_id: the thread.
        holder: who holds it, in words (a process and host, a PostgreSQL session).
    """

    def __init__(self, thread_id: str, holder: str) -> None:
        self.thread_id = thread_id
        self.holder = holder
        super().__init__(
            f"thread `{thread_id}` is being run by {holder}; wait for that run to end "
            "(or stop it), then resume"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.thread_id, self.holder))


class NothingToRerun(FanfoldError, ValueError):
    """A saved run has no tasks a rerun could run: it waits on plan approval, or no plan ran."""
