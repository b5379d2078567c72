"""House rules that CI enforces: lint, types, and the README's commands."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests import typecheck

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


def test_ruff_is_clean() -> None:
    lint = _run(str(BIN / "ruff"), "check", ".")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = _run(str(BIN / "ruff"), "format", "--check", ".")
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_mypy_strict_is_clean() -> None:
    proc = typecheck.mypy()  # over `fanfold` as it installs (see tests/typecheck.py)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no issues found" in proc.stdout


def _readme_block(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"{re.escape(title)}.*?```(?:bash|sh)\n(.*?)```", text, re.S)
    assert match, f"README has no `{title}` command block"
    return match.group(1).strip()


def test_ci_runs_exactly_the_readme_test_command() -> None:
    command = _readme_block("Run the tests")
    ci = (ROOT / ".ci" / "run").read_text()
    assert command in ci.splitlines(), f"{command!r} is not a line of .ci/run"


def test_readme_demo_command_runs_the_demo() -> None:
    command = _readme_block("Run the demo")
    assert "pip install" in command and command.endswith("fanfold demo")
