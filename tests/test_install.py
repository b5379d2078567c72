"""Fanfold installs under one name and works inside a user's project.

A project folder that holds its own `tools.py`, `nodes.py`, `graphs.py` and a
`graphs/` package (as most LangGraph projects do) must not shadow anything of
Fanfold's: every module installs under `fanfold`, nothing at the top level.
Checked with a wheel built from this tree in a fresh venv, and with the editable
install the tests run under.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent(
    """
    import asyncio, importlib.util, sys

    import fanfold
    from fanfold import (
        AgentKind, BudgetExceeded, FanfoldError, Plan, PlanError, QuorumUnreachable,
        RunOutput, RunSettings, SubagentResult, Task, TaskFailedError, ToolRegistry,
        aresume, arun, execute_task, execute_tasks_parallel, run,
    )

    # The user's own modules are still theirs, and none of Fanfold's is top level.
    import tools, nodes, graphs
    assert tools.MINE and nodes.MINE and graphs.MINE, "the user's modules changed"
    for generic in ("fanfold.graphs", "fanfold.nodes", "fanfold.tools"):
        assert importlib.util.find_spec(generic) is not None
    out = asyncio.run(arun("tea, coffee and cocoa", settings=RunSettings(model="demo")))
    assert out.status == "ok", out.status
    assert len(out.results) == 5 and all(r.status == "ok" for r in out.results)
    one = asyncio.run(execute_task("What is 6 * 7?", model="demo"))
    assert one.status == "ok" and "42" in one.output, one
    print("FANFOLD_OK", fanfold.__file__)
    """
)


def _user_project(where: Path) -> Path:
    """A project folder with the generic names a LangGraph project tends to have."""
    where.mkdir()
    # Were Fanfold to import any of these, it would fail as it used to:
    # "cannot import name 'ToolRegistry' from 'tools'".
    (where / "nodes.py").write_text("MINE = True\n")
    (where / "graphs").mkdir()
    (where / "graphs" / "__init__.py").write_text("MINE = True\n")
    (where / "graphs" / "stray.txt").write_text("not python\n")
    (where / "graphs.py").write_text("MINE = False  # the package wins over the module\n")
    (where / "tools.py").write_text("MINE = True\n")
    (where / "check.py").write_text(SCRIPT)
    return where


def _run(python: Path | str, project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _built_wheel(tmp: Path) -> Path:
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
    src = tmp / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "notebooks"
        ),
    )
    dist = tmp / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation"]
        + ["-q", "-w", str(dist)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = dist.glob("fanfold-*.whl")
    return wheel


def test_the_wheel_installs_only_fanfold_and_runs_in_a_project_with_generic_names(
    tmp_path: Path,
) -> None:
    wheel = _built_wheel(tmp_path)
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"fanfold"}, tops
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    project = _user_project(tmp_path / "project")
    proc = _run(python, project, "check.py")
    assert proc.returncode == 0 and "FANFOLD_OK" in proc.stdout, proc.stdout + proc.stderr
    assert str(env) in proc.stdout  # the wheel's copy, not this checkout
    demo = _run(env / "bin" / "fanfold", project, "demo", "--json", "--model", "demo")
    assert demo.returncode == 0, demo.stderr
    assert '"status": "ok"' in demo.stdout


def test_the_editable_install_runs_in_a_project_with_generic_names(tmp_path: Path) -> None:
    project = _user_project(tmp_path / "project")
    (project / "tools").mkdir()  # an empty folder named like one of ours, too
    proc = _run(sys.executable, project, "check.py")
    assert proc.returncode == 0 and "FANFOLD_OK" in proc.stdout, proc.stdout + proc.stderr
    cli = _run(sys.executable, project, "-m", "fanfold", "demo", "--json", "--model", "demo")
    assert cli.returncode == 0, cli.stderr
    assert '"status": "ok"' in cli.stdout
