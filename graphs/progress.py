"""A progress bar for a run: pass a `ProgressBar()` as `on_event=`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from fanfold.nodes.domain import TASK_STATUSES
from fanfold.nodes.events import EVENT_KEY

if TYPE_CHECKING:
    from tqdm.std import tqdm

_SHOWN = {"plan_ready", "task_started", "task_finished"}


class ProgressBar:
    """Show a run's progress as a tqdm bar (a widget in Jupyter, text elsewhere).

    Pass it as `on_event=` to `arun` or `execute_tasks_parallel`. The bar appears
    with the first event; `plan_ready` sets its total, each `task_finished`
    advances it, and its postfix counts results by status and tasks running. It
    closes itself once every task has finished; use it as a context manager to
    close it when a run stops early too (`TaskFailedError` under `fail_fast`).

    Example:
        with ProgressBar() as bar:
            out = await arun(request, on_event=bar)
    """

    def __init__(self, *, desc: str = "tasks", **tqdm_kwargs: Any) -> None:
        """Prepare the bar; `tqdm_kwargs` go to tqdm (e.g. `file=`, `leave=`).

        Raises:
            ImportError: tqdm is not installed.
        """
        try:
            from tqdm.auto import tqdm as auto_tqdm
        except ImportError as exc:
            msg = "ProgressBar needs tqdm: pip install 'fanfold[viz]'"
            raise ImportError(msg) from exc
        self._tqdm = auto_tqdm
        self._kwargs: dict[str, Any] = {"desc": desc, "unit": "task", **tqdm_kwargs}
        self._bar: tqdm[Any] | None = None
        self._closed = False
        self._status: dict[str, str] = {}
        self._running: set[str] = set()
        self.total: int | None = None
        """Tasks in the plan, once `plan_ready` has arrived."""

    def __call__(self, event: Mapping[str, Any]) -> None:
        """Take one progress event."""
        name = event.get(EVENT_KEY)
        if self._closed or name not in _SHOWN:
            return
        advance = 0
        if name == "plan_ready":
            self.total = int(event["tasks"])
            if self._bar is not None:
                self._bar.total = self.total
        elif name == "task_started":
            self._running.add(str(event["task_id"]))
        else:
            task_id = str(event["task_id"])
            self._running.discard(task_id)
            # A task that runs again (a retry) replaces its status; it is counted once.
            advance = 0 if task_id in self._status else 1
            self._status[task_id] = str(event["status"])
        bar = self._open()
        bar.set_postfix_str(self.postfix(), refresh=False)
        if advance:
            bar.update(advance)
        else:
            bar.refresh()
        if self.total is not None and self.finished >= self.total:
            self.close()

    @property
    def counts(self) -> dict[str, int]:
        """Return how many tasks finished with each status (every status, zeros too)."""
        seen = Counter(self._status.values())
        return {s: seen[s] for s in TASK_STATUSES} | {s: n for s, n in seen.items() if n}

    @property
    def finished(self) -> int:
        """Return how many tasks have finished."""
        return len(self._status)

    @property
    def running(self) -> int:
        """Return how many tasks are running now."""
        return len(self._running)

    @property
    def closed(self) -> bool:
        """Tell whether the bar is closed."""
        return self._closed

    def postfix(self) -> str:
        """Return the text after the bar: the non-zero counts by status, and running."""
        parts = [f"{status}={n}" for status, n in self.counts.items() if n]
        if self._running:
            parts.append(f"running={len(self._running)}")
        return " ".join(parts)

    def close(self) -> None:
        """Close the bar; further events are ignored. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
            if any(c.__module__ == "tqdm.notebook" for c in type(self._bar).__mro__):
                # A saved notebook keeps a widget's text as it was when first shown (0%):
                # leave the final state as text too.
                print(self.summary(), flush=True)

    def summary(self) -> str:
        """Return the bar's state in one line: `tasks: 6/6 finished (ok=6)`."""
        total = "?" if self.total is None else str(self.total)
        desc = self._kwargs.get("desc") or "tasks"
        return f"{desc}: {self.finished}/{total} finished ({self.postfix() or 'none yet'})"

    def _open(self) -> tqdm[Any]:
        if self._bar is None:
            self._bar = self._tqdm(total=self.total, **self._kwargs)
        return self._bar

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
