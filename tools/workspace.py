"""Workspace file tools, confined to one root folder.

Every path a model passes is checked before any I/O: no `..` parts, no absolute
path outside the root, and no symlink (anywhere on the path) that leads outside.
A refused path is an error the model sees and can correct.
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
import re
from pathlib import Path

from langchain_core.tools import BaseTool, StructuredTool

MAX_READ_BYTES = 256 * 1024
MAX_WRITE_BYTES = 1024 * 1024
MAX_LIST = 500
MAX_MATCHES = 200


class PathEscapeError(ValueError):
    """A path that would leave the workspace root."""


def confine(root: Path, path: str) -> Path:
    """Return `path` inside `root`, resolved, or raise `PathEscapeError`.

    Raises:
        PathEscapeError: `..` parts, an absolute path outside the root, or a
            symlink that resolves outside the root.
    """
    base = root.resolve()
    raw = Path(path or ".")
    if ".." in raw.parts:
        msg = f"`{path}`: `..` is not allowed; paths are relative to the workspace root"
        raise PathEscapeError(msg)
    candidate = raw if raw.is_absolute() else base / raw
    if not candidate.is_absolute() or not _within(candidate, base):
        msg = f"`{path}` is outside the workspace root"
        raise PathEscapeError(msg)
    resolved = candidate.resolve()  # follows every symlink on the way
    if not _within(resolved, base):
        msg = f"`{path}` leads outside the workspace root (through a symlink)"
        raise PathEscapeError(msg)
    return resolved


def _within(path: Path, base: Path) -> bool:
    return path == base or base in path.parents


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root.resolve()).as_posix() or "."


def make_workspace_tools(root: str | Path) -> list[BaseTool]:
    """Return `list_files`, `read_file`, `grep_files` and `write_file` confined to `root`.

    Raises:
        ValueError: `root` is not an existing folder.
    """
    base = Path(root)
    if not base.is_dir():
        msg = f"workspace root `{root}` is not an existing folder"
        raise ValueError(msg)

    async def list_files(path: str = ".", pattern: str = "*") -> str:
        """List files under a folder of the workspace (recursively), matching a glob pattern."""
        folder = confine(base, path)
        if not folder.is_dir():
            raise ValueError(f"`{path}` is not a folder")

        def walk() -> list[str]:
            out: list[str] = []
            for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
                dirnames.sort()
                for name in sorted(filenames):
                    full = Path(dirpath) / name
                    rel = _rel(base, full)
                    if fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(rel, pattern):
                        out.append(rel)
                    if len(out) >= MAX_LIST:
                        return out
            return out

        files = await asyncio.to_thread(walk)
        more = " (first results only)" if len(files) >= MAX_LIST else ""
        return "\n".join(files) + more if files else "no files"

    async def read_file(path: str, start_line: int = 1, end_line: int | None = None) -> str:
        """Read a text file of the workspace, optionally only lines start_line..end_line."""
        target = confine(base, path)
        if not target.is_file():
            raise ValueError(f"`{path}` is not a file")
        size = target.stat().st_size
        if size > MAX_READ_BYTES and start_line == 1 and end_line is None:
            msg = f"`{path}` has {size} bytes (limit {MAX_READ_BYTES}); read a line range"
            raise ValueError(msg)
        text = await asyncio.to_thread(target.read_text, encoding="utf-8", errors="replace")
        lines = text.splitlines()
        if start_line < 1 or (end_line is not None and end_line < start_line):
            raise ValueError(f"bad line range {start_line}..{end_line}")
        chosen = lines[start_line - 1 : end_line]
        out = "\n".join(chosen)
        if len(out.encode()) > MAX_READ_BYTES:
            raise ValueError(f"that range has more than {MAX_READ_BYTES} bytes; read fewer lines")
        return out

    async def grep_files(pattern: str, path: str = ".", glob: str = "*") -> str:
        """Search the workspace's text files for a regular expression; `file:line: text` lines."""
        folder = confine(base, path)
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"bad regular expression `{pattern}`: {exc}") from None

        def search() -> list[str]:
            hits: list[str] = []
            files = [folder] if folder.is_file() else sorted(folder.rglob(glob))
            for file in files:
                if not file.is_file() or file.is_symlink() or file.stat().st_size > MAX_READ_BYTES:
                    continue
                if not _within(file.resolve(), base.resolve()):
                    continue
                text = file.read_text(encoding="utf-8", errors="replace")
                for no, line in enumerate(text.splitlines(), start=1):
                    if regex.search(line):
                        hits.append(f"{_rel(base, file)}:{no}: {line[:200]}")
                        if len(hits) >= MAX_MATCHES:
                            return hits
            return hits

        hits = await asyncio.to_thread(search)
        return "\n".join(hits) if hits else "no matches"

    async def write_file(path: str, content: str) -> str:
        """Write a text file in the workspace (creating folders); replaces an existing file."""
        target = confine(base, path)
        data = content.encode()
        if len(data) > MAX_WRITE_BYTES:
            raise ValueError(f"content has {len(data)} bytes (limit {MAX_WRITE_BYTES})")
        if target.is_dir():
            raise ValueError(f"`{path}` is a folder")

        def write() -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            confine(base, str(target.relative_to(base.resolve())))  # folders made: check again
            target.write_bytes(data)

        await asyncio.to_thread(write)
        return f"wrote {len(data)} bytes to {_rel(base, target)}"

    return [
        StructuredTool.from_function(coroutine=fn, name=fn.__name__, description=fn.__doc__)
        for fn in (list_files, read_file, grep_files, write_file)
    ]
