"""Run API: run the orchestrator, or run given tasks in parallel without a planner."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any, Literal, TypeVar, cast

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.config import get_config
from langgraph.constants import START
from langgraph.types import Command, Overwrite, StateSnapshot
from pydantic import BaseModel, Field, ValidationError

from fanfold.graphs.lease import thread_lease
from fanfold.graphs.loop import run_until_done
from fanfold.graphs.orchestrator import Orchestrator, compile_orchestrator
from fanfold.nodes.context import DEFAULT_MAX_CONCURRENCY, Policy, RunSettings, concurrency
from fanfold.nodes.dispatch import SUBAGENT
from fanfold.nodes.domain import ErrorInfo, Plan, RunMetrics, SubagentResult, Task
from fanfold.nodes.errors import NothingToRerun, PlanError, QuorumUnreachable, TaskFailedError
from fanfold.nodes.events import ProgressEvent, is_event, now
from fanfold.nodes.models import aclose_models
from fanfold.nodes.planner import check_plan
from fanfold.nodes.rerun import RERUNNABLE, check_only, rerun_selection
from fanfold.nodes.scope import RunScope, ScopedControl
from fanfold.nodes.state import OrchestratorInput, OrchestratorUpdate
from fanfold.nodes.steer import Steering

T = TypeVar("T")

EventHandler = Callable[[ProgressEvent], None]
"""Called with every Fanfold progress event (a typed dict), as it happens."""

RunStatus = Literal["ok", "partial", "failed", "budget_exceeded", "rejected", "awaiting_approval"]


class RunOutput(BaseModel):
    """Everything a run hands back; `--json` prints exactly this."""

    answer: str = ""
    status: RunStatus = "ok"
    plan: Plan | None = None
    results: list[SubagentResult] = Field(default_factory=list)
    metrics: RunMetrics = Field(default_factory=RunMetrics)
    error: ErrorInfo | None = None


ApprovalHandler = Callable[[Plan], Any]
"""Called with the plan when `approve_plan` is set; returns (or awaits to) a decision:
`"accept"`, `"reject"`, `{"action": "reject", "reason": ...}`,
`{"action": "edit", "tasks": [...]}` or a `Plan`.

A handler that names a `problems` parameter (give it a default, e.g.
`def review(plan, problems=()): ...`) is also told why its last decision was
refused: a list of reasons (an edit that is not a valid plan), empty on the first ask."""

TokenHandler = Callable[[str | None, str], None]
"""Called with `(task_id, text)` for each piece of text a model streams (`None`: the
planner's or the answer's)."""


@functools.cache
def _default_graph(synthesize_answer: bool, memory: bool = False) -> Orchestrator:
    # `memory`: an in-memory checkpointer, which an interrupt (plan approval) needs;
    # `arun` deletes each run's thread from it when the run ends.
    return compile_orchestrator(
        synthesize_answer=synthesize_answer, checkpointer=InMemorySaver() if memory else None
    )


async def arun(
    request: str,
    *,
    settings: RunSettings | None = None,
    plan: Plan | None = None,
    graph: Orchestrator | None = None,
    on_event: EventHandler | None = None,
    config: RunnableConfig | None = None,
    on_approval: ApprovalHandler | None = None,
    on_token: TokenHandler | None = None,
) -> RunOutput:
    """Run the orchestrator on a request and return its output.

    Args:
        request: what to do, in words.
        settings: run settings; defaults everywhere when omitted.
        plan: a ready plan; the planner then only validates it.
        graph: a compiled orchestrator (e.g. one with a checkpointer).
        on_event: called with each progress event while the run goes on.
        config: extra run config (e.g. `{"configurable": {"thread_id": ...}}`).
        on_approval: with `settings.approve_plan`, decides on the plan (see
            `ApprovalHandler`); required then.
        on_token: called with `(task_id, text)` for each piece of text a model streams:
            a subagent's under its task id, the planner's and the answer's under
            `None`. Models stream when this is given (see `stream_tokens`).

    Raises:
        ValueError: `approve_plan` without `on_approval`.
        PlanError: no valid plan (or an edited plan still invalid after 3 tries).
        TaskFailedError: a task failed under `fail_fast`; `results` holds every
            result that had finished, in plan order.
        ThreadBusy: with a checkpointer, another run holds the thread's lease (in
            this process or another one): one run per thread at a time.
    """
    if _inside_a_run():
        # A run of its own (an `arun` inside another run's tool, say): LangGraph would
        # otherwise make it a subgraph of the enclosing task.
        return await _detached(
            arun(
                request,
                settings=settings,
                plan=plan,
                graph=graph,
                on_event=on_event,
                config=config,
                on_approval=on_approval,
                on_token=on_token,
            )
        )
    settings = settings if settings is not None else RunSettings()
    if settings.approve_plan and on_approval is None:
        msg = "`approve_plan=True` needs `on_approval=` (or run the graph and resume it yourself)"
        raise ValueError(msg)
    own_graph = graph is None
    if graph is None:
        graph = _default_graph(True, memory=settings.approve_plan)
    run_config: RunnableConfig = {**(config or {})}
    configurable = dict(run_config.get("configurable") or {})
    if graph.checkpointer and "thread_id" not in configurable:
        configurable["thread_id"] = uuid.uuid4().hex
        run_config["configurable"] = configurable
    inputs: dict[str, Any] = {"request": request, "settings": settings.to_json()}
    if plan is not None:
        inputs["given_plan"] = plan
    # The default graph's thread is this run's own: no other run can take it.
    saver = None if own_graph else graph.checkpointer
    try:
        async with thread_lease(saver, str(configurable.get("thread_id", ""))):
            out = await _stream(graph, inputs, settings, run_config, on_event, on_token)
            out = await _approve(graph, out, settings, run_config, on_event, on_approval, on_token)
    finally:
        if own_graph and graph.checkpointer:
            # The default graph's in-memory checkpoints are this run's alone: drop them.
            await _delete_thread(graph, configurable["thread_id"])
    return out


class TokenStream:
    """The text a run's models stream, by task, as it comes: see `stream_tokens`."""

    def __init__(self, request: str, run_kwargs: dict[str, Any]) -> None:
        self._request = request
        self._kwargs = run_kwargs
        self._started = False
        self.output: RunOutput | None = None
        """The run's output, once the iteration has ended."""

    def __aiter__(self) -> AsyncIterator[tuple[str | None, str]]:
        if self._started:
            msg = "a TokenStream runs its request once: iterate over it once"
            raise RuntimeError(msg)
        self._started = True
        return self._pieces()

    async def _pieces(self) -> AsyncIterator[tuple[str | None, str]]:
        queue: asyncio.Queue[tuple[str | None, str] | None] = asyncio.Queue()
        run = asyncio.ensure_future(
            arun(
                self._request, on_token=lambda t, text: queue.put_nowait((t, text)), **self._kwargs
            )
        )
        run.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            while (piece := await queue.get()) is not None:
                yield piece
            self.output = run.result()  # the run's error, if it failed, raises here
        finally:
            if not run.done():  # the caller stopped reading: the run stops too
                run.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await run


_HANDLE_CONTROL: contextvars.ContextVar[ScopedControl | None] = contextvars.ContextVar(
    "fanfold_handle_control", default=None
)
"""The control a `RunHandle`'s run starts with (set in the handle's task only)."""


class RunHandle:
    """A run going on in this event loop, to watch and steer (see `start`)."""

    def __init__(self, scope: RunScope) -> None:
        self._scope = scope
        steer = scope.steer
        assert steer is not None
        self._steer = steer
        self._task: asyncio.Task[RunOutput] | None = None
        self._events: list[ProgressEvent] = []
        self._changed = asyncio.Event()
        self.thread_id: str | None = None

    # --- watching -------------------------------------------------------------------

    def _on_event(self, event: ProgressEvent) -> None:
        self._events.append(event)
        self._changed.set()

    async def events(self) -> AsyncIterator[ProgressEvent]:
        """Yield the run's progress events, from its first, until it ends."""
        assert self._task is not None
        seen = 0
        while True:
            while seen < len(self._events):
                seen += 1
                yield self._events[seen - 1]
            if self._task.done():
                return
            self._changed.clear()
            waiter = asyncio.ensure_future(self._changed.wait())
            await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()

    @property
    def done(self) -> bool:
        """Tell whether the run has ended."""
        return self._task is not None and self._task.done()

    async def result(self) -> RunOutput:
        """Wait for the run and return its output (its error raises here)."""
        assert self._task is not None
        return await asyncio.shield(self._task)

    # --- steering -------------------------------------------------------------------

    async def cancel_task(self, task_id: str, reason: str = "cancelled") -> bool:
        """Cancel one task; its dependents are skipped, its siblings go on.

        A running task ends `cancelled` at once (the reason is its error message); one
        not started yet ends so when its turn comes. Returns False when the task had
        already ended (its result stands).

        Raises:
            KeyError: no task of that id in the plan (or among added tasks).
        """
        plan = await self._plan()
        known = {t.id for t in plan.tasks} | {t.id for t in self._steer.added}
        if task_id not in known:
            msg = f"no task `{task_id}` in the run's plan (tasks: {sorted(known)})"
            raise KeyError(msg)
        if task_id in self._steer.finished:
            return False
        self._steer.cancel(task_id, reason)
        await self._record({"action": "cancel", "task_id": task_id, "reason": reason})
        return True

    async def add_tasks(self, tasks: Sequence[Task | dict[str, Any]]) -> None:
        """Add tasks to the running plan; they may depend on its tasks and run in this run.

        Checked now with the plan as one DAG (ids, dependencies, kinds, tools, size);
        they join the plan at the run's next step, marked with its planning round.

        Raises:
            PlanError: naming every rule the tasks break.
            RuntimeError: the run no longer dispatches (it is writing its answer, or
                was stopped).
        """
        plan = await self._plan()
        if not self._steer.accepting or self._steer.draining is not None or self.done:
            msg = "the run no longer dispatches tasks: it has finished them, or was stopped"
            raise RuntimeError(msg)
        new = [t if isinstance(t, Task) else Task.model_validate(t) for t in tasks]
        try:
            merged = Plan(tasks=[*plan.tasks, *self._steer.added, *new], rationale=plan.rationale)
        except ValidationError as exc:
            problems = [str(e["msg"]).removeprefix("Value error, ") for e in exc.errors()[:5]]
            raise PlanError(problems) from exc
        check_plan(merged, self._scope.settings, self._scope.registry)
        self._steer.added.extend(new)
        await self._record({"action": "add", "tasks": [t.model_dump(mode="json") for t in new]})

    @property
    def paused(self) -> bool:
        """Tell whether dispatch is held (`pause()`)."""
        return self._steer.paused

    async def pause(self) -> None:
        """Hold dispatch: no task starts until `resume()`; running tasks finish."""
        self._steer.pause()
        await self._record({"action": "pause"})

    async def resume(self) -> None:
        """Let held tasks start again."""
        self._steer.resume()
        await self._record({"action": "resume"})

    async def stop(self, reason: str = "stopped") -> None:
        """Stop dispatching; running tasks finish; the answer is written from what did.

        Tasks that had not started end `cancelled` with the reason; the run ends
        `partial` (unless every task had already ended ok).
        """
        self._steer.drain(reason)
        await self._record({"action": "stop", "reason": reason})

    async def _record(self, command: dict[str, Any]) -> None:
        """Write a command applied here to the run's store too, if it has one.

        A resumed run then applies it again; this run has applied it already.
        """
        commands = self._scope.commands
        if commands is None:
            return
        key = f"{time.time_ns():020d}"
        commands.seen.add(key)
        await commands.store.aput(commands.namespace, key, command)
        await commands.store.aput((*commands.namespace, "done"), key, {"ok": True})

    async def _plan(self) -> Plan:
        while self._steer.plan is None:
            if self.done:
                msg = "the run ended before it had a plan"
                raise RuntimeError(msg)
            await asyncio.sleep(0.01)
        return self._steer.plan


async def start(
    request: str,
    *,
    settings: RunSettings | None = None,
    plan: Plan | None = None,
    graph: Orchestrator | None = None,
    config: RunnableConfig | None = None,
    on_event: EventHandler | None = None,
    on_approval: ApprovalHandler | None = None,
) -> RunHandle:
    """Start a run in this event loop and return a handle to watch and steer it.

    The run is `arun`'s (same arguments); the handle adds `events()`, `cancel_task`,
    `add_tasks`, `pause`/`resume`, `stop` and `result()`.

        handle = await start("compare tea, coffee and cocoa", settings=settings)
        async for event in handle.events():
            if event["fanfold"] == "task_started" and event["task_id"] == "t3":
                await handle.cancel_task("t3", "not needed")
        out = await handle.result()
    """
    settings = settings if settings is not None else RunSettings()
    control = ScopedControl()
    limit, _ = concurrency(settings, config or {})
    scope = control.scope = RunScope(settings, limit=limit)
    scope.steer = Steering()
    thread_id = ((config or {}).get("configurable") or {}).get("thread_id")
    if graph is not None and graph.store is not None and thread_id:
        # Commands are also written to the graph's store: a resumed run reads them again.
        scope.steer_from_store(graph.store, str(thread_id))
    handle = RunHandle(scope)

    def both(event: ProgressEvent) -> None:
        handle._on_event(event)
        if on_event is not None:
            on_event(event)

    async def run() -> RunOutput:
        _HANDLE_CONTROL.set(control)
        try:
            return await arun(
                request,
                settings=settings,
                plan=plan,
                graph=graph,
                config=config,
                on_event=both,
                on_approval=on_approval,
            )
        finally:
            handle._changed.set()
            await scope.aclose()

    handle._task = asyncio.get_running_loop().create_task(run(), context=contextvars.Context())
    await asyncio.sleep(0)  # the run has started
    return handle


def stream_tokens(
    request: str,
    *,
    settings: RunSettings | None = None,
    plan: Plan | None = None,
    graph: Orchestrator | None = None,
    on_event: EventHandler | None = None,
    config: RunnableConfig | None = None,
) -> TokenStream:
    """Run a request, yielding `(task_id, text)` as each model streams its reply.

    `task_id` is the subagent's task id, or `None` for the planner and the answer. Chunks
    of different tasks interleave as they run in parallel; joined per task, they are
    each model reply (tool-calling turns stream no text). The run's output is
    `stream.output` once the loop ends; its errors raise from the loop. Leaving the
    loop early cancels the run.

        stream = stream_tokens("compare tea and coffee", settings=settings)
        async for task_id, text in stream:
            print(task_id, text)
        print(stream.output.answer)
    """
    kwargs: dict[str, Any] = {
        "settings": settings,
        "plan": plan,
        "graph": graph,
        "on_event": on_event,
        "config": config,
    }
    return TokenStream(request, kwargs)


def _inside_a_run() -> bool:
    """Tell whether this code runs inside a LangChain runnable (a node, a tool)."""
    try:
        get_config()
    except RuntimeError:
        return False
    return True


async def _detached(run: Coroutine[Any, Any, T]) -> T:
    """Await `run` in a context of its own: none of the enclosing runnable's config."""
    return await asyncio.create_task(run, context=contextvars.Context())


async def _delete_thread(graph: Orchestrator, thread_id: str) -> None:
    saver = graph.checkpointer
    if isinstance(saver, BaseCheckpointSaver):
        await saver.adelete_thread(thread_id)


async def _pending_plan(
    graph: Orchestrator, config: RunnableConfig
) -> tuple[Plan, list[str]] | None:
    """Return the plan an approval interrupt waits on, if any, and why it was asked again.

    The reasons are why the last decision was refused (empty on the first ask).
    """
    if not graph.checkpointer:
        return None
    snapshot = await graph.aget_state(config)
    for pending in snapshot.interrupts:
        value = pending.value
        if isinstance(value, dict) and "plan" in value:
            problems = value.get("problems") or []
            return Plan.model_validate(value["plan"]), [str(p) for p in problems]
    return None


def _takes_problems(handler: ApprovalHandler) -> bool:
    try:
        parameter = inspect.signature(handler).parameters.get("problems")
    except (TypeError, ValueError):  # a builtin or C callable: no signature to read
        return False
    return parameter is not None and parameter.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )


async def _approve(
    graph: Orchestrator,
    out: RunOutput,
    settings: RunSettings,
    config: RunnableConfig,
    on_event: EventHandler | None,
    on_approval: ApprovalHandler | None,
    on_token: TokenHandler | None = None,
) -> RunOutput:
    """While the run waits on a plan approval, ask `on_approval` and resume with its answer."""
    while on_approval is not None and (pending := await _pending_plan(graph, config)):
        decision = await ask_for_approval(on_approval, *pending)
        out = await _stream(graph, Command(resume=decision), settings, config, on_event, on_token)
    return out


async def ask_for_approval(on_approval: ApprovalHandler, plan: Plan, problems: list[str]) -> Any:
    """Return `on_approval`'s decision on `plan` (told the `problems`, if it takes them)."""
    if _takes_problems(on_approval):
        decision = cast(Callable[..., Any], on_approval)(plan, problems=problems)
    else:
        decision = on_approval(plan)
    if inspect.isawaitable(decision):
        decision = await decision
    return decision


async def _stream(
    graph: Orchestrator,
    inputs: dict[str, Any] | Command[Any] | None,
    settings: RunSettings,
    config: RunnableConfig,
    on_event: EventHandler | None,
    on_token: TokenHandler | None = None,
) -> RunOutput:
    values: dict[str, Any] = {}
    finished: dict[str, Any] = {}
    """Each finished task's result as its event carried it (JSON): validated only when
    a stopped run needs them, not once per task."""
    try:
        stream: AsyncIterator[Any] = graph.astream(
            cast(OrchestratorInput | Command[Any] | None, inputs),
            config,
            control=_HANDLE_CONTROL.get(),  # a run handle's (its scope steers); else a new one
            context=settings,
            # `messages` makes models stream (LangGraph's handler asks them to): only
            # when someone reads the tokens.
            stream_mode=["custom", "values", "messages"] if on_token else ["custom", "values"],
            subgraphs=True,
            # Default durability ("async"): a finished task's write is saved in the
            # background as it finishes. "sync" would be stricter, but langgraph
            # 1.2.24 fails subgraphs compiled with checkpointer=False under it
            # (AttributeError: '_put_checkpoint_fut'), and that is our default
            # checkpoint granularity.
        )
        async for namespace, mode, chunk in stream:
            if mode == "values" and not namespace:
                values = dict(chunk)
            elif mode == "messages" and on_token is not None:
                message, metadata = chunk
                if isinstance(message, AIMessageChunk) and (text := message.text):
                    on_token(metadata.get("fanfold_task_id"), text)
            elif mode == "custom" and is_event(chunk):
                if chunk["fanfold"] == "task_finished":
                    finished[chunk["task_id"]] = chunk["result"]
                if on_event is not None:
                    on_event(chunk)
    except (TaskFailedError, QuorumUnreachable) as exc:
        exc.results = stopped_results(values.get("plan"), finished, exc)
        raise
    return _output(values)


def stopped_results(
    plan: Plan | None, finished: dict[str, Any], exc: TaskFailedError | QuorumUnreachable
) -> list[SubagentResult]:
    """Return one result per task of a run a policy stopped, in plan order.

    Every task that ended has its result (the failure too); a task that had not,
    ended with the run: `cancelled`, `RunStopped`, saying why.
    """
    results = {tid: SubagentResult.model_validate(r) for tid, r in finished.items()}
    if isinstance(exc, TaskFailedError):
        results[exc.result.task_id] = exc.result
    if plan is None:
        return list(results.values())
    why = ErrorInfo(type="RunStopped", message=f"the run stopped: {exc}")
    return [
        results.get(t.id) or SubagentResult(task_id=t.id, status="cancelled", attempts=0, error=why)
        for t in plan.tasks
    ]


def _output(values: dict[str, Any]) -> RunOutput:
    return RunOutput(
        answer=values.get("answer", ""),
        # No status yet: the run is paused before its first reducer step (approval).
        status=values.get("status") or "awaiting_approval",
        plan=values.get("plan"),
        results=values.get("results", []),
        metrics=values.get("metrics") or RunMetrics(),
        error=(
            ErrorInfo(type="PlanRejected", message=values.get("rejection") or "rejected")
            if values.get("status") == "rejected"
            else None
        ),
    )


async def aresume(
    thread_id: str,
    *,
    graph: Orchestrator,
    settings: RunSettings | None = None,
    on_event: EventHandler | None = None,
    decision: Any = None,
    on_approval: ApprovalHandler | None = None,
) -> RunOutput:
    """Continue a checkpointed run: only tasks without a saved result run again.

    Args:
        thread_id: the run's thread id.
        graph: the orchestrator compiled with the same checkpointer.
        settings: run settings; by default the ones the run saved (model specs,
            limits, policy). Tool objects and model instances are not saved: pass them.
        on_event: called with each progress event.
        decision: for a run paused at plan approval, the decision to resume with.
        on_approval: for a run paused at plan approval, asked for the decision (as
            in `arun`) when `decision` is not given.

    Raises:
        KeyError: no run is saved under `thread_id`.
        ThreadBusy: another run, resume or rerun holds the thread (see `arun`).
    """
    if _inside_a_run():
        return await _detached(
            aresume(
                thread_id,
                graph=graph,
                settings=settings,
                on_event=on_event,
                decision=decision,
                on_approval=on_approval,
            )
        )
    async with thread_lease(graph.checkpointer, thread_id):
        config, snapshot = await _saved_run(graph, thread_id)
        if settings is None:
            settings = RunSettings(**await _saved_settings(graph, config, snapshot.values))
        run_config: RunnableConfig = {
            **settings.as_config(),
            "configurable": {"thread_id": thread_id},
        }
        if not has_work_left(snapshot):
            return _output(snapshot.values)
        command: Command[Any] | None = Command(resume=decision) if decision is not None else None
        out = await _stream(graph, command, settings, run_config, on_event)
        return await _approve(graph, out, settings, run_config, on_event, on_approval)


async def arerun(
    thread_id: str,
    *,
    graph: Orchestrator,
    only: Sequence[str] = RERUNNABLE,
    settings: RunSettings | None = None,
    on_event: EventHandler | None = None,
) -> RunOutput:
    """Run again only the tasks of a finished or stopped run that did not end ok.

    Every ok result is kept; the tasks whose status is in `only`, and the tasks
    that depend on them and did not end ok (skipped, cancelled), run again; then
    the answer is written anew from all the results. A task that has no saved
    result (the run stopped before it ended) counts as `cancelled`; after a
    `fail_fast` stop, the task that failed counts as `failed`. The thread's history
    keeps the first attempt (`graph.aget_state_history`): a rerun adds checkpoints,
    it rewrites none.

    Args:
        thread_id: the run's thread id.
        graph: the orchestrator compiled with the run's checkpointer.
        only: the statuses to run again, among `failed`, `timed_out`, `cancelled`
            and `skipped` (all of them by default).
        settings: run settings; by default the ones the run saved. Pass them to
            rerun with a fixed model, a longer timeout, the tools again (tool objects
            and model instances are not saved).
        on_event: called with each progress event.

    Raises:
        KeyError: no run is saved under `thread_id`.
        ValueError: `only` names a status that is not one of those four.
        NothingToRerun: the run has no plan to rerun (it is paused at plan approval,
            or was rejected); a `ValueError`.
        ThreadBusy: another run, resume or rerun holds the thread.
    """
    chosen = check_only(only)
    if _inside_a_run():
        return await _detached(
            arerun(thread_id, graph=graph, only=chosen, settings=settings, on_event=on_event)
        )
    async with thread_lease(graph.checkpointer, thread_id):
        config, snapshot = await _saved_run(graph, thread_id)
        plan = snapshot.values.get("plan")
        if snapshot.interrupts or plan is None or snapshot.values.get("status") == "rejected":
            why = "it waits on plan approval: resume it" if snapshot.interrupts else "no plan ran"
            msg = f"run `{thread_id}` has nothing to rerun: {why}"
            raise NothingToRerun(msg)
        if settings is None:
            settings = RunSettings(**await _saved_settings(graph, config, snapshot.values))
        kept, again = rerun_selection(plan, saved_results(snapshot), chosen)
        if not again and not has_work_left(snapshot):
            return _output(snapshot.values)
        # A checkpoint as if the subagents had just written the kept results: the
        # reducer goes on from there, dispatching every task without one. Pending
        # tasks of a stopped step are left behind with the checkpoint they belong to.
        restart: OrchestratorUpdate = {
            "results": Overwrite(kept),
            "status": "",
            "answer": "",
            "stopped": None,
            "started_at": now(),
        }
        await graph.aupdate_state(config, restart, as_node=SUBAGENT)
        run_config: RunnableConfig = {**settings.as_config(), **config}
        return await _stream(graph, None, settings, run_config, on_event)


def saved_results(snapshot: StateSnapshot) -> dict[str, SubagentResult]:
    """Return every result a saved run holds, by task id.

    Those in its state, those of the tasks of its last step that ended before it
    stopped (pending writes), and, after a `fail_fast` stop, the failure the stop
    was raised for (a checkpoint keeps only its error's text).
    """
    results = {r.task_id: r for r in snapshot.values.get("results", [])}
    for task in snapshot.tasks:
        if task.name != SUBAGENT:
            continue
        if isinstance(task.result, dict):
            for r in task.result.get("results") or []:
                result = r if isinstance(r, SubagentResult) else SubagentResult.model_validate(r)
                results[result.task_id] = result
        elif task.error is not None:
            failed = TaskFailedError.failed_task(str(task.error))
            if failed is not None and failed[0] not in results:
                task_id, status = failed
                error = ErrorInfo(type="TaskFailed", message=str(task.error))
                results[task_id] = SubagentResult(
                    task_id=task_id,
                    status="timed_out" if status == "timed_out" else "failed",
                    attempts=1,
                    error=error,
                )
    return results


async def saved_settings(graph: Orchestrator, thread_id: str) -> dict[str, Any]:
    """Return the settings a checkpointed run saved, as JSON (see `RunSettings.to_json`).

    Raises:
        KeyError: no run is saved under `thread_id`.
    """
    config, snapshot = await _saved_run(graph, thread_id)
    return await _saved_settings(graph, config, snapshot.values)


async def _saved_run(graph: Orchestrator, thread_id: str) -> tuple[RunnableConfig, StateSnapshot]:
    """Return a saved run's config and state.

    Raises:
        KeyError: no run is saved under `thread_id`.
    """
    config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
    snapshot = await graph.aget_state(config)
    if not snapshot.values:
        msg = f"no checkpointed run with thread id `{thread_id}`"
        raise KeyError(msg)
    return config, snapshot


async def _saved_settings(
    graph: Orchestrator, config: RunnableConfig, values: dict[str, Any]
) -> dict[str, Any]:
    """Return the settings a run saved, in its state or else in its input.

    A run stopped before its first step took the input in has them only in the
    input, which its first checkpoint holds.
    """
    if "settings" in values:
        return dict(values["settings"])
    saver = graph.checkpointer
    saved = await saver.aget_tuple(config) if isinstance(saver, BaseCheckpointSaver) else None
    start = saved.checkpoint["channel_values"].get(START) if saved is not None else None
    return dict(start.get("settings") or {}) if isinstance(start, dict) else {}


def has_work_left(snapshot: StateSnapshot) -> bool:
    """Tell whether a saved run has anything left to do.

    `next` alone does not say: LangGraph leaves out of it the tasks of the saved
    step that already wrote their results, so a run that crashed after every task
    of a step had saved its write, before the step's checkpoint, has an empty
    `next` and still a step to finish. Its `tasks` hold them (and an interrupt, a
    failed task); a run that ended has neither.
    """
    return bool(snapshot.next or snapshot.tasks)


def run(request: str, **kwargs: Any) -> RunOutput:
    """Run the orchestrator from synchronous code; see `arun` for the arguments.

    Each call has its own event loop; the model clients opened on it are closed
    before it ends, and work the run abandoned (a tool that ignored a stop) gets a
    second to end, then is left behind: the call never waits on it.
    """

    async def _run() -> RunOutput:
        try:
            return await arun(request, **kwargs)
        finally:
            await aclose_models()

    return run_until_done(_run())


def as_tasks(tasks: Sequence[Task | str]) -> list[Task]:
    """Turn plain strings into tasks `t1`, `t2`, ... by position; keep Task objects.

    Raises:
        TypeError: `tasks` is a single string, or an item is neither a Task nor a string.
    """
    if isinstance(tasks, str | Task):
        msg = "`tasks` must be a list of tasks or strings, got a single " + (
            "string (wrap it in a list: [...])" if isinstance(tasks, str) else "Task"
        )
        raise TypeError(msg)
    out: list[Task] = []
    for i, item in enumerate(tasks, start=1):
        if isinstance(item, Task):
            out.append(item)
        elif isinstance(item, str):
            out.append(Task(id=f"t{i}", description=item))
        else:
            msg = f"task {i} must be a Task or a string, got `{type(item).__name__}`"
            raise TypeError(msg)
    return out


async def execute_tasks_parallel(
    tasks: Sequence[Task | str],
    *,
    model: str | BaseChatModel,
    tools: Sequence[BaseTool] | None = None,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    task_timeout_s: float | None = None,
    policy: Policy = "settle",
    on_event: EventHandler | None = None,
    settings: RunSettings | None = None,
) -> list[SubagentResult]:
    """Run given tasks through the orchestrator's own subagents, without a planner.

    Dependencies between Task objects are honoured. Returns one result per
    task, in input order. `settings` supplies every other run setting (budgets,
    retries, rate limit...); the keyword arguments here override it, and there is
    neither re-planning nor plan approval (there is no planner).

    Raises:
        PlanError: the tasks do not form a valid DAG, or name unknown tools or kinds.
        TaskFailedError: a task failed under `fail_fast`.
    """
    items = as_tasks(tasks)
    try:
        plan = Plan(tasks=items, rationale="given tasks")
    except ValidationError as exc:
        raise PlanError([str(e["msg"]) for e in exc.errors()]) from exc
    base = settings or RunSettings()
    settings = base.replace(
        model=model,
        tools=base.tools if tools is None else tuple(tools),
        max_concurrency=max_concurrency,
        task_timeout_s=task_timeout_s,
        policy=policy,
        max_rounds=1,  # given tasks: no planner, so no re-planning and nothing to approve
        approve_plan=False,
        max_tasks=max(len(items), 1),
    )
    out = await arun(
        "", settings=settings, plan=plan, graph=_default_graph(False), on_event=on_event
    )
    return out.results


async def execute_task(
    task: Task | str,
    *,
    model: str | BaseChatModel,
    tools: Sequence[BaseTool] | None = None,
    task_timeout_s: float | None = None,
) -> SubagentResult:
    """Run one task through a subagent and return its result (never raises for the task)."""
    results = await execute_tasks_parallel(
        [task], model=model, tools=tools, max_concurrency=1, task_timeout_s=task_timeout_s
    )
    return results[0]
