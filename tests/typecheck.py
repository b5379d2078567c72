"""Run strict mypy over `fanfold` as it installs: `python tests/typecheck.py`.

mypy does not run the import hook of an editable install, and the repository's
folders (graphs/, nodes/, tools/) are mapped into `fanfold` only at install time.
So the check builds a tree of links with the installed layout (the mapping in
pyproject.toml) in a temporary folder and checks `-p fanfold` there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def link_tree(target: Path) -> Path:
    """Lay the packages out under `target` as pyproject.toml installs them."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    mapping: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    for package, folder in sorted(mapping.items()):
        where = target.joinpath(*package.split("."))
        where.mkdir(parents=True, exist_ok=True)
        for source in (ROOT / folder).iterdir():
            if source.suffix in (".py", ".typed") and source.is_file():
                (where / source.name).symlink_to(source)
    return target


def mypy(*extra: str) -> subprocess.CompletedProcess[str]:
    """Run mypy on the linked tree with the repository's settings."""
    with tempfile.TemporaryDirectory(prefix="fanfold-mypy-") as tmp:
        tree = link_tree(Path(tmp))
        env = {**os.environ, "MYPYPATH": str(tree)}
        cmd = [
            str(Path(sys.executable).parent / "mypy"),
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(ROOT / ".mypy_cache"),
            "-p",
            "fanfold",
            *extra,
        ]
        return subprocess.run(
            cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=600, check=False
        )


if __name__ == "__main__":
    proc = mypy(*sys.argv[1:])
    print(proc.stdout + proc.stderr, end="")
    sys.exit(proc.returncode)
