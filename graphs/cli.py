"""The `fanfold` command: run a request, or the offline demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from graphs.api import RunOutput, arun
from nodes.context import DEFAULT_MAX_CONCURRENCY, POLICIES, RunSettings
from nodes.domain import ErrorInfo, RunMetrics
from nodes.errors import FanfoldError, PlanError, TaskFailedError
from nodes.events import EVENT_KEY
from nodes.models import aclose_models

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

    def __call__(self, event: dict[str, Any]) -> None:
        """Print an event."""
        t = time.monotonic() - self.t0
        name = event[EVENT_KEY]
        if name == "plan_ready":
            line = f"plan: {event['tasks']} tasks in {event['generations']} generations"
        elif name == "task_started":
            line = f"start  {event['task_id']} ({event['kind']})"
        elif name == "task_finished":
            line = (
                f"finish {event['task_id']} {event['status']} "
                f"in {event['duration_s']:.2f}s, {event['total_tokens']} tokens"
            )
        else:  # pragma: no cover - future events
            line = json.dumps(event)
        print(f"[{t:7.2f}s] {line}", file=self.stream, flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fanfold", description="Run many LLM subagents in parallel on LangGraph."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="plan a request, run its tasks in parallel, answer")
    run_p.add_argument("request", help="what to do, in words")
    demo_p = sub.add_parser("demo", help="run a built-in request on the offline demo model")
    for p, model in ((run_p, "demo"), (demo_p, DEMO_MODEL)):
        p.add_argument("--model", default=model, help=f"model spec (default: {model})")
        p.add_argument(
            "--max-concurrency",
            type=int,
            default=DEFAULT_MAX_CONCURRENCY,
            help=f"most subagents at once (default: {DEFAULT_MAX_CONCURRENCY})",
        )
        p.add_argument("--task-timeout", type=float, default=None, help="seconds per task")
        p.add_argument("--policy", choices=POLICIES, default="settle", help="on a task failure")
        p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    return parser


def _settings(args: argparse.Namespace) -> RunSettings:
    kwargs: dict[str, Any] = {
        "model": args.model,
        "max_concurrency": args.max_concurrency,
        "policy": args.policy,
    }
    if args.task_timeout is not None:
        kwargs["task_timeout_s"] = args.task_timeout
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
    settings = _settings(args)
    request = args.request if args.command == "run" else DEMO_REQUEST
    if isinstance(settings.model, str) and settings.model.startswith("demo"):
        print(
            f"model: {settings.model} (offline demo model, not an LLM)", file=sys.stderr, flush=True
        )
    try:
        out = await arun(request, settings=settings, on_event=Progress(sys.stderr))
        code = EXIT_OK
    except TaskFailedError as exc:
        out = RunOutput(
            status="failed",
            results=exc.results,
            metrics=RunMetrics(tasks=len(exc.results)),
            error=ErrorInfo.of(exc),
        )
        code = EXIT_TASK_FAILED
        print(f"fanfold: {exc}", file=sys.stderr)
    if args.json:
        print(json.dumps(out.model_dump(mode="json"), indent=2))
    else:
        _print_human(out, sys.stdout)
    return code


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
    except (PlanError, ValueError, TypeError) as exc:
        print(f"fanfold: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except FanfoldError as exc:  # pragma: no cover - every subclass is handled above
        print(f"fanfold: {exc}", file=sys.stderr)
        return EXIT_TASK_FAILED


if __name__ == "__main__":
    sys.exit(main())
