"""Pictures of real demo runs: check axes, artists and labels, not pixels."""

from __future__ import annotations

import io
import sys
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch

from fanfold.graphs.api import RunOutput, run
from fanfold.graphs.plots import (
    PENDING,
    STATUS_COLORS,
    concurrency_curve,
    plot_plan,
    plot_timeline,
    plot_usage,
)
from fanfold.nodes.context import RunSettings
from fanfold.nodes.domain import Plan, SubagentResult, Task, peak_overlap

REQUEST = "Compare tea, coffee and cocoa; estimate 3 * 120 cups"


@pytest.fixture(scope="module")
def output() -> RunOutput:
    """A demo run: 4 parallel tasks, then compare, then report, 2 at a time."""
    return run(REQUEST, settings=RunSettings(model="demo:latency=0.01", max_concurrency=2))


@pytest.fixture(scope="module")
def partial() -> RunOutput:
    """A demo run whose two first tasks time out, so their dependents are skipped."""
    return run("alpha, beta", settings=RunSettings(model="demo:latency=0.3", task_timeout_s=0.1))


def _ids(out: RunOutput) -> list[str]:
    assert out.plan is not None
    return [t.id for t in out.plan.tasks]


def _rgba(status: str) -> tuple[float, ...]:
    return tuple(to_rgba(STATUS_COLORS[status]))


def _renders(fig: Figure) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=40)
    assert buf.getvalue().startswith(b"\x89PNG")


def test_plot_plan_lays_out_generations_left_to_right(output: RunOutput) -> None:
    assert output.plan is not None and output.status == "ok"
    fig = plot_plan(output.plan, output)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert len(ax.collections) == 1
    nodes = ax.collections[0]
    offsets = nodes.get_offsets()
    ids = _ids(output)
    assert len(offsets) == len(ids) == 6
    where = {task_id: (float(x), float(y)) for task_id, (x, y) in zip(ids, offsets, strict=True)}
    generations = output.plan.generations()
    assert generations == [["t1", "t2", "t3", "t4"], ["compare"], ["report"]]
    columns = [{where[i][0] for i in gen} for gen in generations]
    assert all(len(c) == 1 for c in columns), "a generation is one column"
    xs = [c.pop() for c in columns]
    assert xs == sorted(xs) and len(set(xs)) == 3, "generations go left to right"
    ys = [where[i][1] for i in generations[0]]
    assert ys == sorted(ys, reverse=True), "plan order from the top down"
    assert [t.get_text() for t in ax.texts] == ids
    arrows = ax.patches
    assert all(isinstance(a, FancyArrowPatch) for a in arrows)
    assert len(arrows) == sum(len(t.depends_on) for t in output.plan.tasks) == 5
    assert [tuple(c) for c in nodes.get_facecolors()] == [_rgba("ok")] * 6
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["ok"]
    _renders(fig)


def test_plot_plan_colours_tasks_by_status(partial: RunOutput) -> None:
    assert partial.plan is not None
    statuses = {r.task_id: r.status for r in partial.results}
    assert statuses == {
        "t1": "timed_out",
        "t2": "timed_out",
        "compare": "skipped",
        "report": "skipped",
    }
    fig = plot_plan(partial.plan, partial.results)
    colours = [tuple(c) for c in fig.axes[0].collections[0].get_facecolors()]
    assert colours == [_rgba(statuses[i]) for i in _ids(partial)]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["timed_out", "skipped"]
    _renders(fig)


def test_plot_plan_without_results_shows_pending_tasks() -> None:
    plan = Plan(
        tasks=[
            Task(id="a", description="first"),
            Task(id="b", description="second", depends_on=["a"]),
            Task(id="c", description="third", depends_on=["a"]),
            Task(id="d", description="last", depends_on=["b", "c"]),
        ]
    )
    fig = plot_plan(plan)
    ax = fig.axes[0]
    assert [tuple(c) for c in ax.collections[0].get_facecolors()] == [_rgba(PENDING)] * 4
    assert len(ax.patches) == 4
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [PENDING]
    single = plot_plan(Plan(tasks=[Task(id="only", description="one task")]))
    assert len(single.axes[0].collections[0].get_offsets()) == 1
    assert not single.axes[0].patches
    _renders(single)


def test_plot_timeline_has_a_bar_per_task_and_the_concurrency_curve(output: RunOutput) -> None:
    fig = plot_timeline(output)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2
    gantt, curve = fig.axes
    assert gantt.get_shared_x_axes().joined(gantt, curve)
    assert [t.get_text() for t in gantt.get_yticklabels()] == _ids(output)
    bars = gantt.patches
    assert len(bars) == len(output.results) == 6
    t0 = min(r.started_at for r in output.results if r.started_at)
    for bar, r in zip(bars, output.results, strict=True):
        assert r.started_at and r.ended_at
        assert bar.get_x() == pytest.approx((r.started_at - t0).total_seconds())
        assert bar.get_width() == pytest.approx((r.ended_at - r.started_at).total_seconds())
        assert tuple(bar.get_facecolor()) == _rgba("ok")
    line = curve.lines[0]
    running = list(line.get_ydata())
    seconds = list(line.get_xdata())
    assert output.metrics.peak_concurrency == 2
    assert max(running) == output.metrics.peak_concurrency
    assert running[0] == 0 and running[-1] == 0
    assert seconds == sorted(seconds)
    assert "peak concurrency 2" in gantt.get_title()
    # The headline speedup is over the fan-out, not the run's wall (planning included).
    ends = max(r.ended_at for r in output.results if r.ended_at)
    fan_out = (ends - t0).total_seconds()
    work = sum((r.ended_at - r.started_at).total_seconds() for r in output.results)  # type: ignore[operator]
    assert f"fan-out {fan_out:.2f}s, speedup {work / fan_out:.2f}x" in gantt.get_title()
    assert work / fan_out > output.metrics.speedup  # the run's own figure counts planning
    assert f"(run wall {output.metrics.wall_time_s:.2f}s)" in gantt.get_title()
    _renders(fig)


def test_plot_timeline_keeps_a_row_for_tasks_that_never_ran(partial: RunOutput) -> None:
    fig = plot_timeline(partial.results)
    gantt, curve = fig.axes
    assert [t.get_text() for t in gantt.get_yticklabels()] == _ids(partial)
    assert len(gantt.patches) == 2, "only the two timed-out tasks have times"
    assert all(tuple(b.get_facecolor()) == _rgba("timed_out") for b in gantt.patches)
    assert [t.get_text().strip() for t in gantt.texts] == ["skipped", "skipped"]
    assert max(curve.lines[0].get_ydata()) == partial.metrics.peak_concurrency == 2
    assert "wall" not in gantt.get_title(), "plain results carry no run metrics"


def test_plot_usage_has_one_bar_per_task_with_its_tokens(output: RunOutput) -> None:
    fig = plot_usage(output)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    totals = [r.usage.total_tokens for r in output.results]
    assert all(t > 0 for t in totals)
    assert [b.get_height() for b in ax.patches] == totals
    assert [t.get_text() for t in ax.get_xticklabels()] == _ids(output)
    assert [t.get_text() for t in ax.texts] == [str(t) for t in totals]
    assert f"{sum(totals)} in tasks" in ax.get_title()
    assert f"{output.metrics.tokens.total_tokens} in the run" in ax.get_title()
    _renders(fig)


def test_plots_name_the_viz_extra_when_matplotlib_is_missing(
    monkeypatch: pytest.MonkeyPatch, output: RunOutput
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert output.plan is not None
    for draw in (lambda: plot_plan(output.plan), lambda: plot_timeline(output)):
        with pytest.raises(ImportError, match=r"fanfold\[viz\]"):
            draw()


T0 = datetime(2026, 1, 1, tzinfo=UTC)
intervals = st.lists(st.tuples(st.integers(0, 20), st.integers(0, 5)), min_size=0, max_size=12).map(
    lambda spans: [
        SubagentResult(
            task_id=f"t{i}",
            status="ok",
            started_at=T0 + timedelta(seconds=start),
            ended_at=T0 + timedelta(seconds=start + length),
        )
        for i, (start, length) in enumerate(spans)
    ]
)


@given(intervals)
def test_concurrency_curve_peaks_at_peak_overlap(results: list[SubagentResult]) -> None:
    seconds, running = concurrency_curve(results)
    assert max(running) == peak_overlap(results)
    assert running[0] == 0 and running[-1] == 0
    assert min(running) == 0 and seconds == sorted(seconds)
    assert len(seconds) == len(running) == 1 + 2 * len(results)
