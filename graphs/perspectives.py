"""The perspectives preset: one request to several named viewpoints at once, merged."""

from __future__ import annotations

from fanfold.graphs.orchestrator import Orchestrator, compile_orchestrator
from fanfold.nodes.perspectives import merge_views, perspectives_planner


def compile_perspectives(**kwargs: object) -> Orchestrator:
    """Compile the orchestrator with the perspectives planner and the view merger.

    Every kind in `RunSettings.perspectives` (default: optimist, skeptic, engineer)
    gets the whole request in parallel; the answer keeps who said what, and the
    output's `views` holds each view by kind. Keyword arguments go to
    `compile_orchestrator`.
    """
    return compile_orchestrator(
        plan_with=perspectives_planner,
        answer_with=merge_views,
        name="perspectives",
        **kwargs,  # type: ignore[arg-type]
    )


graph = compile_perspectives(checkpoint_granularity="step")
