"""Workspace file tools: useful inside the root, refused everywhere else."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from langchain_core.tools import BaseTool

from fanfold import RunSettings, Task, execute_tasks_parallel
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
