"""Workspace file tools: useful inside the root, refused everywhere else."""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from langchain_core.tools import BaseTool

from fanfold import RunSettings, Task, execute_tasks_parallel
from fanfold.tools import workspace
from fanfold.tools.workspace import PathEscapeError, confine, make_workspace_tools
from tests.fakes import TaskScript, TaskScriptedModel


@pytest.fixture
def ws(tmp_path: Path) -> tuple[Path, dict[str, BaseTool]]:
    root = tmp_path / "ws"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "a.txt").write_text("alpha\nbeta\ngamma\n")
    (root / "notes.md").write_text("# notes\nbeta again\n")
    outside = tmp_path / "secret.txt"
    outside.write_text("top secret\n")
    os.symlink(outside, root / "link_out.txt")
    os.symlink(tmp_path, root / "dir_out")
    os.symlink(root / "docs" / "a.txt", root / "link_in.txt")
    return root, {t.name: t for t in make_workspace_tools(root)}


async def test_list_read_grep_write_inside_the_root(ws: tuple[Path, dict[str, BaseTool]]) -> None:
    root, tools = ws
    listing = await tools["list_files"].ainvoke({"path": ".", "pattern": "*.txt"})
    assert "docs/a.txt" in listing.splitlines()
    assert (
        await tools["read_file"].ainvoke({"path": "docs/a.txt", "start_line": 2, "end_line": 3})
        == "beta\ngamma"
    )
    assert await tools["read_file"].ainvoke({"path": "link_in.txt"}) == "alpha\nbeta\ngamma"
    hits = await tools["grep_files"].ainvoke({"pattern": "^beta"})
    assert hits.splitlines() == ["docs/a.txt:2: beta", "notes.md:2: beta again"]
    out = await tools["write_file"].ainvoke({"path": "out/new.txt", "content": "hello"})
    assert out == "wrote 5 bytes to out/new.txt"
    assert (root / "out" / "new.txt").read_text() == "hello"


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("../secret.txt", "`..` is not allowed"),
        ("docs/../../secret.txt", "`..` is not allowed"),
        ("/etc/passwd", "outside the workspace root"),
        ("link_out.txt", "through a symlink"),
        ("dir_out/secret.txt", "through a symlink"),
    ],
)
async def test_escapes_are_refused_before_any_io(
    ws: tuple[Path, dict[str, BaseTool]], path: str, needle: str
) -> None:
    root, tools = ws
    with pytest.raises(PathEscapeError, match=needle):
        confine(root, path)
    for name, args in (
        ("read_file", {"path": path}),
        ("write_file", {"path": path, "content": "pwned"}),
        ("list_files", {"path": path}),
        ("grep_files", {"pattern": "secret", "path": path}),
    ):
        with pytest.raises(PathEscapeError):
            await tools[name].ainvoke(args)
    assert (root.parent / "secret.txt").read_text() == "top secret\n"


async def test_an_absolute_path_inside_the_root_is_fine(
    ws: tuple[Path, dict[str, BaseTool]],
) -> None:
    root, tools = ws
    assert (
        await tools["read_file"].ainvoke({"path": str(root / "notes.md")}) == "# notes\nbeta again"
    )


async def test_grep_never_reads_through_a_symlink_out(ws: tuple[Path, dict[str, BaseTool]]) -> None:
    _, tools = ws
    assert await tools["grep_files"].ainvoke({"pattern": "secret"}) == "no matches"


async def test_limits_and_bad_input(ws: tuple[Path, dict[str, BaseTool]]) -> None:
    root, tools = ws
    (root / "big.txt").write_text("x" * 300_000)
    with pytest.raises(ValueError, match="read a line range"):
        await tools["read_file"].ainvoke({"path": "big.txt"})
    with pytest.raises(ValueError, match="bad regular expression"):
        await tools["grep_files"].ainvoke({"pattern": "("})
    with pytest.raises(ValueError, match="is not a file"):
        await tools["read_file"].ainvoke({"path": "docs"})
    with pytest.raises(ValueError, match="not an existing folder"):
        make_workspace_tools(root / "missing")


async def test_a_path_escape_reaches_the_model_as_an_error_and_the_task_goes_on(
    ws: tuple[Path, dict[str, BaseTool]],
) -> None:
    root, _ = ws
    script = TaskScript(call=("read_file", {"path": "../secret.txt"}))
    model = TaskScriptedModel(scripts={"r": script})
    results = await execute_tasks_parallel(
        [Task(id="r", description="read", tools=["read_file", "list_files"])],
        model=model,
        settings=RunSettings(workspace=str(root)),
    )
    (result,) = results
    assert result.status == "ok" and result.tool_calls == 1 and result.tool_errors == 1
    assert "PathEscapeError: `../secret.txt`: `..` is not allowed" in result.output
    assert model.recorder.tools["r"] == ["read_file", "list_files"]


def split_lines(text: str) -> list[str]:
    """Split as an editor numbers lines: at "\n", a "\r" before it dropped."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


@settings(max_examples=150, deadline=None)
@given(
    text=st.lists(
        st.sampled_from(["a", "b", " ", "\r", "\n", "\r\n", "é", "\x00"]), max_size=30
    ).map("".join),
    chunk=st.integers(1, 7),
    start=st.integers(1, 8),
    span=st.none() | st.integers(0, 8),
    pattern=st.sampled_from(["a", "^a", "b$", r"\Ab", "^$", "a.b", r"\bab", "(?-m:^a)", r"a\sb"]),
)
# Anchors of a whole text, not of a line: grep must not skip the file on them.
@example(text="a\nb\n", chunk=1, start=1, span=None, pattern=r"\Ab")
@example(text="b\r\na", chunk=2, start=2, span=None, pattern="(?-m:^a)")
def test_streamed_lines_match_a_plain_split_whatever_the_chunk_size(
    text: str, chunk: int, start: int, span: int | None, pattern: str
) -> None:
    # Tiny chunks: every line, "\r\n" and two-byte character falls across reads.
    end = None if span is None else start + span
    lines = split_lines(text)
    expected_hits = [  # re.ASCII: RE2's `\b` knows ASCII letters only
        f"f.txt:{no}: {line}"
        for no, line in enumerate(lines, 1)
        if re.search(pattern, line, re.ASCII)
    ]
    with tempfile.TemporaryDirectory() as folder, mock.patch.object(workspace, "_CHUNK", chunk):
        Path(folder, "f.txt").write_bytes(text.encode())
        tools = {t.name: t for t in make_workspace_tools(folder)}

        async def read_and_grep() -> tuple[str, str]:
            args = {"path": "f.txt", "start_line": start, "end_line": end}
            got = await tools["read_file"].ainvoke(args)
            return got, await tools["grep_files"].ainvoke({"pattern": pattern})

        got, hits = asyncio.run(read_and_grep())
    assert got == "\n".join(lines[start - 1 : end])
    assert hits == ("\n".join(expected_hits) or "no matches")
