"""The `fanfold` command: run a request, or the offline demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from langchain_core.runnables import RunnableConfig

from fanfold.graphs.api import RunOutput, aresume, arun
from fanfold.graphs.checkpoint import open_checkpointer
from fanfold.graphs.orchestrator import Orchestrator, compile_orchestrator
from fanfold.nodes.context import DEFAULT_MAX_CONCURRENCY, RunSettings, check_policy
from fanfold.nodes.domain import ErrorInfo, Plan, RunMetrics
from fanfold.nodes.errors import FanfoldError, PlanError, QuorumUnreachable, TaskFailedError
from fanfold.nodes.events import ProgressEvent
from fanfold.nodes.models import aclose_models

DEMO_REQUEST = (
    "Compare asyncio, threads and processes for I/O-bound Python work; "
    "estimate 40 * 0.25 seconds of requests run one by one versus 40 * 0.25 / 8 with 8 workers"
)
DEMO_MODEL = "demo:latency=0.2"

EXIT_OK = 0
EXIT_TASK_FAILED = 1
EXIT_BAD_INPUT = 2


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
        else:
            line = (
                f"finish {event['task_id']} {event['status']} "
                f"in {event['duration_s']:.2f}s, {event['total_tokens']} tokens"
            )
        print(f"[{t:7.2f}s] {line}", file=self.stream, flush=True)


def _policy(text: str) -> str:
    try:
        return check_policy(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_run_options(p: argparse.ArgumentParser, *, model: str | None) -> None:
    p.add_argument("--model", default=model, help=f"model spec (default: {model or 'saved'})")
    p.add_argument(
        "--max-concurrency",
        type=int,
        default=None,
        help=f"most subagents at once (default: {DEFAULT_MAX_CONCURRENCY})",
    )
    p.add_argument("--task-timeout", type=float, default=None, help="seconds per task")
    p.add_argument(
        "--policy",
        type=_policy,
        default=None,
        help="settle (default) | fail_fast | quorum:K",
    )
    p.add_argument("--max-retries", type=int, default=None, help="retries per model call")
    p.add_argument("--rps", type=float, default=None, help="model requests per second, run-wide")
    p.add_argument("--max-tokens", type=int, default=None, help="token budget of the run")
    p.add_argument("--max-wall-time", type=float, default=None, help="seconds budget of the run")
    p.add_argument("--max-task-tokens", type=int, default=None, help="token budget of each task")
    p.add_argument(
        "--checkpoint", default=None, help="SQLite file or postgresql:// URL to checkpoint to"
    )
    p.add_argument("--max-rounds", type=int, default=None, help="planning rounds (1: no replan)")
    p.add_argument("--max-depth", type=int, default=None, help="delegation depth (1: none)")
    p.add_argument("--workspace", default=None, help="folder the file tools are confined to")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.add_argument(
        "--approve",
        action="store_true",
        help="show the plan and ask on stdin: [a]ccept, [r]eject [reason], [e]dit FILE.json",
    )


def _ask_approval(plan: Plan) -> Any:
    """Show the plan on stderr and read a decision from stdin."""
    print("plan:", file=sys.stderr)
    for t in plan.tasks:
        deps = f" <- {', '.join(t.depends_on)}" if t.depends_on else ""
        print(f"  {t.id} ({t.kind}): {t.description}{deps}", file=sys.stderr)
    print("accept, reject [reason] or edit FILE.json? ", end="", file=sys.stderr, flush=True)
    line = sys.stdin.readline()
    if not line:
        return {"action": "reject", "reason": "no answer on stdin"}
    word, _, rest = line.strip().partition(" ")
    if word in ("a", "accept", "y", "yes"):
        return "accept"
    if word in ("r", "reject", "n", "no"):
        return {"action": "reject", "reason": rest.strip() or "rejected"}
    if word in ("e", "edit") and rest.strip():
        data = json.loads(Path(rest.strip()).read_text(encoding="utf-8"))
        return {"action": "edit", "plan": data if "tasks" in data else {"tasks": data}}
    return {"action": "unknown", "answer": line.strip()}  # asked again, with the problem


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fanfold", description="Run many LLM subagents in parallel on LangGraph."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="plan a request, run its tasks in parallel, answer")
    run_p.add_argument("request", help="what to do, in words")
    demo_p = sub.add_parser("demo", help="run a built-in request on the offline demo model")
    resume_p = sub.add_parser("resume", help="continue a checkpointed run")
    resume_p.add_argument("thread_id", help="the run's thread id")
    for p, model in ((run_p, "demo"), (demo_p, DEMO_MODEL)):
        _add_run_options(p, model=model)
        p.add_argument("--thread-id", default=None, help="thread id of a checkpointed run")
    _add_run_options(resume_p, model=None)
    return parser


_SETTING_FLAGS = {
    "model": "model",
    "max_concurrency": "max_concurrency",
    "task_timeout": "task_timeout_s",
    "policy": "policy",
    "max_retries": "max_retries",
    "rps": "requests_per_second",
    "max_tokens": "max_total_tokens",
    "max_wall_time": "max_wall_time_s",
    "max_task_tokens": "max_task_tokens",
    "max_rounds": "max_rounds",
    "max_depth": "max_depth",
    "workspace": "workspace",
}


def _settings(args: argparse.Namespace, base: dict[str, Any] | None = None) -> RunSettings:
    """Return settings from `base` (a saved run's) with every flag given on top."""
    kwargs = dict(base or {})
    if getattr(args, "approve", False):
        kwargs["approve_plan"] = True
    for flag, field_name in _SETTING_FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            kwargs[field_name] = value
    return RunSettings(**kwargs)


def _print_human(out: RunOutput, stream: TextIO) -> None:
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


async def _main(args: argparse.Namespace) -> int:
    if args.command == "resume" and not args.checkpoint:
        raise ValueError("`fanfold resume` needs --checkpoint (the run's SQLite file or URL)")
    if args.checkpoint:
        async with open_checkpointer(args.checkpoint) as saver:
            graph = compile_orchestrator(checkpointer=saver)
            return await _execute(args, graph)
    return await _execute(args, None)


async def _execute(args: argparse.Namespace, graph: Orchestrator | None) -> int:
    progress = Progress(sys.stderr)
    try:
        if args.command == "resume":
            assert graph is not None
            saved = await graph.aget_state({"configurable": {"thread_id": args.thread_id}})
            settings = _settings(args, saved.values.get("settings") if saved.values else None)
            _announce(settings, args.thread_id)
            out = await aresume(args.thread_id, graph=graph, settings=settings, on_event=progress)
        else:
            settings = _settings(args)
            request = args.request if args.command == "run" else DEMO_REQUEST
            config: RunnableConfig = {}
            thread_id = args.thread_id
            if graph is not None:
                thread_id = thread_id or uuid.uuid4().hex
                config = {"configurable": {"thread_id": thread_id}}
            _announce(settings, thread_id)
            out = await arun(
                request,
                settings=settings,
                graph=graph,
                config=config,
                on_event=progress,
                on_approval=_ask_approval if settings.approve_plan else None,
            )
        code = EXIT_OK
    except (TaskFailedError, QuorumUnreachable) as exc:
        out = RunOutput(
            status="failed",
            results=exc.results,
            metrics=RunMetrics(tasks=len(exc.results)),
            error=ErrorInfo.of(
                "TaskFailed" if isinstance(exc, TaskFailedError) else "QuorumUnreachable", exc
            ),
        )
        code = EXIT_TASK_FAILED
        print(f"fanfold: {exc}", file=sys.stderr)
    if args.json:
        print(json.dumps(out.model_dump(mode="json"), indent=2))
    else:
        _print_human(out, sys.stdout)
    return code


def _announce(settings: RunSettings, thread_id: str | None) -> None:
    if isinstance(settings.model, str) and settings.model.startswith("demo"):
        print(
            f"model: {settings.model} (offline demo model, not an LLM)", file=sys.stderr, flush=True
        )
    if thread_id is not None:
        print(f"thread: {thread_id}", file=sys.stderr, flush=True)


async def _main_closing(args: argparse.Namespace) -> int:
    try:
        return await _main(args)
    finally:
        await aclose_models()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = _parser().parse_args(argv)
    try:
        return asyncio.run(_main_closing(args))
    except (PlanError, ValueError, TypeError, KeyError) as exc:
        print(f"fanfold: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except FanfoldError as exc:  # pragma: no cover - every subclass is handled above
        print(f"fanfold: {exc}", file=sys.stderr)
        return EXIT_TASK_FAILED


if __name__ == "__main__":
    sys.exit(main())
