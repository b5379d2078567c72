"""Fanfold on Temporal: one run as one workflow, its subagents spread over worker processes.

The orchestrator graph is the same graph (`build_orchestrator`), handed to Temporal's
LangGraph plugin (`temporalio.langgraph`): LangGraph's Pregel loop runs in the
workflow, and each node runs where its metadata says.

| node                               | runs in  | why                                           |
|------------------------------------|----------|-----------------------------------------------|
| planner, replan, synthesize        | activity | model calls                                   |
| subagent                           | activity | model and tool calls; heartbeats              |
| approve, reducer, dispatch (route) | workflow | deterministic bookkeeping: ledger, policy,    |
|                                    |          | budgets, plan approval (an interrupt)         |
| the subagent's error handler       | workflow | turns an activity failure into a result       |

What lives where:

- The run-wide layer (ledger, policy, token and wall-time budgets, the stop signal)
  is the workflow's `RunScope`: it sees every result, whichever worker made it. The
  reducer charges each result's tokens to it and applies the policy (settle,
  fail_fast, quorum) there.
- Each activity runs under a scope of its worker process for that run (model-call
  limit, rate limit, tool cache, MCP sessions), told at dispatch what the run had
  spent so far and when its wall-time budget ends: an activity stops itself at the
  budget, the workflow stops dispatching.
- `max_concurrency` is LangGraph's own semaphore in the workflow: it bounds the
  subagent activities in flight cluster-wide.
- A task's timeout travels in its payload and is applied by the activity (no Temporal
  timer per task); `start_to_close_timeout` is a backstop above it.
- Types cross the activity boundary as themselves: `fanfold_data_converter()` encodes
  with LangGraph's msgpack serializer and an allowlist (Fanfold's models, LangChain
  messages, the plugin's envelopes); it must be on the client and every worker.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.runtime import Runtime
from langgraph.types import Command, Send
from temporalio import activity, workflow
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowHandle
from temporalio.common import RetryPolicy
from temporalio.converter import (
    CompositePayloadConverter,
    DataConverter,
    DefaultPayloadConverter,
    EncodingPayloadConverter,
)
from temporalio.exceptions import ApplicationError
from temporalio.langgraph import LangGraphPlugin
from temporalio.langgraph import graph as plugin_graph
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from fanfold.graphs.serde import FANFOLD_TYPES, allow_fanfold_types
from fanfold.nodes.act import stopped_error, task_id
from fanfold.nodes.context import RunSettings, settings_of
from fanfold.nodes.dispatch import SUBAGENT, Dispatch
from fanfold.nodes.domain import ErrorInfo, Plan, SubagentResult, Usage
from fanfold.nodes.errors import (
    BudgetExceeded,
    FanfoldError,
    PlanError,
    QuorumUnreachable,
    RunStopped,
    TaskFailedError,
)
from fanfold.nodes.events import task_finished, task_started
from fanfold.nodes.finish import apply_policy, finish
from fanfold.nodes.lg import as_if_unsaved
from fanfold.nodes.planner import planner
from fanfold.nodes.reducer import reducer
from fanfold.nodes.replan import replan
from fanfold.nodes.scope import RunScope, ScopedControl
from fanfold.nodes.state import OrchestratorState, OrchestratorUpdate, SubagentInput, SubagentUpdate
from fanfold.nodes.subagent_error import failure_result
from fanfold.nodes.subagent_node import subagent
from fanfold.nodes.synthesize import synthesize

T = TypeVar("T")

GRAPH = "fanfold"
"""The orchestrator's name in the plugin: activities are `fanfold.<node>`."""
WORKFLOW = "fanfold.run"
"""The workflow type a run starts."""
TASK_QUEUE = "fanfold"
"""The default task queue of workflows and activities."""
TOPIC = "fanfold"
"""The workflow stream topic progress events go to."""
HEARTBEAT_S = 0.5
"""How often a subagent activity heartbeats."""
HEARTBEAT_TIMEOUT = timedelta(seconds=3)
"""A subagent whose worker has not heartbeat for this long runs again elsewhere."""
STICKY_TIMEOUT = timedelta(seconds=2)
"""How long a workflow task waits for the worker that has the run cached: a dead
workflow worker's run moves on after this (Temporal's default is 10 s)."""
BACKSTOP = timedelta(hours=24)
"""Every activity's start-to-close timeout (Temporal needs one): a task's own timeout,
in its payload, ends it first; a task without one is cut here (and, as a lost
attempt, run again up to 4 more times)."""


# --- types across the boundary -------------------------------------------------------


class _FanfoldPayloads(EncodingPayloadConverter):
    """Encode Fanfold's values with LangGraph's msgpack serializer.

    Pydantic models, the plugin's dataclasses and LangChain messages arrive as
    themselves (only allowlisted types are rebuilt).
    """

    def __init__(self) -> None:
        self._serde = JsonPlusSerializer(allowed_msgpack_modules=_allowed_types())
        self._envelopes = _envelopes()

    @property
    def encoding(self) -> str:
        return "binary/fanfold-msgpack"

    def to_payload(self, value: Any) -> Payload | None:
        if not isinstance(value, self._envelopes):
            return None  # Temporal's own types, and plain values: the default converters
        try:
            kind, data = self._serde.dumps_typed(value)
        except Exception:  # noqa: BLE001 - not ours to encode: the next converter tries
            return None
        if kind != "msgpack":
            return None
        return Payload(metadata={"encoding": self.encoding.encode()}, data=data)

    def from_payload(self, payload: Payload, type_hint: type | None = None) -> Any:
        return self._serde.loads_typed(("msgpack", payload.data))


def _allowed_types() -> tuple[type[Any], ...]:
    from temporalio.langgraph._activity import ActivityInput, ActivityOutput

    return (*FANFOLD_TYPES, RunSettings, ActivityInput, ActivityOutput, RunArgs, RunDocument)


def _envelopes() -> tuple[type[Any], ...]:
    from pydantic import BaseModel
    from temporalio.langgraph._activity import ActivityInput, ActivityOutput

    return (ActivityInput, ActivityOutput, RunArgs, RunDocument, BaseModel, Command, Send)


class _Payloads(CompositePayloadConverter):
    def __init__(self) -> None:
        super().__init__(
            _FanfoldPayloads(), *DefaultPayloadConverter.default_encoding_payload_converters
        )


def fanfold_data_converter() -> DataConverter:
    """Return the data converter the client and every worker must use."""
    return dataclasses.replace(DataConverter.default, payload_converter_class=_Payloads)


PAYLOAD_LIMIT = int(os.environ.get("FANFOLD_TEMPORAL_PAYLOAD_LIMIT", "1800000"))
"""Bytes a value may take across Temporal: its server refuses payloads over 2 MB by
default (and a workflow task that schedules one fails, and is retried, forever). A
server configured otherwise: set `FANFOLD_TEMPORAL_PAYLOAD_LIMIT` on every worker."""

_SIZER = JsonPlusSerializer(allowed_msgpack_modules=())


def payload_size(value: Any) -> int:
    """Return about how many bytes `value` takes as a Temporal payload (msgpack)."""
    return len(_SIZER.dumps_typed(value)[1])


class PayloadTooLarge(FanfoldError, ValueError):
    """A value too large to cross Temporal (a plan, a task's inputs, the results)."""


# --- what a run takes and returns ----------------------------------------------------


@dataclasses.dataclass
class RunArgs:
    """A workflow's input: the request, its settings, a given plan."""

    request: str
    settings: dict[str, Any]
    plan: Plan | None = None


@dataclasses.dataclass
class RunDocument:
    """A workflow's result: what `--json` prints (see `RunOutput`).

    Plus the failure that stopped the run (a policy's), if one did.
    """

    output: dict[str, Any]
    failure: dict[str, Any] | None = None


# --- nodes as activities ---------------------------------------------------------------

_SCOPES: collections.OrderedDict[str, RunScope] = collections.OrderedDict()
"""This worker process's scope of each run it serves activities for, newest last."""
_MAX_SCOPES = 64


def _activity_runtime(
    runtime: Runtime[Any], spent: int = 0, deadline: float | None = None
) -> Runtime[Any]:
    """Return the node's runtime with this worker's scope of its run.

    A run's policy is the workflow's to apply: here it settles (a failed task is a
    result, sent back), counts tokens from what the run had spent at dispatch, and
    ends at the run's wall-time deadline (`deadline`: seconds since the epoch).
    """
    run_id = activity.info().workflow_run_id or activity.info().activity_id
    scope = _SCOPES.get(run_id)
    if scope is None:
        settings = settings_of(runtime.context)
        scope = _SCOPES[run_id] = RunScope(settings.replace(policy="settle"))
        while len(_SCOPES) > _MAX_SCOPES:
            _, old = _SCOPES.popitem(last=False)
            asyncio.get_running_loop().create_task(old.aclose())
    _SCOPES.move_to_end(run_id)
    scope.seed_tokens(spent)
    if deadline is not None:
        # The workflow's deadline is the run's (it moves on after an approval's wait).
        scope.deadline = time.monotonic() + (deadline - time.time())
    control = ScopedControl()
    control.scope = scope
    return dataclasses.replace(runtime, control=control)


async def _heartbeating(work: Coroutine[Any, Any, T]) -> T:
    async def beat() -> None:
        # The first beat after HEARTBEAT_S: a subagent shorter than that sends none (each
        # heartbeat is a call to the server; measured: ~2 ms of CPU per subagent).
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            activity.heartbeat()

    beats = asyncio.ensure_future(beat())
    try:
        return await work
    finally:
        beats.cancel()


async def _run_level(work: Coroutine[Any, Any, T]) -> T:
    """Run a run-level node (planner, re-planner, synthesizer) as an activity.

    It heartbeats, so a lost worker's call runs again elsewhere within seconds; what it
    raises is final (`non_retryable`, under its own type name): a model that cannot be
    reached is not retried by Temporal on top of the node's own retries.
    """
    try:
        return await _heartbeating(work)
    except Exception as exc:
        raise ApplicationError(str(exc), type=type(exc).__name__, non_retryable=True) from exc


async def plan_on_temporal(
    state: OrchestratorState, runtime: Runtime[RunSettings]
) -> OrchestratorUpdate:
    """The planner, as an activity."""
    return await _run_level(planner(state, _activity_runtime(runtime)))


async def replan_on_temporal(
    state: OrchestratorState, runtime: Runtime[RunSettings]
) -> OrchestratorUpdate:
    """Re-planning, as an activity."""
    return await _run_level(replan(state, _activity_runtime(runtime)))


async def answer_on_temporal(
    state: OrchestratorState, runtime: Runtime[RunSettings]
) -> OrchestratorUpdate:
    """The synthesizer, as an activity."""
    return await _run_level(synthesize(state, _activity_runtime(runtime)))


async def subagent_on_temporal(
    state: SubagentInput, runtime: Runtime[RunSettings]
) -> SubagentUpdate:
    """One task, as an activity that heartbeats (its result says which worker ran it).

    Its progress events are the workflow's to publish (`task_started` at dispatch,
    `task_finished` with its result): published from here, each would be a signal to
    the workflow (measured: ~5 ms of server and worker CPU per subagent).
    """
    ours = _activity_runtime(runtime, state.get("run_tokens", 0), state.get("run_deadline"))
    # It settles: `finish` reads the policy from the runtime's settings (the run-level
    # nodes keep the run's, which the answer's status is computed from).
    ours = dataclasses.replace(ours, context=_scope_of(ours).settings, stream_writer=_no_events)
    try:
        return await _heartbeating(subagent(state, ours))
    except Exception as exc:  # noqa: BLE001 - a task that raises ends failed, never retried
        tid = task_id(state)
        scope = _scope_of(ours)
        return finish(failure_result(tid, exc, scope.task_usage.get(tid)), state, ours, scope)


_STREAMS: dict[str, Any] = {}
"""Each running workflow's `WorkflowStream`, by run id (in the workflow worker)."""


def _publisher() -> Callable[[Any], None]:
    """Return what publishes a progress event from workflow code.

    An append to the workflow's stream: no signal, no activity (replayed with the rest).
    """
    stream = _STREAMS.get(workflow.info().run_id)
    return _no_events if stream is None else stream.topic(TOPIC).publish


def _no_events(_: Any) -> None:
    """A subagent activity's stream writer: its events come from the workflow."""


# Node names are the graph's: the plugin names activities `fanfold.<node>`.
plan_on_temporal.__name__ = "planner"
answer_on_temporal.__name__ = "synthesize"


# --- workflow-side nodes ---------------------------------------------------------------


async def reduce_on_temporal(
    state: OrchestratorState, runtime: Runtime[RunSettings]
) -> OrchestratorUpdate:
    """The reducer, in the workflow: first the run-wide accounts `_guarded` did not keep.

    The planner's tokens, and the results of subagents whose activity failed (the
    error handler's): their tokens go to the run's budget and the run's policy is
    applied to them. Then the reducer cancels what a stopped run left.
    """
    scope = _scope_of(runtime)
    settings = settings_of(runtime.context)
    results = state.get("results", [])
    fresh = [r for r in results if r.task_id not in scope.accounted]
    scope.accounted.update(r.task_id for r in fresh)
    overhead = state.get("usage") or Usage()
    scope.seed_tokens(sum(r.usage.total_tokens for r in results) + overhead.total_tokens)
    scope.add_tokens(0)  # stops the run once over its token budget
    publish = _publisher()
    for result in fresh:  # results the guard did not see: the error handler's
        task_finished(publish, result)
        apply_policy(result, settings, scope)
    return await reducer(state, runtime)


def _scope_of(runtime: Runtime[Any]) -> RunScope:
    """Return the scope a runtime carries (the workflow's, or this worker's of the run)."""
    control = runtime.control
    assert isinstance(control, ScopedControl) and control.scope is not None
    return control.scope


async def route_on_temporal(
    state: OrchestratorState, config: RunnableConfig, runtime: Runtime[RunSettings]
) -> list[Send] | str:
    """Dispatch, in the workflow: wide windows, each Send carrying its task's timeout.

    Wide (up to 16 x `max_concurrency`, as an in-process run without a checkpointer):
    LangGraph's semaphore starts each queued subagent the moment a slot frees, and
    `_guarded` applies the policy and the budgets as each one ends, so nothing waits
    for a window's slowest task. (The in-workflow checkpointer is for approval only:
    the run's durability is the workflow's history.)
    """
    routed = await _DISPATCH.route(state, as_if_unsaved(config), runtime)
    if isinstance(routed, str):
        return routed
    return [_timed_in_payload(send) for send in routed]


def _timed_in_payload(send: Send) -> Send:
    payload = dict(send.arg)
    payload.setdefault("timeout_s", payload["spec"]["timeout_s"])
    return Send(SUBAGENT, payload)


def _guarded(call: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Wrap the subagent node's activity call with the run's side of it, in the workflow.

    Before: a run that stopped (a budget, fail_fast, a quorum met) ends a queued task
    `cancelled` without calling the activity; else the task's start is published and
    the payload gets the run's spend and wall-time deadline as of now. After: the
    result's tokens are charged, its finish published, and the policy applied (a
    raise here cancels the siblings still running, as in process).
    """

    async def guarded(state: SubagentInput, **kwargs: Any) -> Any:
        runtime = kwargs["runtime"]
        scope = _scope_of(runtime)
        task = state["task"]
        publish = _publisher()
        # Every task here is top-level: a delegated fan-out runs inside its parent's
        # activity, never through the workflow.
        why = scope.stop_error()
        if why is not None:
            result = SubagentResult(task_id=task.id, status="cancelled", attempts=0, error=why)
            scope.accounted.add(task.id)
            task_finished(publish, result)
            return {"results": [result]}
        task_started(publish, task, datetime.fromtimestamp(workflow.time(), UTC))
        payload: SubagentInput = {**state, "run_tokens": scope.tokens}
        if scope.deadline is not None:
            payload["run_deadline"] = scope.deadline  # workflow time: seconds since the epoch
        size = payload_size(payload)
        if size > PAYLOAD_LIMIT:
            why = ErrorInfo(
                type="PayloadTooLarge",
                message=f"the task's inputs take {size} bytes: over the {PAYLOAD_LIMIT} a "
                "Temporal payload may (its dependencies' outputs, most likely)",
            )
            out = {"results": [SubagentResult(task_id=task.id, status="failed", error=why)]}
        else:
            try:
                # Until the run stops (a quorum met, a budget): then the activity is
                # cancelled, as in process a running task ends at its next call.
                out = await scope.race(call(payload, **kwargs))
            except (RunStopped, BudgetExceeded) as exc:
                why = stopped_error(scope, exc)
                out = {"results": [SubagentResult(task_id=task.id, status="cancelled", error=why)]}
        settings = settings_of(runtime.context)
        for result in out["results"]:
            scope.accounted.add(result.task_id)
            scope.add_tokens(result.usage.total_tokens)
            task_finished(publish, result)
            apply_policy(result, settings, scope)
        return out

    return guarded


_DISPATCH = Dispatch(eager=False)


# --- the graph, the workflow, the worker ---------------------------------------------

_ACTIVITY = {"execute_in": "activity"}
_WORKFLOW_SIDE = {"execute_in": "workflow"}


def temporal_graph() -> Any:
    """Return a fresh orchestrator `StateGraph` with each node marked activity or workflow.

    Fresh each time: the plugin replaces the node functions of the graph it is given.
    """
    from fanfold.graphs.orchestrator import Engine, build_orchestrator

    builder = build_orchestrator(
        plan_with=plan_on_temporal,
        answer_with=answer_on_temporal,
        engine=Engine(
            subagent=subagent_on_temporal,
            reducer=reduce_on_temporal,
            replan=replan_on_temporal,
            route=route_on_temporal,
        ),
    )
    # A lost worker's attempt runs again elsewhere (heartbeats); a raise is final.
    lost_only = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_attempts=5)
    run_level = {
        **_ACTIVITY,
        "start_to_close_timeout": BACKSTOP,
        "heartbeat_timeout": HEARTBEAT_TIMEOUT,
        "retry_policy": lost_only,
    }
    options = {
        "planner": run_level,
        "replan": run_level,
        "synthesize": run_level,
        SUBAGENT: {
            **_ACTIVITY,
            "start_to_close_timeout": BACKSTOP,
            "heartbeat_timeout": HEARTBEAT_TIMEOUT,
            # A worker that dies (no heartbeat) loses the attempt: it runs again elsewhere.
            # (A task that raises comes back as a failed result, never as a retry.)
            "retry_policy": lost_only,
        },
    }
    for name, spec in builder.nodes.items():
        spec.metadata = {**(spec.metadata or {}), **options.get(name, _WORKFLOW_SIDE)}
    return builder


def _plugin() -> tuple[LangGraphPlugin, Any]:
    builder = temporal_graph()
    handler = builder.nodes[f"__error_handler__{SUBAGENT}"].runnable
    accepts = dict(handler.func_accepts)
    plugin = LangGraphPlugin(graphs={GRAPH: builder}, streaming_topic=TOPIC)
    # The plugin keeps only `config`/`runtime` for every node; the error handler runs in
    # the workflow and needs the `error` LangGraph passes it.
    handler.func_accepts = accepts
    # The plugin made the subagent node a call to its activity: the run's side of each
    # subagent (stop, budgets, policy, progress) wraps that call, in the workflow.
    node = builder.nodes[SUBAGENT].runnable
    node.afunc = _guarded(node.afunc)
    for name in ("synthesize", "replan"):
        node = builder.nodes[name].runnable
        node.afunc = _sized(node.afunc, name)
    return plugin, builder


def _sized(call: Callable[..., Awaitable[Any]], name: str) -> Callable[..., Awaitable[Any]]:
    """Wrap a run-level node's activity call: refuse an input Temporal would refuse.

    The synthesizer's input is the whole state (every result): a run whose results
    outgrow one payload fails saying so, instead of a workflow task retried forever.
    """

    async def sized(state: Any, **kwargs: Any) -> Any:
        size = payload_size(state)
        if size > PAYLOAD_LIMIT:
            msg = (
                f"the {name} node's input (the run's plan and results) takes {size} bytes: "
                f"over the {PAYLOAD_LIMIT} a Temporal payload may; fewer or shorter results "
                "(a smaller plan, `synthesize_answer` off), or run it in process"
            )
            raise PayloadTooLarge(msg)
        return await call(state, **kwargs)

    return sized


def _runner() -> SandboxedWorkflowRunner:
    # Fanfold and its libraries pass through the sandbox: one copy of each type.
    restrictions = SandboxRestrictions.default.with_passthrough_modules(
        "fanfold", "networkx", "pydantic", "pydantic_core", "openai", "httpx", "rich", "tiktoken"
    )
    return SandboxedWorkflowRunner(restrictions=restrictions)


@workflow.defn(name=WORKFLOW, sandboxed=True)
class FanfoldRun:
    """One Fanfold run: the orchestrator graph, its nodes activities or workflow code."""

    @workflow.init
    def __init__(self, args: RunArgs) -> None:
        from temporalio.contrib.workflow_streams import WorkflowStream

        self.stream = WorkflowStream()
        _STREAMS[workflow.info().run_id] = self.stream
        self.pending: dict[str, Any] | None = None
        """The plan waiting for approval (`pending_plan`), with its ask number."""
        self.asks = 0
        self.decision: Any = None

    @workflow.query(name="pending_plan")
    def pending_plan(self) -> dict[str, Any] | None:
        """Return the plan waiting for approval: `{"ask", "plan", "problems"}`, or None."""
        return self.pending

    @workflow.update(name="decide")
    def decide(self, decision: Any) -> None:
        """Answer the pending approval: accept, reject or edit (as `arun`'s handler)."""
        self.decision, self.pending = decision, None

    @decide.validator
    def _check_decision(self, decision: Any) -> None:
        if self.pending is None:
            msg = "no plan is waiting for approval in this run"
            raise ValueError(msg)
        if payload_size(decision) > PAYLOAD_LIMIT // 4:
            msg = f"a decision takes at most {PAYLOAD_LIMIT // 4} bytes"
            raise ValueError(msg)

    @workflow.run
    async def run(self, args: RunArgs) -> RunDocument:
        """Run the orchestrator graph to its output (a policy's stop is an output too)."""
        settings = RunSettings(**args.settings)
        control = ScopedControl()
        scope = control.scope = RunScope(settings)
        # The wall-time budget on workflow time, from the run's start: a replay (another
        # worker, after a crash) decides exactly as the first execution did.
        scope.clock = workflow.time
        scope.t0 = workflow.info().start_time.timestamp()
        if settings.max_wall_time_s:
            scope.deadline = scope.t0 + settings.max_wall_time_s
        graph = plugin_graph(GRAPH).compile(checkpointer=allow_fanfold_types(InMemorySaver()))
        inputs: dict[str, Any] = {"request": args.request, "settings": settings.to_json()}
        if args.plan is not None:
            inputs["given_plan"] = args.plan
        config: Any = {"configurable": {"thread_id": workflow.info().workflow_id}}
        try:
            values = await graph.ainvoke(inputs, config, control=control, context=settings)
            while pending := await _pending_plan(graph, config):
                plan, problems = pending
                self.asks += 1
                self.pending = {
                    "ask": self.asks,
                    "plan": plan.model_dump(mode="json"),
                    "problems": problems,
                }
                await workflow.wait_condition(lambda: self.pending is None)
                decision, self.decision = self.decision, None
                # As in process, where the run goes on in a new stream: the wall-time
                # budget does not count the wait for a person's answer.
                scope.t0 = workflow.time()
                if settings.max_wall_time_s:
                    scope.deadline = scope.t0 + settings.max_wall_time_s
                values = await graph.ainvoke(
                    Command(resume=decision), config, control=control, context=settings
                )
            # The whole state (`ainvoke` returns the output schema's keys only).
            values = (await graph.aget_state(config)).values
            doc = RunDocument(output=_output_of(values).model_dump(mode="json"))
        except (TaskFailedError, QuorumUnreachable) as exc:
            # As `arun` does: one result per task, the stop's `cancelled` for the rest.
            values = (await graph.aget_state(config)).values
            finished = {r.task_id: r.model_dump(mode="json") for r in values.get("results", [])}
            out = _output_of(values).model_copy(
                update={
                    "status": "failed",
                    "results": stopped_results(values.get("plan"), finished, exc),
                }
            )
            doc = RunDocument(
                output=out.model_dump(mode="json"),
                failure={"type": type(exc).__name__, "message": str(exc)},
            )
        except Exception as exc:  # noqa: BLE001 - a failed run is a document, never a hang
            # An activity that raised (the planner's model unreachable, say) or a bug here:
            # Temporal would retry a workflow task that raises forever; the run fails
            # instead, saying why, with what it has.
            values = (await graph.aget_state(config)).values
            out = _output_of(values).model_copy(update={"status": "failed"})
            doc = RunDocument(output=out.model_dump(mode="json"), failure=_cause(exc))
        doc = _fitted(doc)
        # Subscribers waiting on the stream read the rest through queries once it ends.
        _STREAMS.pop(workflow.info().run_id, None)
        self.stream.detach_pollers()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return doc


def _fitted(doc: RunDocument) -> RunDocument:
    """Return the run's document cut to fit one Temporal payload (outputs, the answer).

    Each result keeps an even share of what fits, with a note of what was cut: a
    result Temporal cannot upload would fail the workflow's task again and again.
    """
    size = payload_size(doc)
    if size <= PAYLOAD_LIMIT:
        return doc
    output = dict(doc.output)
    results = [dict(r) for r in output.get("results", [])]
    texts = sum(len(r.get("output") or "") for r in results) + len(output.get("answer") or "")
    room = max(0, PAYLOAD_LIMIT - (size - texts)) // max(1, len(results) + 1)
    for r in [*results, output]:
        for key in ("output", "answer"):
            text = r.get(key)
            if isinstance(text, str) and len(text) > room:
                r[key] = (
                    f"{text[:room]} [cut: {len(text)} characters; the run's document "
                    "is over Temporal's payload limit]"
                )
    output["results"] = results
    return RunDocument(output=output, failure=doc.failure)


def _cause(exc: BaseException) -> dict[str, Any]:
    """Return the type and message of what made a run fail (through activity errors)."""
    from temporalio.exceptions import ActivityError, ApplicationError

    while isinstance(exc, ActivityError) and exc.cause is not None:
        exc = exc.cause
    if isinstance(exc, ApplicationError):
        return {"type": exc.type or "ApplicationError", "message": exc.message}
    return {"type": type(exc).__name__, "message": str(exc)}


class RunFailed(FanfoldError, RuntimeError):
    """A run on Temporal failed: something other than a policy stopped it.

    Attributes:
        kind: the type name of the exception that failed it (raised in an activity,
            on another machine, perhaps).
        output: the run's `RunOutput`, with what it had.
    """

    def __init__(self, kind: str, message: str, output: Any = None) -> None:
        self.kind, self.output = kind, output
        super().__init__(f"{kind}: {message}")


async def _pending_plan(graph: Any, config: Any) -> tuple[Plan, list[str]] | None:
    from fanfold.graphs.api import _pending_plan as pending

    return await pending(graph, config)


def _output_of(values: dict[str, Any]) -> Any:
    from fanfold.graphs.api import _output

    return _output(values)


def stopped_results(plan: Any, finished: dict[str, Any], exc: Exception) -> Any:
    """Return `fanfold.graphs.api.stopped_results(...)` (imported when first needed)."""
    from fanfold.graphs.api import stopped_results as results

    return results(plan, finished, exc)  # type: ignore[arg-type]


# --- workers and clients ---------------------------------------------------------------


async def connect(address: str, *, namespace: str = "default") -> Client:
    """Connect to a Temporal server with Fanfold's data converter.

    Raises:
        RuntimeError: no server answers at `address` (Temporal's own message).
    """
    return await Client.connect(
        address,
        namespace=namespace,
        data_converter=fanfold_data_converter(),
        runtime=_runtime(),
    )


@functools.cache
def _runtime() -> Any:
    """Return a Temporal runtime whose core logs go to Python's logging (stderr).

    The default writes the core's warnings (retries while a server is away) to stdout,
    ahead of `--json`'s document.
    """
    from temporalio.runtime import (
        LogForwardingConfig,
        LoggingConfig,
        Runtime,
        TelemetryConfig,
        TelemetryFilter,
    )

    logging_config = LoggingConfig(
        filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
        forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")),
    )
    return Runtime(telemetry=TelemetryConfig(logging=logging_config))


ROLES = ("all", "orchestrator", "agents")
"""What a worker serves: both, the workflow only, or the node activities only."""


def make_worker(
    client: Client,
    *,
    task_queue: str = TASK_QUEUE,
    role: str = "all",
    max_activities: int | None = None,
) -> Worker:
    """Return a worker serving the orchestrator workflow and/or the node activities.

    Raises:
        ValueError: an unknown `role`, `max_activities` below 1, or a client without
            Fanfold's data converter (types would arrive as dicts).
    """
    if client.data_converter.payload_converter_class is not _Payloads:
        msg = (
            "the client has no Fanfold data converter: connect with "
            "`fanfold.graphs.temporal.connect(address)` or pass "
            "`data_converter=fanfold_data_converter()` to `Client.connect`"
        )
        raise ValueError(msg)
    if role not in ROLES:
        msg = f"`--role` must be one of {', '.join(ROLES)}, got `{role}`"
        raise ValueError(msg)
    if max_activities is not None and max_activities < 1:
        msg = f"`--max-activities` must be an integer >= 1, got `{max_activities}`"
        raise ValueError(msg)
    plugin, _ = _plugin()
    if role == "orchestrator":
        plugin.activities.clear()  # the plugin registers them from this very list
    kwargs: dict[str, Any] = {}
    if max_activities is not None:
        kwargs["max_concurrent_activities"] = max_activities
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[FanfoldRun] if role != "agents" else [],
        workflow_runner=_runner(),
        sticky_queue_schedule_to_start_timeout=STICKY_TIMEOUT,
        plugins=[plugin],
        **kwargs,
    )


async def start_run(
    client: Client,
    request: str,
    *,
    settings: RunSettings | None = None,
    plan: Plan | None = None,
    task_queue: str = TASK_QUEUE,
    workflow_id: str | None = None,
) -> WorkflowHandle[Any, RunDocument]:
    """Start a run as a workflow and return its handle (its id is the run's).

    Raises:
        ValueError: settings that cannot travel to the workers (`portable`).
    """
    settings = settings if settings is not None else RunSettings()
    portable(settings)
    args = RunArgs(request=request, settings=settings.to_json(), plan=plan)
    size = payload_size(args)
    if size > PAYLOAD_LIMIT:
        msg = (
            f"the run's request and plan take {size} bytes: over the {PAYLOAD_LIMIT} a "
            "Temporal payload may"
        )
        raise ValueError(msg)
    return await client.start_workflow(
        WORKFLOW,
        args,
        id=workflow_id or f"fanfold-{uuid.uuid4().hex[:12]}",
        task_queue=task_queue,
        result_type=RunDocument,
    )


def portable(settings: RunSettings) -> None:
    """Check that a run's settings reach the workers whole: they travel as JSON.

    Raises:
        ValueError: naming each setting that would be lost on the way, and what to use.
    """
    from langchain_core.language_models import BaseChatModel

    lost = [
        f"`{name}` is a chat model object: give a spec (`openai:<model>@<base_url>`)"
        for name in ("model", "planner_model")
        if isinstance(getattr(settings, name), BaseChatModel)
    ]
    if any(not isinstance(t, str) for t in settings.tools):
        lost.append("`tools` holds tool objects: name them as `module:attr` import paths")
    if any(isinstance(k.model, BaseChatModel) for k in settings.kinds):
        lost.append("a kind in `kinds` has a chat model object: give a spec")
    if settings.tool_registry is not None:
        lost.append("`tool_registry` is a Python object: name the tools in `tools`")
    if settings.mcp_servers:
        lost.append(
            "`mcp_servers` (--mcp) is not carried to Temporal workers (it may hold secrets, "
            "and would sit in the workflow's history)"
        )
    if lost:
        raise ValueError("settings that cannot travel to Temporal workers: " + "; ".join(lost))


RECONNECT_S = 120.0
"""How long a client waits for a Temporal server that went away (the run goes on there)."""


def _server_away(exc: BaseException) -> bool:
    """Tell whether an RPC failed because the server cannot be reached (for now)."""
    from temporalio.client import WorkflowUpdateRPCTimeoutOrCancelledError
    from temporalio.service import RPCError, RPCStatusCode

    if not isinstance(exc, RPCError) or isinstance(exc, WorkflowUpdateRPCTimeoutOrCancelledError):
        return False
    away = exc.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED)
    return away or "connect" in str(exc).lower()


class _Patience:
    """Retries of RPCs while the server is away, for up to `RECONNECT_S` in a row."""

    def __init__(self) -> None:
        self.since: float | None = None

    async def wait(self, exc: BaseException) -> None:
        """Wait a second before the next try.

        Raises `exc` when it is not an outage, or the outage has lasted `RECONNECT_S`.
        """
        now = time.monotonic()
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            # Cancelled (Ctrl-C): the SDK turns a cancelled RPC into an error of its own.
            raise asyncio.CancelledError from exc
        if not _server_away(exc) or now - (self.since or now) > RECONNECT_S:
            raise exc
        if self.since is None:
            self.since = now
            _LOG.warning("the Temporal server is unreachable; retrying for %gs", RECONNECT_S)
        await asyncio.sleep(1.0)

    def ok(self) -> None:
        """Note a successful call: the next outage gets the whole wait again."""
        self.since = None


_LOG = logging.getLogger("fanfold.temporal")


async def events_of(client: Client, workflow_id: str) -> AsyncIterator[dict[str, Any]]:
    """Yield a run's progress events as its workflow publishes them (to its end).

    A server that goes away for less than `RECONNECT_S` is waited for: the events go
    on from where they were.
    """
    from temporalio.contrib.workflow_streams import WorkflowStreamClient

    stream = WorkflowStreamClient.create(client, workflow_id)
    offset, patience = 0, _Patience()
    while True:
        try:
            async for item in stream.subscribe(
                TOPIC, from_offset=offset, poll_cooldown=timedelta(milliseconds=100)
            ):
                patience.ok()
                offset = item.offset + 1
                if isinstance(item.data, dict):
                    yield item.data
            return
        except Exception as exc:  # noqa: BLE001 - an outage is waited for, the rest raised
            await patience.wait(exc)


APPROVAL_POLL_S = 0.2
"""How often a client that answers approvals asks the run for a pending plan."""


async def result_of(
    handle: WorkflowHandle[Any, RunDocument], on_approval: Any | None = None
) -> Any:
    """Return a run's `RunOutput`; raise as `arun` does when a policy stopped it.

    `on_approval`: with `approve_plan`, decides on the plan as `arun`'s does (see
    `ApprovalHandler`); its decisions go to the workflow as `decide` updates. Without
    one, a run that asks waits until someone answers (`decide(handle, ...)`, from any
    client, or `temporal workflow update execute --name decide`).

    Raises:
        TaskFailedError: a task failed under `fail_fast`.
        QuorumUnreachable: `quorum:K` out of reach.
        PlanError: no valid plan.
        RunFailed: anything else that failed the run (its type and message).
    """
    from fanfold.graphs.api import RunOutput

    if on_approval is None:
        doc = await _patiently(handle)
    else:
        answering = asyncio.ensure_future(_answer_approvals(handle, on_approval))
        finished = asyncio.ensure_future(_patiently(handle))
        try:
            await asyncio.wait({answering, finished}, return_when=asyncio.FIRST_COMPLETED)
            if answering.done() and not finished.done():
                answering.result()  # the handler raised: say so, do not wait forever
            doc = await finished
        finally:
            finished.cancel()
            answering.cancel()
            # The run is over: an answer cut short by its end (the update's call raises
            # its own error when cancelled) changes nothing.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await answering
    out = RunOutput.model_validate(doc.output)
    if doc.failure is None:
        return out
    kind, message = doc.failure["type"], doc.failure["message"]
    if kind == "TaskFailedError":
        failed = next(r for r in out.results if r.status not in ("ok", "cancelled", "skipped"))
        raise TaskFailedError(failed, out.results)
    if kind == "QuorumUnreachable":
        raise QuorumUnreachable(message, out.results)
    if kind == "PlanError":
        raise PlanError([message])
    raise RunFailed(kind, message, out)


async def _patiently(handle: WorkflowHandle[Any, RunDocument]) -> RunDocument:
    """Return the workflow's result, waiting out a server that is away for a while."""
    patience = _Patience()
    while True:
        try:
            return await handle.result()
        except Exception as exc:  # noqa: BLE001 - an outage is waited for, the rest raised
            await patience.wait(exc)


async def pending_plan(handle: WorkflowHandle[Any, Any]) -> tuple[Plan, list[str], int] | None:
    """Return the plan a run waits on for approval, or None when none waits.

    With it: why it was asked again (an edit refused), and the ask's number.
    """
    pending = await handle.query("pending_plan", result_type=dict)
    if not pending:
        return None
    plan = Plan.model_validate(pending["plan"])
    return plan, [str(p) for p in pending.get("problems") or []], int(pending["ask"])


async def decide(handle: WorkflowHandle[Any, Any], decision: Any) -> None:
    """Answer a run's pending approval (`accept`, `reject`, an edit: as `arun` takes them).

    Raises:
        temporalio.client.WorkflowUpdateFailedError: no plan waits for approval.
    """
    await handle.execute_update("decide", decision)


async def _answer_approvals(handle: WorkflowHandle[Any, Any], on_approval: Any) -> None:
    from fanfold.graphs.api import ask_for_approval

    answered = 0
    while True:
        pending = await pending_plan(handle)
        if pending is not None and pending[2] > answered:
            plan, problems, ask = pending
            await decide(handle, await ask_for_approval(on_approval, plan, problems))
            answered = ask
        await asyncio.sleep(APPROVAL_POLL_S)


async def arun_on_temporal(
    request: str,
    *,
    address: str,
    settings: RunSettings | None = None,
    plan: Plan | None = None,
    task_queue: str = TASK_QUEUE,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    on_approval: Any | None = None,
) -> Any:
    """Run on Temporal (workers must be serving `task_queue`) and return its `RunOutput`.

    The same as `fanfold.arun`, spread over the workers: see the module's doc for what
    runs where. Raises what `arun` raises.

    Raises:
        ValueError: `approve_plan` without `on_approval`.
    """
    if settings is not None and settings.approve_plan and on_approval is None:
        msg = "`approve_plan=True` needs `on_approval=` (or answer with `decide(handle, ...)`)"
        raise ValueError(msg)
    client = await connect(address)
    handle = await start_run(client, request, settings=settings, plan=plan, task_queue=task_queue)
    return await follow(client, handle, on_event=on_event, on_approval=on_approval)


async def follow(
    client: Client,
    handle: WorkflowHandle[Any, RunDocument],
    *,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    on_approval: Any | None = None,
) -> Any:
    """Watch a started run to its end: its events, its approvals, then its `RunOutput`.

    An `on_event` that raises ends the watch with its error (as in process); so does
    a cancel (Ctrl-C), at once: the run itself goes on, on Temporal.

    Raises:
        What `result_of` raises, or what `on_event` raised.
    """
    if on_event is None:
        return await result_of(handle, on_approval)
    handler = on_event

    async def watch() -> None:
        async for event in events_of(client, handle.id):
            handler(event)

    watcher = asyncio.ensure_future(watch())
    finished = asyncio.ensure_future(result_of(handle, on_approval))
    try:
        await asyncio.wait({watcher, finished}, return_when=asyncio.FIRST_COMPLETED)
        if watcher.done() and not finished.done():
            watcher.result()  # the handler raised (a watch that just ended: go on)
        out = await finished
        # The stream drains what the finished run published, then ends.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(watcher), timeout=5)
        if watcher.done():
            watcher.result()
        return out
    finally:
        for task in (watcher, finished):
            task.cancel()
        await asyncio.gather(watcher, finished, return_exceptions=True)
