"""The `fanfold` command: run a request or a given plan, the offline demo, or resume a run.

Its setting flags come from the `RunSettings` declaration (each field's `Flag`), so a
setting and its flag are declared once. Every failure is one line on stderr that
starts with `fanfold: ` and says what to do, never a traceback; `--json` prints one
document on stdout whatever happens. The exit codes are in `EXIT_CODES`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import difflib
import importlib.metadata
import json
import os
import signal
import sqlite3
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TextIO, cast
from urllib.parse import urlsplit

from langchain_core.runnables import RunnableConfig
from pydantic import ValidationError

from fanfold.graphs.api import (
    EventHandler,
    RunOutput,
    arerun,
    aresume,
    arun,
    saved_settings,
    start,
)
from fanfold.graphs.checkpoint import is_postgres, open_checkpointer, open_store
from fanfold.graphs.live import LiveView, TerminalKeys
from fanfold.graphs.loop import exit_now_if_stuck, run_until_done
from fanfold.graphs.orchestrator import Orchestrator, compile_orchestrator
from fanfold.nodes.context import Flag, RunSettings, plain_types, requirement, setting_flags
from fanfold.nodes.domain import (
    ErrorInfo,
    ErrorType,
    Plan,
    RunMetrics,
    SubagentResult,
    this_worker,
)
from fanfold.nodes.domain import exception_name as _exception_name
from fanfold.nodes.errors import (
    NothingToRerun,
    PlanError,
    QuorumUnreachable,
    SettingProblem,
    SettingsError,
    TaskFailedError,
    ThreadBusy,
)
from fanfold.nodes.events import ProgressEvent
from fanfold.nodes.faults import classify
from fanfold.nodes.models import aclose_models, load_chat_model
from fanfold.nodes.rerun import RERUNNABLE, check_only
from fanfold.tools.mcp import load_mcp_config

DEMO_REQUEST = (
    "Compare asyncio, threads and processes for I/O-bound Python work; "
    "estimate 40 * 0.25 seconds of requests run one by one versus 40 * 0.25 / 8 with 8 workers"
)
DEMO_MODEL = "demo:latency=0.2"

EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_UNREACHABLE = 3
EXIT_BUSY = 4
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

EXIT_CODES: tuple[tuple[int, str], ...] = (
    (EXIT_OK, "the run finished: ok, partial, budget_exceeded or rejected"),
    (EXIT_RUN_FAILED, "the run failed by policy: fail_fast, or a quorum out of reach"),
    (EXIT_BAD_INPUT, "bad input: a setting, the plan file, an invalid plan, an unknown thread"),
    (EXIT_UNREACHABLE, "the model server or the checkpoint database is unreachable"),
    (EXIT_BUSY, "another process is running the thread (it holds the thread's lease)"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C)"),
    (EXIT_BROKEN_PIPE, "stdout was closed early (e.g. piped into `head`)"),
)

REPLY_SHOWN = 400
"""How much of a model's reply one error line shows."""

_SETTING = "setting:"
"""Prefix of the argparse destinations of setting flags (apart from other options)."""


class CliFailure(Exception):
    """A failure the command reports: one line on stderr, and its `--json` document.

    Attributes:
        kind: the cause (`ErrorInfo.type`).
        code: the exit code.
        message: the line, without the `fanfold: ` prefix; it says what to do.
        detail: the document's `error.message` when it says more than the line.
        cause: the exception behind it, if any.
        results: the results that finished before the run stopped.
    """

    def __init__(
        self,
        kind: ErrorType,
        code: int,
        message: str,
        *,
        detail: str | None = None,
        cause: BaseException | None = None,
        results: Sequence[SubagentResult] = (),
    ) -> None:
        super().__init__(message)
        self.kind: ErrorType = kind
        self.code = code
        self.message = message
        self.detail = detail
        self.cause = cause
        self.results = list(results)

    def error_info(self) -> ErrorInfo:
        """Return the failure as the document's `error`."""
        return ErrorInfo(
            type=self.kind,
            message=self.detail or self.message,
            exception=_exception_name(self.cause) if self.cause is not None else None,
        )


def bad_input(message: str, cause: BaseException | None = None) -> CliFailure:
    """Return a bad-input failure (exit 2)."""
    return CliFailure("BadInput", EXIT_BAD_INPUT, message, cause=cause)


# --- output ------------------------------------------------------------------------------


def _say(text: str, *, end: str = "\n") -> None:
    """Write a line on stderr; a closed stderr is ignored (there is nowhere to tell)."""
    with contextlib.suppress(OSError, ValueError):
        print(text, end=end, file=sys.stderr, flush=True)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class Progress:
    """Print one line per progress event on a stream (stderr by default)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.t0 = time.monotonic()

    def __call__(self, event: ProgressEvent) -> None:
        """Print an event."""
        t = time.monotonic() - self.t0
        if event["fanfold"] == "plan_ready":
            line = f"plan: {event['tasks']} tasks in {event['generations']} generations"
        elif event["fanfold"] == "task_started":
            line = f"start  {event['task_id']} ({event['kind']})"
        elif event["fanfold"] != "task_finished":
            return  # steps are for the live view: a line each would drown the rest
        else:
            line = (
                f"finish {event['task_id']} {event['status']} "
                f"in {event['duration_s']:.2f}s, {event['total_tokens']} tokens"
            )
        with contextlib.suppress(OSError, ValueError):
            print(f"[{t:7.2f}s] {line}", file=self.stream, flush=True)


def _print_human(out: RunOutput, stream: TextIO) -> None:
    if out.status == "rejected" and out.error is not None:
        print(f"plan rejected: {out.error.message}", file=stream)
    else:
        print(out.answer, file=stream)
    print("", file=stream)
    for r in out.results:
        why = f"  ({r.error.type}: {r.error.message})" if r.error else ""
        print(
            f"  {r.task_id:<12} {r.status:<9} {r.duration_s:6.2f}s "
            f"{r.usage.total_tokens:>6} tok{why}",
            file=stream,
        )
    m = out.metrics
    print(
        f"\nstatus={out.status} tasks={m.tasks} peak_concurrency={m.peak_concurrency} "
        f"wall={m.wall_time_s:.2f}s task_time={m.task_time_s:.2f}s speedup={m.speedup:.2f}x "
        f"tokens={m.tokens.total_tokens}",
        file=stream,
    )
    for name, s in m.mcp.items():
        why = f" last error: {s['last_error']}" if s.get("last_error") else ""
        print(
            f"mcp {name}: {s['state']}, {s['calls']} calls, {s['call_errors']} errors, "
            f"{s['connects']} connects{why}",
            file=stream,
        )


def _print_document(out: RunOutput) -> None:
    print(json.dumps(out.model_dump(mode="json"), indent=2), flush=True)


def _report(out: RunOutput, *, as_json: bool) -> int:
    """Print a finished run's output; return its exit code."""
    if out.status == "rejected" and out.error is not None:
        _say(f"plan rejected: {out.error.message}")
    if as_json:
        _print_document(out)
    else:
        _print_human(out, sys.stdout)
        sys.stdout.flush()
    return EXIT_OK


def _report_failure(failure: CliFailure, *, as_json: bool) -> int:
    """Print a failure: one line on stderr, and the document (or the results) on stdout."""
    _say(f"fanfold: {_one_line(failure.message)}")
    out = RunOutput(
        status="failed",
        results=failure.results,
        metrics=RunMetrics(tasks=len(failure.results)),
        error=failure.error_info(),
    )
    if as_json:
        _print_document(out)
    elif failure.results:
        _print_human(out, sys.stdout)
        sys.stdout.flush()
    return failure.code


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush finds no broken pipe."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


# --- the parser, from the RunSettings declaration ----------------------------------------

COMMANDS = ("run", "resume", "rerun", "demo")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (a `CliFailure`, exit 2)."""

    argv: Sequence[str] = ()

    def error(self, message: str) -> NoReturn:
        """Report a usage error in one line."""
        if "required: command" in message.lower():
            message = "name a command: run, resume, rerun or demo"
        elif message.startswith("unrecognized arguments:"):
            message = _with_suggestions(self, message)
        raise bad_input(f"{message}; see `{self._help_command()} --help`")

    def _help_command(self) -> str:
        # Unknown arguments are found by the top-level parser: point at the command's help.
        if self.prog == "fanfold":
            command = next((a for a in self.argv if a in COMMANDS), None)
            if command is not None:
                return f"fanfold {command}"
        return self.prog


def _options(parser: argparse.ArgumentParser) -> list[str]:
    """Every option string of a parser and of its sub-commands."""
    found: list[str] = []
    for action in parser._actions:
        found.extend(s for s in action.option_strings if s.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found.extend(_options(sub))
    return sorted(set(found))


def _with_suggestions(parser: argparse.ArgumentParser, message: str) -> str:
    known = _options(parser)
    hints = []
    for word in message.removeprefix("unrecognized arguments:").split():
        if word.startswith("--"):
            close = difflib.get_close_matches(word.partition("=")[0], known, n=1)
            if close:
                hints.append(f"{word}: did you mean {close[0]}?")
    return message + (f" ({'; '.join(hints)})" if hints else "")


def _version() -> str:
    try:
        return importlib.metadata.version("fanfold")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a checkout
        return "unknown"


def _epilog() -> str:
    lines = ["exit codes:"] + [f"  {code:<4} {what}" for code, what in EXIT_CODES]
    return "\n".join(lines)


def _default_text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _add_setting_flags(parser: argparse.ArgumentParser, defaults: dict[str, Any] | None) -> None:
    """Add a flag for every setting that declares one.

    `defaults`: what `--help` shows as a setting's default where it differs from the
    declaration's; None: every default is the saved run's (`resume`).
    """
    group = parser.add_argument_group("run settings (each also a RunSettings field)")
    for name, flag in setting_flags().items():
        info = RunSettings.model_fields[name]
        if defaults is None:
            default = "the saved run's"
        elif name in defaults:
            default = _default_text(defaults[name])
        else:
            default = _default_text(info.get_default(call_default_factory=True))
        # The declaration speaks JSON (`null`); the command line says `none`.
        text = _one_line(info.description or name).replace("null", "none")
        help_text = f"{text} (default: {default})".replace("%", "%%")
        if flag.form == "switch":
            group.add_argument(
                flag.name,
                dest=_SETTING + name,
                action="store_const",
                const=True,
                default=None,
                help=help_text,
            )
        else:
            group.add_argument(
                flag.name, dest=_SETTING + name, metavar=flag.metavar, default=None, help=help_text
            )


def _add_output_flags(parser: argparse.ArgumentParser, *, resume: bool) -> None:
    group = parser.add_argument_group("output and durability")
    group.add_argument(
        "--json", action="store_true", help="print one JSON document on stdout, whatever happens"
    )
    group.add_argument(
        "--no-live",
        action="store_true",
        help="on a terminal, print progress lines instead of the live view",
    )
    group.add_argument(
        "--checkpoint",
        metavar="FILE|postgresql://...",
        required=resume,
        default=None,
        help=(
            "the SQLite file or PostgreSQL URL the run was saved to"
            if resume
            else "save the run to a SQLite file (created if missing) or a PostgreSQL URL, "
            "so `fanfold resume` can continue it"
        ),
    )
    if not resume:
        group.add_argument(
            "--thread-id",
            metavar="ID",
            default=None,
            help="the run's thread id in the checkpoint (default: a new random one)",
        )
        _add_temporal_flags(group, worker=False)


def _positive_int(text: str) -> int:
    """Read an integer >= 1 (a flag's value), or say what is wrong with it."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        msg = f"must be an integer >= 1, got `{text}`"
        raise argparse.ArgumentTypeError(msg)
    return value


def _add_temporal_flags(group: Any, *, worker: bool) -> None:
    group.add_argument(
        "--temporal",
        metavar="HOST:PORT",
        required=worker,
        default=None,
        help=(
            "the Temporal server to take work from"
            if worker
            else "run on Temporal: the run is a workflow, its subagents activities on the "
            "workers serving --task-queue (start them with `fanfold worker`)"
        ),
    )
    group.add_argument(
        "--task-queue",
        metavar="NAME",
        default="fanfold",
        help="the Temporal task queue of the run's workflow and activities (default: fanfold)",
    )


def _saved_run_parser(sub: Any, name: str, summary: str, description: str) -> Any:
    """Add a command that works on a saved run (`resume`, `rerun`): THREAD_ID first."""
    parser = sub.add_parser(
        name,
        help=summary,
        description=textwrap.fill(description),
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("thread_id", metavar="THREAD_ID", help="the run's thread id")
    return parser


def build_parser() -> _Parser:
    """Return the `fanfold` parser: its setting flags come from `RunSettings`."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="fanfold",
        description="Run many LLM subagents in parallel on LangGraph.",
        epilog=_epilog(),
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"fanfold {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run_p = sub.add_parser(
        "run",
        help="plan a request (or take a plan), run its tasks in parallel, answer",
        description=textwrap.fill(
            "Plan a request, run its tasks in parallel, write the answer. With --plan FILE "
            "the plan is given (a JSON task list or plan) and no planner runs."
        ),
        epilog=_epilog(),
        formatter_class=formatter,
    )
    run_p.add_argument(
        "request", nargs="?", default=None, help="what to do, in words (optional with --plan)"
    )
    run_p.add_argument(
        "--plan",
        metavar="FILE.json",
        default=None,
        help='run this plan without the planner: a JSON task list, or {"tasks": [...], '
        '"rationale": "..."}; a task is {"id", "description", "kind", "depends_on", '
        '"tools", "timeout_s"} or just a description',
    )
    demo_p = sub.add_parser(
        "demo",
        help="run a built-in request on the offline demo model",
        description="Run a built-in request on the offline demo model (no API key).",
        epilog=_epilog(),
        formatter_class=formatter,
    )
    resume_p = _saved_run_parser(
        sub,
        "resume",
        "continue a checkpointed run",
        "Continue a checkpointed run: the plan and every saved result are kept, only "
        "tasks without a saved result run again. The run's saved settings are used; "
        "flags given here override them.",
    )
    rerun_p = _saved_run_parser(
        sub,
        "rerun",
        "run again only the tasks of a saved run that did not end ok",
        "Run again only the tasks of a finished or stopped run that did not end ok "
        "(and the tasks that depend on them), keep every ok result, and write the "
        "answer anew. The run's saved settings are used; flags given here override "
        "them (a fixed --model, a longer --task-timeout). The thread's history keeps "
        "both attempts.",
    )
    rerun_p.add_argument(
        "--only",
        metavar="STATUS[,STATUS]",
        default=",".join(RERUNNABLE),
        help=f"the statuses to run again, among {', '.join(RERUNNABLE)} (default: all)",
    )
    worker_p = sub.add_parser(
        "worker",
        help="serve runs on Temporal: the orchestrator workflow and/or subagent activities",
        description=textwrap.fill(
            "Serve Fanfold runs from a Temporal server until stopped (Ctrl-C or SIGTERM). "
            "Start as many as you like, on any machines: the same command everywhere. "
            "Workers need the models and tools the runs name (API keys, MCP servers)."
        ),
        epilog=_epilog(),
        formatter_class=formatter,
    )
    worker_p.set_defaults(json=False)
    worker_group = worker_p.add_argument_group("Temporal")
    _add_temporal_flags(worker_group, worker=True)
    worker_group.add_argument(
        "--role",
        choices=("all", "orchestrator", "agents"),
        default="all",
        help="orchestrator: the run workflows only; agents: the subagent (and planner, "
        "answer) activities only; all: both (default)",
    )
    worker_group.add_argument(
        "--max-activities",
        metavar="N",
        type=_positive_int,
        default=None,
        help="at most N activities at once in this worker (default: Temporal's, 100)",
    )
    _add_setting_flags(run_p, {})
    _add_output_flags(run_p, resume=False)
    _add_setting_flags(demo_p, {"model": DEMO_MODEL})
    _add_output_flags(demo_p, resume=False)
    _add_setting_flags(resume_p, None)
    _add_output_flags(resume_p, resume=True)
    _add_setting_flags(rerun_p, None)
    _add_output_flags(rerun_p, resume=True)
    return parser


# --- flags to settings -----------------------------------------------------------------


def _convert(name: str, flag: Flag, value: Any) -> Any:
    """Turn a flag's text into its setting's type; RunSettings checks the value.

    Raises:
        ValueError: the text is not of the setting's type.
    """
    if flag.form == "switch":
        return True
    text = str(value).strip()
    if flag.form == "file":
        return load_mcp_config(text)  # the one file-valued setting: `--mcp`
    if flag.form == "list":
        return [item.strip() for item in text.split(",") if item.strip()]
    types = set(plain_types(RunSettings.model_fields[name].annotation))
    if type(None) in types and text.lower() in ("none", "null"):
        return None
    if int in types:
        return int(text)
    if float in types:
        return float(text)
    return text


@dataclass
class Overrides:
    """The settings given as flags: converted values, and flags whose text did not convert."""

    values: dict[str, Any]
    problems: list[SettingProblem]


def setting_overrides(args: argparse.Namespace) -> Overrides:
    """Return the settings given as flags, converted to their types."""
    out = Overrides({}, [])
    for name, flag in setting_flags().items():
        value = getattr(args, _SETTING + name, None)
        if value is None:
            continue
        try:
            out.values[name] = _convert(name, flag, value)
        except ValueError as exc:
            what = f"{requirement(name)} ({exc})" if flag.form == "file" else requirement(name)
            out.problems.append(SettingProblem(name, flag, what, value))
    return out


def _settings(overrides: Overrides, base: dict[str, Any] | None = None) -> RunSettings:
    """Return settings from `base` (a saved run's) with the flags given on top.

    Raises:
        SettingsError: naming every flag that does not convert or that RunSettings refuses.
    """
    problems = list(overrides.problems)
    try:
        settings = RunSettings(**{**(base or {}), **overrides.values})
    except SettingsError as exc:
        problems += exc.problems
    if problems:
        order = list(RunSettings.model_fields)
        problems.sort(key=lambda p: order.index(p.field) if p.field in order else len(order))
        raise SettingsError(problems)
    return settings


def _check_models(settings: RunSettings) -> None:
    """Build the run's models now, so a spec that cannot work fails before the run."""
    for name in ("model", "planner_model"):
        spec = getattr(settings, name)
        if isinstance(spec, str):
            try:
                load_chat_model(spec)
            except ValueError as exc:
                flag = setting_flags()[name].name
                raise bad_input(f"{flag}: {exc}", exc) from None


# --- plan files ------------------------------------------------------------------------


def read_plan_json(path: str) -> dict[str, Any]:
    """Read a plan file: a JSON task list, or a plan object with `tasks`.

    A task given as a string becomes `{"id": "t<position>", "description": ...}`.

    Raises:
        ValueError: naming the file and what is wrong with it.
    """
    where = f"plan file `{path}`"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{where} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"{where} is a folder, not a JSON file") from None
    except UnicodeDecodeError:
        raise ValueError(f"{where} is not UTF-8 text") from None
    except OSError as exc:
        raise ValueError(f"cannot read {where}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        msg = f"{where} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        raise ValueError(msg) from None
    except RecursionError:
        raise ValueError(f"{where} nests too deeply to be a plan") from None
    shape = 'a JSON task list or a plan object {"tasks": [...]}'
    if isinstance(data, list):
        data = {"tasks": data}
    elif not isinstance(data, dict) or not isinstance(data.get("tasks"), list):
        raise ValueError(f"{where} must hold {shape}")
    tasks = [
        {"id": f"t{i}", "description": t} if isinstance(t, str) else t
        for i, t in enumerate(data["tasks"], start=1)
    ]
    return {**data, "tasks": tasks}


def _validation_text(exc: ValidationError, limit: int = 5) -> str:
    parts = []
    for e in exc.errors()[:limit]:
        where = ".".join(str(p) for p in e["loc"])
        what = str(e["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {what}" if where else what)
    return "; ".join(parts)


def load_plan(path: str) -> Plan:
    """Read and validate a plan file (its tasks form a DAG).

    Raises:
        CliFailure: bad input, naming the file and the problem.
    """
    try:
        data = read_plan_json(path)
    except ValueError as exc:
        raise bad_input(f"{exc}; see `fanfold run --help`") from None
    try:
        return Plan.model_validate(data)
    except ValidationError as exc:
        raise bad_input(
            f"plan file `{path}` is not a valid plan: {_validation_text(exc)}"
        ) from None


# --- plan approval on the terminal -------------------------------------------------------


def _is_terminal(stream: TextIO | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (OSError, ValueError):
        return False


_ACCEPT = ("a", "accept", "y", "yes")
_REJECT = ("r", "reject", "n", "no")
_EDIT = ("e", "edit")
PROMPT = "accept, reject [reason] or edit FILE.json? "


async def _read_line() -> str:
    """Read a line from stdin without blocking the event loop (or Ctrl-C).

    A daemon thread reads it: if the run is interrupted meanwhile, nothing waits on it.
    """
    stdin = sys.stdin
    if stdin is None:
        return ""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[str] = loop.create_future()

    def deliver(line: str) -> None:
        if not answer.done():
            answer.set_result(line)

    def read() -> None:
        try:
            line = stdin.readline()
        except (OSError, ValueError):
            line = ""
        with contextlib.suppress(RuntimeError):  # the loop is gone (interrupted)
            loop.call_soon_threadsafe(deliver, line)

    threading.Thread(target=read, name="fanfold-stdin", daemon=True).start()
    return await answer


def _problem_text(problem: str) -> str:
    return problem.removeprefix("Value error, ")  # pydantic's prefix for a validator's error


async def ask_approval(plan: Plan, problems: Sequence[str] = ()) -> Any:
    """Show the plan on stderr and read a decision from stdin.

    `problems`: why the last answer was refused (an edit that is not a valid plan).
    An answer that is not one, or an edit file that cannot be read, is asked again here
    with the reason; end of input rejects the plan.
    """
    if problems:
        _say("the edited plan was refused: " + "; ".join(_problem_text(p) for p in problems))
    _say("plan:")
    for t in plan.tasks:
        deps = f" <- {', '.join(t.depends_on)}" if t.depends_on else ""
        _say(f"  {t.id} ({t.kind}): {t.description}{deps}")
    echo = not _is_terminal(sys.stdin)
    while True:
        _say(PROMPT, end="")
        try:
            line = await _read_line()
        except asyncio.CancelledError:
            _say("")  # Ctrl-C at the prompt: its message goes on a line of its own
            raise
        if not line:
            _say("")
            return {"action": "reject", "reason": "no answer on stdin"}
        if echo:  # a piped answer is not echoed by a terminal: show it after the prompt
            _say(line.rstrip("\n"))
        word, _, rest = line.strip().partition(" ")
        word, rest = word.lower(), rest.strip()
        if word in _ACCEPT:
            return "accept"
        if word in _REJECT:
            return {"action": "reject", "reason": rest or "rejected"}
        if word in _EDIT:
            if not rest:
                _say("edit needs a file: e FILE.json (a JSON task list or plan)")
                continue
            try:
                return {"action": "edit", "plan": read_plan_json(rest)}
            except ValueError as exc:
                _say(f"{exc}; answer again")
                continue
        _say(f"`{line.strip()}` is no answer: type a (accept), r [reason] or e FILE.json")


# --- running -----------------------------------------------------------------------------


@dataclass
class Session:
    """One command: its arguments, and what the run learnt while it went on.

    Where the run is saved (for the Ctrl-C hint), and whether the plan was edited at
    approval (so a PlanError is told as the edit's).
    """

    args: argparse.Namespace
    thread_id: str | None = None
    checkpoint: str | None = None
    workflow_id: str | None = None
    """A run on Temporal: its workflow (it goes on if this command is interrupted)."""
    settings: RunSettings | None = None
    edited: bool = False
    live: LiveView | None = None

    def progress(self) -> EventHandler:
        """Return the progress handler: the live view on a terminal, else lines on stderr."""
        settings = self.settings or RunSettings()
        wants_live = (
            not getattr(self.args, "no_live", False)
            and _is_terminal(sys.stderr)
            and os.environ.get("TERM") != "dumb"
            and not settings.approve_plan  # the approval prompt needs the terminal
        )
        if not wants_live:
            return Progress(sys.stderr)
        if self.live is None:
            self.live = LiveView(settings, sys.stderr, title=f"fanfold {self.args.command}")
            self.live.start()
        return self.live

    def stop_live(self) -> None:
        """Leave the live view's last frame on the terminal (before the report prints)."""
        if self.live is not None:
            self.live.stop()

    async def approve(self, plan: Plan, problems: Sequence[str] = ()) -> Any:
        """Ask on the terminal (`ask_approval`); remember an edit."""
        decision = await ask_approval(plan, problems)
        if isinstance(decision, dict) and decision.get("action") == "edit":
            self.edited = True
        return decision


def _announce(settings: RunSettings, thread_id: str | None) -> None:
    if isinstance(settings.model, str) and settings.model.startswith("demo"):
        _say(f"model: {settings.model} (offline demo model, not an LLM)")
    if thread_id is not None:
        _say(f"thread: {thread_id}")


def _shown_location(location: str) -> str:
    """A checkpoint location as messages show it: a URL's password is left out."""
    if not is_postgres(location):
        return location
    parts = urlsplit(location)
    if parts.password is None:
        return location
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


def _checkpoint_failure(location: str, exc: Exception) -> CliFailure | None:
    shown = _shown_location(location)
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(exc, psycopg.OperationalError):
        return CliFailure(
            "Unreachable",
            EXIT_UNREACHABLE,
            f"cannot reach the checkpoint database {shown}: {_one_line(str(exc))}; "
            "check that PostgreSQL is running and the --checkpoint URL",
            cause=exc,
        )
    if isinstance(exc, sqlite3.OperationalError | OSError):
        return CliFailure(
            "Unreachable",
            EXIT_UNREACHABLE,
            f"cannot open the checkpoint `{shown}`: {exc}; check the path and its permissions",
            cause=exc,
        )
    if isinstance(exc, sqlite3.DatabaseError):
        return bad_input(
            f"`{shown}` is not a SQLite checkpoint ({exc}); give the file a run was saved "
            "to, or a new file name",
            exc,
        )
    if isinstance(exc, ImportError):
        return bad_input(str(exc), exc)
    return None


def _check_location(location: str, *, resume: bool) -> None:
    """Refuse a SQLite location that is a folder, or (resume) a file that does not exist."""
    if is_postgres(location):
        return
    path = Path(location)
    if resume and not path.exists():
        raise bad_input(
            f"checkpoint file `{location}` does not exist; give the file the run was "
            f"saved to (`fanfold run ... --checkpoint FILE --thread-id ID`)"
        )
    if path.is_dir():
        raise bad_input(
            f"checkpoint `{location}` is a folder; give a file, e.g. {path / 'runs.sqlite'}"
        )


@contextlib.asynccontextmanager
async def _orchestrator(
    location: str | None, *, resume: bool
) -> AsyncIterator[Orchestrator | None]:
    """Yield the orchestrator compiled on the checkpoint at `location` (None: no checkpoint).

    For a resume, a SQLite file that does not exist is bad input, and nothing is created.
    """
    if location is None:
        yield None
        return
    _check_location(location, resume=resume)
    async with contextlib.AsyncExitStack() as stack:
        try:
            saver = await stack.enter_async_context(open_checkpointer(location))
            setup = getattr(saver, "setup", None)
            if setup is not None:
                await setup()  # an unusable file fails here, not in the middle of the run
            # Beside the checkpoints: the live view's keys write their commands there
            # too, so a cancel survives a crash before the run acted on it.
            store = await stack.enter_async_context(open_store(location))
        except Exception as exc:
            failure = _checkpoint_failure(location, exc)
            if failure is None:
                raise
            raise failure from exc
        yield compile_orchestrator(checkpointer=saver, store=store)


async def _run_command(session: Session) -> RunOutput:
    """Run `run` or `demo`: validate every input, then open the checkpoint and run."""
    args = session.args
    overrides = setting_overrides(args)
    if args.command == "demo":
        overrides.values.setdefault("model", DEMO_MODEL)
    settings = session.settings = _settings(overrides)
    plan_file: str | None = getattr(args, "plan", None)
    plan = load_plan(plan_file) if plan_file is not None else None
    if args.command == "demo":
        request = DEMO_REQUEST
    elif args.request and args.request.strip():
        request = args.request
    elif plan is not None:
        request = plan.rationale or "; ".join(t.description for t in plan.tasks)
    else:
        raise bad_input(
            "`fanfold run` needs a REQUEST (what to do, in words) or --plan FILE.json; "
            "see `fanfold run --help`"
        )
    _check_models(settings)
    if args.thread_id is not None and args.checkpoint is None:
        _say(
            "fanfold: warning: --thread-id without --checkpoint saves nothing, so this run "
            "cannot be resumed; add --checkpoint FILE.sqlite to save it"
        )
    if args.temporal is not None:
        return await _temporal_run(session, request, settings, plan)
    async with _orchestrator(args.checkpoint, resume=False) as graph:
        config: RunnableConfig = {}
        thread_id = args.thread_id
        if graph is not None:
            thread_id = thread_id or uuid.uuid4().hex
            config = {"configurable": {"thread_id": thread_id}}
            session.thread_id, session.checkpoint = thread_id, args.checkpoint
        _announce(settings, thread_id if graph is not None else None)
        on_event = session.progress()
        if session.live is not None and _is_terminal(sys.stdin):
            # The live view takes keys: steer the run through a handle.
            handle = await start(
                request, settings=settings, plan=plan, graph=graph, config=config, on_event=on_event
            )
            with TerminalKeys(handle, session.live, sys.stdin):
                return await handle.result()
        return await arun(
            request,
            settings=settings,
            plan=plan,
            graph=graph,
            config=config,
            on_event=on_event,
            on_approval=session.approve if settings.approve_plan else None,
        )


def _temporal() -> Any:
    """Import `fanfold.graphs.temporal`, or say how to install it."""
    try:
        from fanfold.graphs import temporal
    except ImportError as exc:
        msg = "--temporal needs the temporal extra: pip install 'fanfold[temporal]'"
        raise bad_input(msg, cause=exc) from exc
    return temporal


async def _connect(temporal: Any, address: str) -> Any:
    try:
        return await temporal.connect(address)
    except Exception as exc:  # noqa: BLE001 - Temporal's connection errors vary by cause
        msg = f"--temporal {address}: no Temporal server answers there ({exc})"
        raise CliFailure("Unreachable", EXIT_UNREACHABLE, msg, cause=exc) from exc


async def _temporal_run(
    session: Session, request: str, settings: RunSettings, plan: Plan | None
) -> RunOutput:
    """Run `run`/`demo --temporal`: start the workflow, show its progress, return its output."""
    args = session.args
    for flag, given in (("--checkpoint", args.checkpoint), ("--thread-id", args.thread_id)):
        if given:
            raise bad_input(
                f"{flag} is not supported with --temporal: a Temporal run is durable by itself "
                "(its workflow id names it)"
            )
    temporal = _temporal()
    try:
        temporal.portable(settings)
    except ValueError as exc:
        raise bad_input(str(exc), cause=exc) from exc
    client = await _connect(temporal, args.temporal)
    try:
        handle = await temporal.start_run(
            client, request, settings=settings, plan=plan, task_queue=args.task_queue
        )
    except ValueError as exc:  # a request and plan over Temporal's payload limit
        raise bad_input(str(exc), cause=exc) from exc
    _say(f"fanfold: running on Temporal as workflow {handle.id} (task queue {args.task_queue})")
    session.workflow_id = handle.id
    approval = session.approve if settings.approve_plan else None
    out = await temporal.follow(client, handle, on_event=session.progress(), on_approval=approval)
    return cast(RunOutput, out)


async def _worker_command(session: Session) -> int:
    """Run `worker`: serve the task queue until SIGINT/SIGTERM."""
    args = session.args
    temporal = _temporal()
    try:
        client = await _connect(temporal, args.temporal)
        worker = temporal.make_worker(
            client, task_queue=args.task_queue, role=args.role, max_activities=args.max_activities
        )
    except ValueError as exc:
        raise bad_input(str(exc), cause=exc) from exc
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    running = asyncio.ensure_future(worker.run())
    stopping = asyncio.ensure_future(stop.wait())
    _say(
        f"fanfold: worker {this_worker()} serving {args.task_queue} on {args.temporal} "
        f"(role {args.role})"
    )
    await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if running.done():
        running.result()  # the worker failed (its server went away for good, say): say why
    try:
        # Running activities are cancelled; one that ignores it (a tool blocking in a
        # thread) must not hold the process: Temporal runs it again elsewhere.
        await asyncio.wait_for(worker.shutdown(), timeout=WORKER_GRACE_S)
    except TimeoutError:
        _say(
            f"fanfold: worker {this_worker()}: activities still running after "
            f"{WORKER_GRACE_S:g}s; leaving them (they run again on another worker)"
        )
    _say(f"fanfold: worker {this_worker()} stopped")
    return EXIT_OK


WORKER_GRACE_S = 10.0
"""How long a stopping worker waits for its cancelled activities to end."""


async def _saved_run_command(session: Session) -> RunOutput:
    """Run `resume` or `rerun`: the saved settings, with the flags given on top."""
    args = session.args
    overrides = setting_overrides(args)
    only = _only(args) if args.command == "rerun" else RERUNNABLE
    async with _orchestrator(args.checkpoint, resume=True) as graph:
        assert graph is not None
        try:
            saved = await saved_settings(graph, args.thread_id)
        except KeyError:
            shown = _shown_location(args.checkpoint)
            raise bad_input(
                f"no run with thread id `{args.thread_id}` in `{shown}`; the thread id is "
                "the `thread:` line a checkpointed run prints"
            ) from None
        settings = session.settings = _settings(overrides, saved)
        _check_models(settings)
        session.thread_id, session.checkpoint = args.thread_id, args.checkpoint
        _announce(settings, args.thread_id)
        if args.command == "rerun":
            try:
                return await arerun(
                    args.thread_id,
                    graph=graph,
                    only=only,
                    settings=settings,
                    on_event=session.progress(),
                )
            except NothingToRerun as exc:
                raise bad_input(str(exc), exc) from exc
        return await aresume(
            args.thread_id,
            graph=graph,
            settings=settings,
            on_event=session.progress(),
            on_approval=session.approve,  # asked only if the run waits on an approval
        )


def _only(args: argparse.Namespace) -> tuple[str, ...]:
    try:
        return check_only(str(args.only).split(","))
    except ValueError as exc:
        message = str(exc).replace("`only`", "--only", 1)
        raise bad_input(f"{message}; e.g. --only failed,timed_out", exc) from exc


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _server(exc: BaseException) -> str:
    """Return ` at <scheme://host:port>` for an HTTP error that knows its request."""
    for e in _chain(exc):
        try:
            request = getattr(e, "request", None)
        except RuntimeError:  # httpx: an error raised without a request
            request = None
        url = getattr(request, "url", None)
        if url is not None:
            parts = urlsplit(str(url))
            return f" at {parts.scheme}://{parts.netloc}"
    return ""


def _root_message(exc: BaseException) -> str:
    """Return the most specific message along an exception's chain."""
    messages = [str(e) for e in _chain(exc) if str(e)]
    return messages[-1] if messages else type(exc).__name__


def _unreachable(exc: BaseException, settings_hint: str) -> CliFailure | None:
    """Return an exit-3 failure when the model server or the database could not serve."""
    psycopg = sys.modules.get("psycopg")
    for e in _chain(exc):
        if psycopg is not None and isinstance(e, psycopg.OperationalError):
            return CliFailure(
                "Unreachable",
                EXIT_UNREACHABLE,
                f"the checkpoint database failed: {_one_line(str(e))}; check that it is running",
                cause=exc,
            )
        kind = classify(e)
        if kind is None:
            continue
        at = _server(e)
        why = _one_line(_root_message(e))
        if kind == "connection":
            message = (
                f"cannot reach the model server{at}: {why}; check that it is running and the "
                f"address in --model (or OPENAI_BASE_URL)"
            )
        elif kind == "timeout":
            message = (
                f"the model server{at} did not answer in time ({why}); check it, or raise "
                "--request-timeout"
            )
        elif kind == "rate_limited":
            message = (
                f"the model server{at} kept refusing with 429 (rate limited){settings_hint}: "
                f"{why}; lower --rps or --max-concurrency, or raise --max-retries"
            )
        elif kind == "server_error":
            message = (
                f"the model server{at} kept failing{settings_hint}: {why}; try again later, "
                "or raise --max-retries"
            )
        else:
            message = f"the model server{at} sent broken replies{settings_hint}: {why}"
        return CliFailure("Unreachable", EXIT_UNREACHABLE, message, cause=e)
    return None


def _refused(exc: BaseException) -> CliFailure | None:
    """Return an exit-2 failure when the model server refused the request (a 4xx)."""
    openai = sys.modules.get("openai")
    if openai is None:
        return None
    for e in _chain(exc):
        if isinstance(e, openai.APIStatusError):
            return bad_input(
                f"the model server{_server(e)} refused the request ({e.status_code}: "
                f"{_one_line(str(e))}); check the model name in --model and OPENAI_API_KEY",
                e,
            )
    return None


def _plan_failure(exc: PlanError, session: Session) -> CliFailure:
    problems = "; ".join(_problem_text(p) for p in exc.problems)
    plan_file: str | None = getattr(session.args, "plan", None)
    if session.edited:
        message = f"the edited plan is still invalid: {problems}; the run did not start"
        return CliFailure("PlanError", EXIT_BAD_INPUT, message, cause=exc)
    if exc.raw is not None:
        reply = f'"{_clip(_one_line(exc.raw), REPLY_SHOWN)}"' if exc.raw.strip() else "nothing"
        message = (
            f"the model gave no valid plan: {problems}; it replied {reply}; use a model that "
            "calls tools or answers with a JSON plan, or give the plan with --plan FILE"
        )
    elif plan_file is not None:
        message = f"the plan in `{plan_file}` is invalid: {problems}; fix the file"
    else:
        message = f"invalid plan: {problems}"
    return CliFailure("PlanError", EXIT_BAD_INPUT, message, detail=str(exc), cause=exc)


_UNREACHABLE_TYPES = (
    "APIConnectionError",
    "OpenAIConnectionError",
    "APITimeoutError",
    "ConnectError",
    "ConnectTimeout",
)
"""Exception type names that say a run on Temporal could not reach its model server."""


def _remote_failure(exc: Exception) -> CliFailure | None:
    """Describe a run on Temporal that failed (`RunFailed`: a type name and a message)."""
    temporal = sys.modules.get("fanfold.graphs.temporal")
    if temporal is None or not isinstance(exc, temporal.RunFailed):
        return None
    unreachable = exc.kind in _UNREACHABLE_TYPES
    return CliFailure(
        "Unreachable" if unreachable else "TaskError",
        EXIT_UNREACHABLE if unreachable else EXIT_RUN_FAILED,
        f"the run failed on Temporal: {_one_line(str(exc))}",
        cause=exc,
    )


def failure_of(exc: Exception, session: Session) -> CliFailure:
    """Describe any exception of a run as the failure the command reports."""
    if isinstance(exc, CliFailure):
        return exc
    if isinstance(exc, SettingsError):
        return bad_input(exc.for_cli(), exc)
    if isinstance(exc, PlanError):
        return _plan_failure(exc, session)
    if isinstance(exc, ThreadBusy):
        return CliFailure("ThreadBusy", EXIT_BUSY, str(exc), cause=exc)
    if isinstance(exc, TaskFailedError):
        return CliFailure(
            "TaskFailed",
            EXIT_RUN_FAILED,
            f"{exc}; --policy settle lets the other tasks finish",
            detail=str(exc),
            cause=exc,
            results=exc.results,
        )
    if isinstance(exc, QuorumUnreachable):
        return CliFailure(
            "QuorumUnreachable",
            EXIT_RUN_FAILED,
            f"{exc}; a smaller K in --policy quorum:K, or --policy settle, keeps the results",
            detail=str(exc),
            cause=exc,
            results=exc.results,
        )
    remote = _remote_failure(exc)
    if remote is not None:
        return remote
    retries = session.settings.max_retries if session.settings is not None else None
    hint = "" if retries is None else f" after {retries} retr{'y' if retries == 1 else 'ies'}"
    found = _unreachable(exc, hint) or _refused(exc)
    if found is not None:
        return found
    return CliFailure(
        "TaskError",
        EXIT_RUN_FAILED,
        f"unexpected error: {type(exc).__name__}: {_one_line(str(exc))}; "
        "set FANFOLD_TRACEBACK=1 to see where",
        cause=exc,
    )


async def _command(session: Session) -> int:
    as_json: bool = session.args.json
    try:
        try:
            try:
                if session.args.command == "worker":
                    return await _worker_command(session)
                if session.args.command in ("resume", "rerun"):
                    out = await _saved_run_command(session)
                else:
                    out = await _run_command(session)
            finally:
                session.stop_live()
        except BrokenPipeError:
            raise
        except Exception as exc:
            if os.environ.get("FANFOLD_TRACEBACK") and not isinstance(exc, CliFailure):
                raise
            return _report_failure(failure_of(exc, session), as_json=as_json)
        return _report(out, as_json=as_json)
    finally:
        await aclose_models()


def _interrupted(session: Session) -> CliFailure:
    message = "interrupted"
    if session.workflow_id is not None:
        message += (
            f"; the run goes on on Temporal as workflow {session.workflow_id} (end it with "
            f"`temporal workflow cancel --workflow-id {session.workflow_id}`)"
        )
    if session.thread_id is not None and session.checkpoint is not None:
        shown = _shown_location(session.checkpoint)
        message += f"; continue with `fanfold resume {session.thread_id} --checkpoint {shown}`"
    return CliFailure("RunStopped", EXIT_INTERRUPTED, message)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in arguments
    try:
        parser = build_parser()
        parser.argv = arguments
        try:
            args = parser.parse_args(arguments)
        except CliFailure as failure:
            return _report_failure(failure, as_json=as_json)
        except SystemExit as exit_:  # --help, --version
            return exit_.code if isinstance(exit_.code, int) else EXIT_OK
        session = Session(args)
        try:
            return run_until_done(_command(session))
        except KeyboardInterrupt:
            return _report_failure(_interrupted(session), as_json=args.json)
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_BROKEN_PIPE


def console() -> int:
    """The `fanfold` command: `main`, then an exit that abandoned work cannot hold up.

    A tool that ignored the run's stop (it swallows cancellation, or sleeps in a
    thread) may still be running when the command is done: the process ends anyway.
    """
    code = main()
    exit_now_if_stuck(code)
    return code


if __name__ == "__main__":
    sys.exit(console())
