"""A seeded random DAG with log-normal task times, and its two lower bounds."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence

import networkx as nx
from fake import MODEL_CALLS


def make_dag(
    n: int = 200,
    *,
    seed: int = 6,
    median_call_s: float = 0.05,
    sigma: float = 1.0,
    max_deps: int = 3,
    window: int = 20,
) -> tuple[dict[int, list[int]], dict[int, float]]:
    """Return (item -> items it needs, item -> latency of each of its model calls).

    Item `i` depends on up to `max_deps` of the `window` items before it; a task
    takes `MODEL_CALLS` calls of a log-normal latency (median `median_call_s`).
    """
    rng = random.Random(seed)
    deps: dict[int, list[int]] = {}
    for i in range(1, n + 1):
        pool = list(range(max(1, i - window), i))
        deps[i] = sorted(rng.sample(pool, rng.randint(0, min(max_deps, len(pool)))))
    latency = {i: rng.lognormvariate(math.log(median_call_s), sigma) for i in deps}
    return deps, latency


def graph_of(deps: Mapping[int, Sequence[int]]) -> nx.DiGraph:
    """Return the DAG, edges from dependency to dependent."""
    g = nx.DiGraph()
    g.add_nodes_from(deps)
    g.add_edges_from((d, i) for i, ds in deps.items() for d in ds)
    return g


def task_times(latency: Mapping[int, float]) -> dict[int, float]:
    """Return each task's own time: its model calls (the tool is instant)."""
    return {i: MODEL_CALLS * s for i, s in latency.items()}


def critical_path(deps: Mapping[int, Sequence[int]], times: Mapping[int, float]) -> float:
    """Return the longest chain of task times: no schedule can finish sooner."""
    finish: dict[int, float] = {}
    for i in nx.topological_sort(graph_of(deps)):
        finish[i] = times[i] + max((finish[d] for d in deps[i]), default=0.0)
    return max(finish.values())


def wave_bound(deps: Mapping[int, Sequence[int]], times: Mapping[int, float]) -> float:
    """Return the best wave-by-wave makespan: each generation waits for the slowest of the last."""
    return sum(max(times[i] for i in gen) for gen in nx.topological_generations(graph_of(deps)))


def depth(deps: Mapping[int, Sequence[int]]) -> int:
    """Return the number of topological generations."""
    return sum(1 for _ in nx.topological_generations(graph_of(deps)))
