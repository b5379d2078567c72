"""Prompt text, in one place, shared by the nodes (and parsed by the demo model)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from fanfold.nodes.domain import SubagentResult, Task

PLANNER_SYSTEM = """You are the planner of a team of parallel subagents.
Split the user's request into a small plan of tasks (a DAG). Give each task a short
unique id (t1, t2, ...), a self-contained description, an agent kind and, when it
helps, an allow-list of tools. Make a task depend on another only when it needs
that task's output; independent tasks run in parallel.

Agent kinds:
{kinds}

Tools:
{tools}

At most {max_tasks} tasks."""

REPLAN_SYSTEM = """You are the planner of a team of parallel subagents, in a later round.
The tasks of the plan so far are done; their results are below. Decide whether the
request needs more work. If it does, add new tasks (new unique ids, not any of the
existing ones; they may depend on existing tasks and use their outputs). If it does
not, return no tasks.

Agent kinds:
{kinds}

Tools:
{tools}"""

REPLAN_REQUEST = """{results}

Existing task ids: {ids}
Planning round {round} of at most {max_rounds}."""

PLAN_REPAIR = """Your plan was rejected: {problems}
Return a corrected plan that fixes every problem."""

SYNTHESIZE_SYSTEM = """You write the final answer for the user from the results of a
team of subagents. Use only what the results say; say plainly which parts failed."""

MERGE_VIEWS_SYSTEM = """You merge the views of several perspectives on one request into a
single answer. Keep who said what: attribute every point to the perspective that made
it, show where they agree and where they disagree, and end with a balanced verdict."""

TASK_HEADER = "Task {id} ({kind}): {description}"
INPUTS_HEADER = "Inputs from the tasks this one depends on:"
REQUEST_HEADER = "Request: {request}"
RESULTS_HEADER = "Results, in plan order:"


def task_prompt(task: Task, dependency_outputs: Mapping[str, str]) -> str:
    """Return the first user message a subagent sees."""
    text = TASK_HEADER.format(id=task.id, kind=task.kind, description=task.description)
    if dependency_outputs:
        lines = [f"[{dep}] {out}" for dep, out in dependency_outputs.items()]
        text += "\n\n" + INPUTS_HEADER + "\n" + "\n".join(lines)
    return text


def synthesis_prompt(request: str, results: Iterable[SubagentResult]) -> str:
    """Return the user message the synthesizer sees."""
    lines = []
    for r in results:
        if r.status == "ok":
            lines.append(f"[{r.task_id} ok] {r.output}")
        else:
            why = f"{r.error.type}: {r.error.message}" if r.error else r.status
            lines.append(f"[{r.task_id} {r.status}] {why}")
    return (
        REQUEST_HEADER.format(request=request) + "\n\n" + RESULTS_HEADER + "\n" + "\n".join(lines)
    )
