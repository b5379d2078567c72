"""Pictures of a run: the plan as a DAG, a timeline of its subagents, tokens per task.

matplotlib is optional (the `viz` extra). Each function builds a
`matplotlib.figure.Figure` directly, never through pyplot: nothing is shown, no
global figure state is kept, and it works on a headless machine. Jupyter displays
a returned figure; elsewhere call `fig.savefig(path)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import networkx as nx

from fanfold.graphs.api import RunOutput
from fanfold.nodes.domain import Plan, SubagentResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Results = RunOutput | Sequence[SubagentResult]
"""A run's output, or its results alone (e.g. `TaskFailedError.results`)."""

PENDING = "pending"
"""The status `plot_plan` shows for a task with no result yet."""

STATUS_COLORS: dict[str, str] = {
    "ok": "#2ca02c",
    "failed": "#d62728",
    "timed_out": "#ff7f0e",
    "cancelled": "#9467bd",
    "skipped": "#8c8c8c",
    PENDING: "#dbe9f6",
}
"""The colour of each task status, in every picture."""

_OTHER_COLOR = "#17becf"
_LABEL_CHARS = 12


def _need_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        msg = "Fanfold's plots need matplotlib: pip install 'fanfold[viz]'"
        raise ImportError(msg) from exc


def _new_figure(width: float, height: float) -> Figure:
    _need_matplotlib()
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def color_of(status: str) -> str:
    """Return the colour a status is drawn in."""
    return STATUS_COLORS.get(status, _OTHER_COLOR)


def _results(output: Results | None) -> list[SubagentResult]:
    if output is None:
        return []
    if isinstance(output, RunOutput):
        return list(output.results)
    return list(output)


def _legend(fig: Figure, statuses: Sequence[str], **kwargs: Any) -> None:
    from matplotlib.patches import Patch

    seen = list(dict.fromkeys(statuses))
    handles = [Patch(facecolor=color_of(s), edgecolor="black", label=s) for s in seen]
    if handles:
        fig.legend(handles=handles, **kwargs)


def _span(result: SubagentResult) -> tuple[datetime, datetime] | None:
    if result.started_at is None or result.ended_at is None:
        return None
    return result.started_at, max(result.started_at, result.ended_at)


def _short(label: str) -> str:
    return label if len(label) <= _LABEL_CHARS else label[: _LABEL_CHARS - 1] + "…"


def _padded(values: Sequence[float], slots: int) -> tuple[float, float]:
    # Half a slot of room around the outer nodes: the figure has room for each slot.
    low, high = min(values), max(values)
    pad = (high - low) / (slots - 1) / 2 if slots > 1 and high > low else 0.5
    return low - pad, high + pad


def plot_plan(plan: Plan, results: Results | None = None) -> Figure:
    """Draw the plan as a DAG, generations left to right, tasks coloured by status.

    Args:
        plan: the plan to draw.
        results: a run's output or results; a task without one is `pending`.

    Returns:
        The figure: one axes; its only collection holds one marker per task (in
        plan order), its texts are the task ids, and each dependency is an arrow
        patch.

    Raises:
        ImportError: matplotlib is not installed.
    """
    _need_matplotlib()
    from matplotlib.patches import FancyArrowPatch

    generations = plan.generations()
    status = {r.task_id: r.status for r in _results(results)}
    graph = plan.graph()
    # One column per generation; within it, plan order from the top down.
    layers = {i: list(reversed(ids)) for i, ids in enumerate(generations)}
    pos = nx.multipartite_layout(graph, subset_key=layers)
    ids = [t.id for t in plan.tasks]
    xy = [(float(pos[i][0]), float(pos[i][1])) for i in ids]
    statuses = [status.get(i, PENDING) for i in ids]

    tallest = max(len(g) for g in generations)
    longest = max(len(_short(i)) for i in ids)
    diameter = max(34.0, 5.4 * longest + 12)  # points, so every label fits its node
    inches = diameter / 72
    fig = _new_figure(
        max(3.5, 1.0 + 2.1 * inches * len(generations)), max(2.5, 1.2 + 1.45 * inches * tallest)
    )
    ax = fig.add_subplot()
    ax.scatter(
        [p[0] for p in xy],
        [p[1] for p in xy],
        s=diameter**2,
        c=[color_of(s) for s in statuses],
        edgecolors="black",
        linewidths=0.8,
        zorder=2,
    )
    where = dict(zip(ids, xy, strict=True))
    for dep, task_id in graph.edges:
        ax.add_patch(
            FancyArrowPatch(
                where[dep],
                where[task_id],
                arrowstyle="-|>",
                mutation_scale=12,
                shrinkA=diameter / 2 + 1,
                shrinkB=diameter / 2 + 1,
                color="0.3",
                linewidth=1.0,
                zorder=1,
            )
        )
    for task_id, (x, y) in where.items():
        ax.text(x, y, _short(task_id), ha="center", va="center", fontsize=8, zorder=3)
    ax.set_title(f"plan: {len(ids)} tasks in {len(generations)} generations")
    ax.set_xlim(*_padded([p[0] for p in xy], len(generations)))
    ax.set_ylim(*_padded([p[1] for p in xy], tallest))
    ax.set_axis_off()
    _legend(fig, statuses, loc="outside lower center", ncols=6, frameon=False)
    return fig


def concurrency_curve(
    results: Sequence[SubagentResult], start: datetime | None = None
) -> tuple[list[float], list[int]]:
    """Return the number of running tasks over time, as a step function.

    Args:
        results: results with `started_at` and `ended_at` (others are ignored).
        start: time zero; defaults to the earliest start.

    Returns:
        `(seconds, running)`: after `seconds[i]`, `running[i]` tasks ran, until the
        next point. It starts at `(0, 0)`, and its largest value is the run's
        `peak_concurrency`.
    """
    events: list[tuple[datetime, int, int]] = []
    for r in results:
        if r.started_at is not None and r.ended_at is not None:
            # The same order as `peak_overlap`: at one instant the end of an interval
            # that lasted comes first, then starts, then ends of zero-length ones.
            events.append((r.started_at, 1, 1))
            events.append((r.ended_at, 2 if r.ended_at <= r.started_at else 0, -1))
    if not events:
        return [0.0], [0]
    events.sort(key=lambda e: (e[0], e[1]))
    t0 = start or events[0][0]
    seconds, running = [0.0], [0]
    for at, _, delta in events:
        seconds.append((at - t0).total_seconds())
        running.append(running[-1] + delta)
    return seconds, running


def plot_timeline(output: Results) -> Figure:
    """Draw a Gantt chart of the subagents with the concurrency curve under it.

    Args:
        output: a run's output, or its results alone.

    Returns:
        The figure: two axes sharing the time axis (seconds since the first start).
        The upper has one row per result (tick labels: task ids) and one bar per
        result that has start and end times; the lower has the concurrency curve
        as its first line.

    Raises:
        ImportError: matplotlib is not installed.
    """
    _need_matplotlib()
    from matplotlib.ticker import MaxNLocator

    results = _results(output)
    spans = {r.task_id: s for r in results if (s := _span(r)) is not None}
    t0 = min((s[0] for s in spans.values()), default=None)
    rows = {r.task_id: row for row, r in enumerate(results)}

    fig = _new_figure(9.0, 2.6 + 0.32 * max(len(results), 3))
    gantt, curve = fig.subplots(2, 1, sharex=True, height_ratios=[max(len(results), 3) * 0.32, 1.4])
    timed = [r for r in results if r.task_id in spans]
    gantt.barh(
        [rows[r.task_id] for r in timed],
        [(spans[r.task_id][1] - spans[r.task_id][0]).total_seconds() for r in timed],
        left=[(spans[r.task_id][0] - (t0 or spans[r.task_id][0])).total_seconds() for r in timed],
        height=0.6,
        color=[color_of(r.status) for r in timed],
        edgecolor="black",
        linewidth=0.5,
    )
    for r in results:
        if r.task_id not in spans:
            # No times: the task never ran (e.g. skipped); say so on its row.
            gantt.text(0, rows[r.task_id], f" {r.status}", va="center", fontsize=8, color="0.35")
    gantt.set_yticks(range(len(results)), labels=[_short(r.task_id) for r in results])
    gantt.set_ylim(len(results) - 0.5, -0.5)
    gantt.grid(axis="x", alpha=0.3)
    _legend(fig, [r.status for r in results], loc="outside right upper", fontsize=8)

    seconds, running = concurrency_curve(results, t0)
    peak = max(running)
    curve.step(seconds, running, where="post", color="#1f77b4", linewidth=1.5)
    curve.fill_between(seconds, running, step="post", alpha=0.25, color="#1f77b4")
    curve.axhline(peak, linestyle="--", color="0.4", linewidth=0.8)
    curve.set_ylim(0, peak + 0.8)
    curve.yaxis.set_major_locator(MaxNLocator(integer=True))
    curve.set_ylabel("running")
    curve.set_xlabel("seconds since the first task started")
    curve.grid(axis="x", alpha=0.3)

    title = f"{len(results)} tasks, peak concurrency {peak}"
    span = max((s[1] for s in spans.values()), default=t0)
    fan_out = (span - t0).total_seconds() if t0 is not None and span is not None else 0.0
    if fan_out > 0:
        # Over the fan-out (first start to last end): what running in parallel bought.
        # The run's wall time also holds planning and the answer, which run alone.
        work = sum((end - start).total_seconds() for start, end in spans.values())
        title += f", fan-out {fan_out:.2f}s, speedup {work / fan_out:.2f}x"
    if isinstance(output, RunOutput):
        title += f" (run wall {output.metrics.wall_time_s:.2f}s)"
    gantt.set_title(title)
    return fig


def plot_usage(output: Results) -> Figure:
    """Draw a bar chart of the total tokens each task used, coloured by status.

    Args:
        output: a run's output, or its results alone.

    Returns:
        The figure: one axes with one bar per result, in result order, labelled
        with the task ids on the x axis and the token counts above the bars.

    Raises:
        ImportError: matplotlib is not installed.
    """
    _need_matplotlib()
    results = _results(output)
    fig = _new_figure(max(5.0, 1.6 + 0.7 * len(results)), 3.8)
    ax = fig.add_subplot()
    totals = [r.usage.total_tokens for r in results]
    bars = ax.bar(
        range(len(results)),
        totals,
        color=[color_of(r.status) for r in results],
        edgecolor="black",
        linewidth=0.5,
    )
    ax.bar_label(bars, fontsize=8, padding=2)
    ax.set_xticks(
        range(len(results)),
        labels=[_short(r.task_id) for r in results],
        rotation=30 if len(results) > 8 else 0,
    )
    ax.set_ylabel("total tokens")
    ax.margins(y=0.15)
    title = f"tokens per task ({sum(totals)} in tasks"
    if isinstance(output, RunOutput):
        title += f", {output.metrics.tokens.total_tokens} in the run"
    ax.set_title(title + ")")
    _legend(fig, [r.status for r in results], loc="outside right upper", fontsize=8)
    return fig
