"""Execute every notebook in a fresh kernel of this venv's Python, on the demo model."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbformat import NotebookNode

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
KERNEL = "fanfold-venv-python"
NAMES = [
    "01_quickstart",
    "02_custom_subagents_and_tools",
    "03_plans_dags_and_approval",
    "04_reliability",
    "05_watch_and_steer",
]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory: pytest.TempPathFactory) -> KernelSpecManager:
    """A kernel spec of our own: this very interpreter, whatever else is installed."""
    kernels = tmp_path_factory.mktemp("kernels")
    (kernels / KERNEL).mkdir()
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Fanfold (venv)",
        "language": "python",
    }
    (kernels / KERNEL / "kernel.json").write_text(json.dumps(spec))
    return KernelSpecManager(kernel_dirs=[str(kernels)])


async def _execute(name: str, specs: KernelSpecManager) -> NotebookNode:
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    km = AsyncKernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)
    client = NotebookClient(
        nb,
        km=km,
        timeout=60,
        resources={"metadata": {"path": str(NOTEBOOKS)}},  # the kernel's working directory
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"  # no debugger warning on stderr
    # cleanup_kc: a client handed a kernel manager leaves the kernel running otherwise.
    await client.async_execute(cleanup_kc=True, env=env)
    return nb


def _text(nb: NotebookNode) -> str:
    parts: list[str] = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                parts.append(out.text)
            elif out.output_type in ("execute_result", "display_data"):
                parts.append(out.data.get("text/plain", ""))
    return "\n".join(parts)


def _images(nb: NotebookNode) -> int:
    return sum(
        1
        for cell in nb.cells
        for out in cell.get("outputs", [])
        if out.output_type in ("execute_result", "display_data") and "image/png" in out.data
    )


def _no_errors(nb: NotebookNode) -> None:
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out.output_type != "error", f"{out.ename}: {out.evalue}"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_stored_without_outputs(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]
        assert "draw_mermaid_png" not in cell.source, "it needs the internet"


def test_every_notebook_is_listed() -> None:
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == NAMES


@pytest.mark.timeout(60)
async def test_quickstart_runs_and_shows_results_and_pictures(
    kernel_specs: KernelSpecManager,
) -> None:
    nb = await _execute("01_quickstart", kernel_specs)
    _no_errors(nb)
    text = _text(nb)
    assert text.count("[demo model] Answer to: Compare asyncio") == 1
    metrics = re.search(r"status=ok tasks=(\d+) peak_concurrency=(\d+)", text)
    assert metrics, text
    assert int(metrics.group(1)) == 6 and int(metrics.group(2)) >= 2
    assert re.search(r"^report\s+writer\s+ok\s", text, re.M), "the results table"
    assert _images(nb) == 3, "timeline, plan and usage figures"
    # The widget's saved text is its first state: the final one is left as text too.
    assert "tasks: 6/6 finished (ok=6)" in text


@pytest.mark.timeout(60)
async def test_custom_tools_and_kinds_notebook_runs_them(kernel_specs: KernelSpecManager) -> None:
    nb = await _execute("02_custom_subagents_and_tools", kernel_specs)
    _no_errors(nb)
    text = _text(nb)
    assert re.search(r"^cost\s+ok\s+tool_calls=1 .*calculator -> 84", text, re.M)
    assert re.search(r"^review\s+kind=editor\s+ok", text, re.M), "the custom kind ran"
    assert "unknown agent kind `editor`" in text, "unregistered kinds are rejected"
    assert re.search(r"^t1\s+ok .*text_stats -> CUSTOM TOOL: 1 WORDS", text, re.M)
    # The MCP server's tools: planned from their names, called over one stdio session.
    assert re.search(r"^t1\s+tools=\['to_celsius'\]", text, re.M)
    assert re.search(r"^t1\s+ok .*to_celsius -> 100\.0", text, re.M)
    assert re.search(r"^t2\s+ok .*shout -> HELLO FROM MCP", text, re.M)
    assert "'state': 'up', 'connects': 1, 'lists': 1, 'calls': 2, 'call_errors': 0" in text


@pytest.mark.timeout(60)
async def test_plans_notebook_runs_a_hand_written_dag(kernel_specs: KernelSpecManager) -> None:
    nb = await _execute("03_plans_dags_and_approval", kernel_specs)
    _no_errors(nb)
    text = _text(nb)
    assert "generations: [['tea', 'coffee', 'cups'], ['compare'], ['report']]" in text
    assert "ok [('tea', 'ok'), ('coffee', 'ok'), ('cups', 'ok'), ('compare', 'ok')" in text
    assert "dependency cycle: a -> b -> a" in text
    assert "approve -. &nbsp;fan-out&nbsp; .-> subagent;" in text
    assert "run_tools --> act;" in text
    assert _images(nb) == 3
    assert "asked to approve: ['t1']" in text  # the demo planner's plan for the request
    assert "ok [('cups', '[demo model] estimate 3 * 120 cups: calculator -> 360')]" in text
    assert "rejected type='PlanRejected' message='not today'" in text


@pytest.mark.timeout(60)
async def test_reliability_notebook_shows_timeouts_and_fail_fast(
    kernel_specs: KernelSpecManager,
) -> None:
    nb = await _execute("04_reliability", kernel_specs)
    _no_errors(nb)
    text = _text(nb)
    assert re.search(r"^t1\s+timed_out TaskTimeout: no result after 0.1s", text, re.M)
    assert re.search(r"^compare\s+skipped\s+DependencyFailed", text, re.M)
    assert re.search(r"^quick\s+timed_out", text, re.M)
    assert re.search(r"^patient\s+ok", text, re.M), "a task's own timeout wins"
    assert re.search(r"^t1\s+failed\s+MaxStepsExceeded", text, re.M)
    assert re.search(r"^stopped by: t[12] timed_out", text, re.M), "TaskFailedError was caught"
    assert re.search(r"^finished before the stop: \[\('t[12]', 'timed_out'\)", text, re.M)
    # A durable run, then a rerun of what failed: t1 kept, the rest ran again.
    assert re.search(r"^first attempt: partial", text, re.M)
    assert re.search(r"^\s+t2\s+failed\s+ModelError", text, re.M)
    assert re.search(r"^rerun: ok", text, re.M)
    assert re.search(r"^\s+t1\s+ok\s+-> ok\s+\(kept\)", text, re.M)
    assert re.search(r"^\s+t2\s+failed\s+-> ok\s+\(ran again\)", text, re.M)
    assert re.search(r"^\s+report\s+skipped\s+-> ok\s+\(ran again\)", text, re.M)
    history = re.search(r"^checkpoints in the thread's history: (\d+)", text, re.M)
    assert history and int(history.group(1)) > 4  # both attempts are in it


@pytest.mark.timeout(90)
async def test_watch_and_steer_notebook_cancels_adds_pauses_and_stops(
    kernel_specs: KernelSpecManager,
) -> None:
    nb = await _execute("05_watch_and_steer", kernel_specs)
    _no_errors(nb)
    text = _text(nb)
    assert "cancel mate: True" in text
    assert re.search(r"^mate\s+cancelled\s+\(Cancelled: mate is out of scope\)", text, re.M)
    assert re.search(r"^mate_notes\s+skipped\s+\(DependencyFailed", text, re.M)
    assert re.search(r"^prices\s+ok", text, re.M), "the added task ran"
    assert "tasks: 7/7 finished (ok=4 cancelled=1 skipped=2)" in text  # the bar saw it join
    # Paused after tea, then stopped: whether coffee had started is a race; cocoa never did.
    assert re.search(r"^tea\s+ok", text, re.M)
    assert re.search(r"^coffee\s+(ok|cancelled)", text, re.M)
    assert re.search(r"^cocoa\s+cancelled the run was stopped: one drink is enough", text, re.M)
    assert re.search(r"^compare\s+cancelled the run was stopped", text, re.M)
    assert text.count("status: partial") == 2
