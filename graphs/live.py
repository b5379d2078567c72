"""A live terminal view of a run (rich): what each running subagent is doing, and the run.

`LiveView` is an `on_event` handler. While the run goes on it redraws, at most ten
times a second and at least four: a header with the finished count, the running
count (the effective concurrency), the elapsed time and tokens against the run's
budgets; one row per running subagent (task id, kind, elapsed, model calls, tokens so
far, what it does now: the tools its last reply asked for, or "thinking" before its
first reply); and the finished counts by status. `fanfold run`, `demo`, `resume` and
`rerun` use it when stderr is a terminal (`--no-live`: the progress lines instead).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TextIO

from fanfold.nodes.context import RunSettings
from fanfold.nodes.events import ProgressEvent

MAX_ROWS = 30
"""Running subagents shown as rows; the rest are counted."""
MIN_REDRAW_S = 0.1
TICK_S = 0.25


@dataclass
class _Running:
    kind: str
    started: float
    step: int = 0
    tokens: int = 0
    doing: str = "thinking"


@dataclass
class _State:
    total: int | None = None
    limit: int | None = None
    """The adaptive model-call limit as the last step reported it."""
    running: dict[str, _Running] = field(default_factory=dict)
    finished: Counter[str] = field(default_factory=Counter)
    tokens_done: int = 0


class LiveView:
    """Redraw a run's progress in place on a terminal (see the module's docstring)."""

    def __init__(self, settings: RunSettings, stream: TextIO, *, title: str = "fanfold") -> None:
        """Prepare the view; `start()` shows it, `stop()` leaves its last frame.

        Raises:
            ImportError: rich is not installed.
        """
        from rich.console import Console
        from rich.live import Live

        self.settings = settings
        self.title = title
        self.console = Console(file=stream, force_terminal=True, highlight=False)
        self._live = Live(console=self.console, auto_refresh=False, transient=False)
        self._state = _State()
        self._t0 = time.monotonic()
        self._drawn = 0.0
        self._tick: asyncio.TimerHandle | None = None
        self._started = False
        self.keys: str | None = None
        """The keys the view takes, shown under it (None: it takes none)."""
        self.note = ""
        """The last thing a key did, shown under the keys."""
        self.typing: str | None = None
        """What is being typed after a key that asks for a task id."""

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Show the view (and keep its clock ticking while an event loop runs)."""
        self._t0 = time.monotonic()
        self._live.start()
        self._started = True
        self._redraw(force=True)

    def stop(self) -> None:
        """Draw the last frame and stop redrawing. Safe to call twice."""
        if not self._started:
            return
        self._started = False
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        self._live.update(self.render(), refresh=True)
        self._live.stop()

    def __enter__(self) -> LiveView:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- events ----------------------------------------------------------------------

    def __call__(self, event: ProgressEvent) -> None:
        """Take one progress event."""
        state = self._state
        if event["fanfold"] == "plan_ready":
            state.total = event["tasks"]
        elif event["fanfold"] == "task_started":
            state.running[event["task_id"]] = _Running(kind=event["kind"], started=time.monotonic())
        elif event["fanfold"] == "task_step":
            state.limit = event["limit"]
            row = state.running.get(event["task_id"])
            if row is not None:
                row.step, row.tokens = event["step"], event["tokens"]
                tools = event["tools"]
                row.doing = f"calling {', '.join(tools)}" if tools else "answering"
        elif event["fanfold"] == "task_finished":
            state.running.pop(event["task_id"], None)
            state.finished[event["status"]] += 1
            state.tokens_done += event["total_tokens"]
        self._redraw()

    def _redraw(self, *, force: bool = False) -> None:
        if not self._started:
            return
        now = time.monotonic()
        if force or now - self._drawn >= MIN_REDRAW_S:
            self._drawn = now
            self._live.update(self.render(), refresh=True)
        self._schedule()

    def _schedule(self) -> None:
        if self._tick is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: redraws come with events only
        self._tick = loop.call_later(TICK_S, self._on_tick)

    def _on_tick(self) -> None:
        self._tick = None
        self._redraw(force=True)  # elapsed times move on between events

    # --- drawing -----------------------------------------------------------------------

    def render(self) -> Any:
        """Return the current frame as a rich renderable."""
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        state = self._state
        now = time.monotonic()
        elapsed = now - self._t0
        done = sum(state.finished.values())
        total = "?" if state.total is None else str(state.total)
        tokens = state.tokens_done + sum(r.tokens for r in state.running.values())
        s = self.settings
        wall = f"{elapsed:.1f}s" + (f" / {s.max_wall_time_s:g}s" if s.max_wall_time_s else "")
        spent = f"{tokens:,}" + (f" / {s.max_total_tokens:,}" if s.max_total_tokens else "")
        header = Text.assemble(
            (f"{self.title} ", "bold"),
            f"{done}/{total} tasks finished · running {len(state.running)}"
            f" (limit {s.max_concurrency}){self._throttled()} · elapsed {wall} · tokens {spent}",
        )
        table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
        for column in ("task", "kind", "elapsed", "calls", "tokens", "doing"):
            table.add_column(
                column, justify="right" if column in ("elapsed", "calls", "tokens") else "left"
            )
        rows = sorted(state.running.items(), key=lambda kv: kv[1].started)
        for task_id, row in rows[:MAX_ROWS]:
            table.add_row(
                task_id,
                row.kind,
                f"{now - row.started:.1f}s",
                str(row.step),
                f"{row.tokens:,}",
                row.doing,
            )
        parts: list[Any] = [header]
        if rows:
            parts.append(table)
        if len(rows) > MAX_ROWS:
            parts.append(Text(f"… and {len(rows) - MAX_ROWS} more running"))
        counts = " ".join(f"{status}={n}" for status, n in sorted(state.finished.items()))
        parts.append(Text(f"finished: {counts or 'none yet'}"))
        if self.keys is not None:
            parts.append(Text(f"keys: {self.keys}", style="dim"))
        if self.typing is not None:
            parts.append(Text(f"cancel task: {self.typing}_"))
        elif self.note:
            parts.append(Text(self.note))
        return Group(*parts)

    def _throttled(self) -> str:
        limit = self._state.limit
        if limit is None or limit >= self.settings.max_concurrency:
            return ""
        return f", throttled to {limit}"  # the adaptive limit cut it (429s)

    def redraw(self) -> None:
        """Redraw now (after a key changed what the view shows)."""
        self._redraw(force=True)


KEYS = "p pause/resume · c cancel a task (type its id, Enter) · s stop and answer"


class TerminalKeys:
    """Steer a run from its live view: keys read from the terminal, one at a time.

    `p` pauses or resumes dispatch, `c` asks for a task id and cancels that task, `s`
    stops the run (running tasks finish, the answer is written). stdin is put in
    cbreak mode while the run goes on (Ctrl-C still interrupts) and restored after.
    """

    def __init__(self, handle: Any, view: LiveView, stdin: TextIO) -> None:
        self.handle = handle
        self.view = view
        self.stdin = stdin
        self._saved: Any = None
        self._pending: set[asyncio.Future[Any]] = set()

    def __enter__(self) -> TerminalKeys:
        import termios
        import tty

        fd = self.stdin.fileno()
        self._saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)
        asyncio.get_running_loop().add_reader(fd, self._on_input)
        self.view.keys = KEYS
        self.view.redraw()
        return self

    def __exit__(self, *exc: object) -> None:
        import termios

        fd = self.stdin.fileno()
        asyncio.get_running_loop().remove_reader(fd)
        termios.tcsetattr(fd, termios.TCSADRAIN, self._saved)
        for fut in self._pending:
            fut.cancel()
        self.view.keys = None

    def _on_input(self) -> None:
        import os

        data = os.read(self.stdin.fileno(), 64).decode(errors="replace")
        for key in data:
            self._key(key)
        self.view.redraw()

    def _key(self, key: str) -> None:
        view = self.view
        if view.typing is not None:
            if key in "\r\n":
                task_id, view.typing = view.typing.strip(), None
                if task_id:
                    self._do(self._cancel(task_id))
            elif key in "\x1b":
                view.typing, view.note = None, "cancel: never mind"
            elif key in "\x7f\b":
                view.typing = view.typing[:-1]
            elif key.isprintable():
                view.typing += key
            return
        if key == "p":
            self._do(self._pause())
        elif key == "c":
            view.typing = ""
        elif key == "s":
            self._do(self._stop())

    def _do(self, work: Any) -> None:
        fut = asyncio.ensure_future(work)
        self._pending.add(fut)
        fut.add_done_callback(self._pending.discard)

    async def _pause(self) -> None:
        if self.handle.paused:
            await self.handle.resume()
            self.view.note = "resumed"
        else:
            await self.handle.pause()
            self.view.note = "paused: nothing new starts (p: resume)"
        self.view.redraw()

    async def _cancel(self, task_id: str) -> None:
        try:
            cancelled = await self.handle.cancel_task(task_id, "cancelled from the terminal")
        except KeyError:
            self.view.note = f"no task `{task_id}`"
        else:
            self.view.note = f"cancelled {task_id}" if cancelled else f"{task_id} had ended"
        self.view.redraw()

    async def _stop(self) -> None:
        await self.handle.stop("stopped from the terminal")
        self.view.note = "stopping: running tasks finish, then the answer"
        self.view.redraw()
