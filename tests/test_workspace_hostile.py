"""Workspace file tools against hostile files and input (Linux).

A folder swapped for a symlink between check and use, a pattern that backtracks
forever, FIFOs and device nodes, a 1 GiB sparse file, a glob that climbs out: each
was a way out of the workspace or a way to stop the process, and each test here
failed on the tools as they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import stat
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from langchain_core.tools import BaseTool

from fanfold import RunSettings, SubagentResult, Task, execute_tasks_parallel
from fanfold.tools.workspace import MAX_READ_BYTES, PathEscapeError, make_workspace_tools
from tests.fakes import TaskScript, TaskScriptedModel

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Linux: renameat2, /proc")

Tools = dict[str, BaseTool]
REPO = Path(__file__).resolve().parent.parent


def tools_for(root: Path) -> Tools:
    return {t.name: t for t in make_workspace_tools(root)}


def start_swapper(folder: Path, a: str, b: str, seconds: float) -> subprocess.Popen[str]:
    """Start `tests.hostile.swapper` swapping `a` and `b` in `folder` for `seconds`."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.hostile.swapper", a, b, str(seconds)],
        cwd=folder,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )


# --- 1. a folder swapped for a symlink to the outside, mid-call ---------------------


async def test_a_folder_swapped_for_a_symlink_never_leaks_a_read_or_a_write(
    tmp_path: Path,
) -> None:
    root, outside = tmp_path / "ws", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "sub" / "f.txt").write_text("inside")
    (root / "sub" / "only_inside.txt").write_text("inside")
    (outside / "f.txt").write_text("outside")
    (outside / "only_outside.txt").write_text("outside")
    os.symlink(outside, root / "link")
    tools = tools_for(root)
    seen: Counter[str] = Counter()  # "tool outcome": how often
    rounds = 0
    with start_swapper(root, "sub", "link", 2.5) as swapper:
        # The swapper starts swapping once its interpreter is up; go on until it stops.
        while swapper.poll() is None:
            rounds += 1
            calls: list[tuple[str, dict[str, str]]] = [
                ("read_file", {"path": "sub/f.txt"}),
                ("write_file", {"path": f"sub/w{rounds}.txt", "content": "x"}),
                ("grep_files", {"pattern": "side", "path": "sub"}),
                ("list_files", {"path": "sub"}),
            ]
            for name, args in calls:
                try:
                    out = await tools[name].ainvoke(args)
                except Exception as exc:  # noqa: BLE001 - counted: the test says which
                    # "keeps changing; try again" is safe too: it is swapped every µs.
                    if isinstance(exc, PathEscapeError) or "keeps changing" in str(exc):
                        seen[f"{name} refused"] += 1
                    else:
                        seen[f"{name} {type(exc).__name__}: {exc}"] += 1
                    continue
                seen[f"{name} {'outside' if 'outside' in out else 'inside'}"] += 1
        printed, _ = swapper.communicate(timeout=10)
    swaps = int(printed)
    assert swaps > 1000
    outcomes = {key.split(" ", 1)[1] for key in seen}
    assert outcomes == {"inside", "refused"}, seen  # never outside, and no other error
    assert sorted(p.name for p in outside.iterdir()) == ["f.txt", "only_outside.txt"]
    assert (outside / "f.txt").read_text() == "outside"
    real = root / "link" if (root / "sub").is_symlink() else root / "sub"
    written = [p for p in real.iterdir() if p.name.startswith("w")]
    assert len(written) == seen["write_file inside"]  # every write that said so, inside
    # Both sides of the race were seen: the swap really happened under the tools.
    print(f"\n{swaps} swaps; {rounds} rounds of 4 calls: {dict(sorted(seen.items()))}")


async def test_symlinks_that_stay_inside_are_followed_and_loops_are_refused(
    tmp_path: Path,
) -> None:
    root = tmp_path / "ws"
    (root / "docs").mkdir(parents=True)
    (root / "deep" / "er").mkdir(parents=True)
    (root / "docs" / "a.txt").write_text("alpha\n")
    os.symlink("../../docs", root / "deep" / "er" / "up")  # `..` inside the root: fine
    os.symlink("../..", root / "deep" / "er" / "climb")  # back to the root: fine
    os.symlink("../../..", root / "deep" / "er" / "out")  # one more: out of it
    os.symlink("loop_b", root / "loop_a")
    os.symlink("loop_a", root / "loop_b")
    tools = tools_for(root)
    assert await tools["read_file"].ainvoke({"path": "deep/er/up/a.txt"}) == "alpha"
    assert await tools["list_files"].ainvoke({"path": "deep/er/up"}) == "docs/a.txt"
    assert await tools["read_file"].ainvoke({"path": "deep/er/climb/docs/a.txt"}) == "alpha"
    with pytest.raises(PathEscapeError, match="through a symlink"):
        await tools["list_files"].ainvoke({"path": "deep/er/out"})
    with pytest.raises(PathEscapeError, match="through a symlink"):
        await tools["read_file"].ainvoke({"path": "deep/er/climb/deep/er/out/ws/docs/a.txt"})
    with pytest.raises(ValueError, match="too many symlinks"):
        await tools["read_file"].ainvoke({"path": "loop_a"})


async def test_a_write_replaces_a_hard_link_and_keeps_the_outside_file(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    os.link(outside, root / "hard.txt")  # the same inode, inside and outside
    (root / "script.sh").write_text("old")
    (root / "script.sh").chmod(0o750)
    tools = tools_for(root)
    await tools["write_file"].ainvoke({"path": "hard.txt", "content": "new"})
    await tools["write_file"].ainvoke({"path": "script.sh", "content": "new"})
    assert outside.read_text() == "keep me"
    assert (root / "hard.txt").read_text() == "new"
    assert stat.S_IMODE((root / "script.sh").stat().st_mode) == 0o750
    assert sorted(p.name for p in root.iterdir()) == ["hard.txt", "script.sh"]  # no temp left


async def test_hostile_file_names_are_listed_one_per_line_in_valid_utf8(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    (root / os.fsdecode(b"bad\xff\nname.txt")).write_text("needle\n")
    (root / "good.txt").write_text("needle\n")
    tools = tools_for(root)
    listing = await tools["list_files"].ainvoke({})
    assert listing.splitlines() == ["bad\\xff\\nname.txt", "good.txt"]
    hits = await tools["grep_files"].ainvoke({"pattern": "needle"})
    assert hits.splitlines() == ["bad\\xff\\nname.txt:1: needle", "good.txt:1: needle"]
    hits.encode("utf-8")  # no lone surrogate reaches the model or a checkpoint


# --- 2. a pattern that would backtrack for ever --------------------------------------


def workspace_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "fanfold-workspace" and t.is_alive()}


def threads_left(before: set[threading.Thread], timeout: float) -> set[threading.Thread]:
    """Wait up to `timeout` for the tool threads started since `before` to end."""
    deadline = time.monotonic() + timeout
    while (left := workspace_threads() - before) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


def cpu_while_idle(seconds: float) -> float:
    """Return the CPU time all of this process's threads use while this one sleeps."""
    start = time.process_time()
    time.sleep(seconds)
    return time.process_time() - start


async def grep_beside_a_sibling(
    root: Path, pattern: str, tool_timeout_s: float
) -> tuple[SubagentResult, SubagentResult]:
    """Fan out two subagents: one greps `root`, one only thinks for 0.4 s (timeout 1.5 s)."""
    model = TaskScriptedModel(
        scripts={
            "grep": TaskScript(call=("grep_files", {"pattern": pattern})),
            "sibling": TaskScript(latency=0.4),
        }
    )
    grep, sibling = await execute_tasks_parallel(
        [
            Task(id="grep", description="search", tools=["grep_files"]),
            Task(id="sibling", description="unrelated", timeout_s=1.5),
        ],
        model=model,
        settings=RunSettings(workspace=str(root), tool_timeout_s=tool_timeout_s),
    )
    return grep, sibling


@pytest.mark.alone  # durations with 0.2 s of slack
async def test_a_catastrophic_pattern_neither_stops_the_loop_nor_outlasts_the_timeout(
    tmp_path: Path,
) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    # 8000 lines Python's `re` needs ~4096 steps each for, then two it needs ~2**27 for.
    lines = ["a" * 12 + "!"] * 8000 + ["a" * 27 + "!"] * 2
    (root / "big.txt").write_text("\n".join(lines) + "\n")
    grep, sibling = await grep_beside_a_sibling(root, "(a+)+$", tool_timeout_s=1.0)
    assert grep.status == "ok" and grep.tool_errors == 0, grep
    assert "no matches" in grep.output
    assert grep.duration_s < 1.0 + 0.2 + 2 * 0.01  # the tool timeout + 0.2 s + 2 model turns
    assert sibling.status == "ok" and sibling.duration_s < 1.0, sibling
    print(f"\ngrep task {grep.duration_s:.3f}s, sibling {sibling.duration_s:.3f}s")


@pytest.mark.alone  # durations with 0.2 s of slack
async def test_a_search_longer_than_the_tool_timeout_ends_on_time_and_stops_working(
    tmp_path: Path,
) -> None:
    root = tmp_path / "ws"
    (root / "data").mkdir(parents=True)
    rng = random.Random(5)
    text = "\n".join("".join(rng.choice("ab") for _ in range(100)) for _ in range(2000))
    (root / "data" / "f0000.txt").write_text(text)
    for i in range(1, 1500):  # 300 MB to search, at no cost in disk or setup time
        os.link(root / "data" / "f0000.txt", root / "data" / f"f{i:04d}.txt")
    # No pattern is slow for RE2, but this one makes it work hard: ~40 ms a file.
    before = workspace_threads()
    grep, sibling = await grep_beside_a_sibling(root, "[ab]*a[ab]{25}c", tool_timeout_s=0.5)
    assert grep.status == "ok" and grep.tool_errors == 1, grep
    assert "`grep_files` timed out after 0.5s" in grep.output
    assert grep.duration_s < 0.5 + 0.2 + 2 * 0.01
    assert sibling.status == "ok" and sibling.duration_s < 1.0, sibling
    # The abandoned search notices and stops: no thread goes on reading 300 MB.
    assert not threads_left(before, timeout=5.0)
    cpu = cpu_while_idle(0.5)
    assert cpu < 0.25  # ~0.5 s if anything still searched
    print(f"\ntimed out: grep task {grep.duration_s:.3f}s, sibling {sibling.duration_s:.3f}s")
    print(f"CPU in 0.5 s after: {cpu:.3f}s")


async def test_a_pattern_re2_cannot_run_gets_an_error_naming_the_syntax(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "a.txt").write_text("foo bar\n")
    tools = tools_for(root)
    for pattern in ("foo(?= bar)", r"(o)\1", "(?<!x)foo", "a++"):
        with pytest.raises(ValueError, match="RE2 syntax") as info:
            await tools["grep_files"].ainvoke({"pattern": pattern})
        assert f"`{pattern}`" in str(info.value) and "lookaround" in str(info.value)
    # Anchors mean the start and end of each line, as before.
    assert await tools["grep_files"].ainvoke({"pattern": r"\Afoo"}) == "a.txt:1: foo bar"
    assert await tools["grep_files"].ainvoke({"pattern": r"bar\z"}) == "a.txt:1: foo bar"
    assert await tools["grep_files"].ainvoke({"pattern": "(?i)^FOO"}) == "a.txt:1: foo bar"


# --- 3. FIFOs and device nodes --------------------------------------------------------


def release_fifo(path: Path) -> None:
    """Open a FIFO for reading (and close it): frees a writer blocked in `open`."""
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))


async def test_a_fifo_is_refused_at_once_never_waited_on(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "a.txt").write_text("needle\n")
    os.mkfifo(root / "docs" / "pipe")
    tools = tools_for(root)
    try:
        async with asyncio.timeout(5):
            with pytest.raises(ValueError, match="`docs/pipe` is not a regular file"):
                await tools["write_file"].ainvoke({"path": "docs/pipe", "content": "x"})
            with pytest.raises(ValueError, match="`docs/pipe` is not a regular file"):
                await tools["read_file"].ainvoke({"path": "docs/pipe"})
            with pytest.raises(ValueError, match="not a regular file"):
                await tools["grep_files"].ainvoke({"pattern": "x", "path": "docs/pipe"})
            hits = await tools["grep_files"].ainvoke({"pattern": "needle"})
            assert hits == "docs/a.txt:1: needle"
            assert await tools["list_files"].ainvoke({}) == "docs/a.txt"
    finally:
        release_fifo(root / "docs" / "pipe")
    assert stat.S_ISFIFO((root / "docs" / "pipe").stat().st_mode)


async def test_a_device_node_is_neither_written_nor_read(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    try:
        os.mknod(root / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))  # as /dev/null
    except PermissionError:
        pytest.skip("mknod needs CAP_MKNOD")
    tools = tools_for(root)
    with pytest.raises(ValueError, match="`null` is not a regular file"):
        await tools["write_file"].ainvoke({"path": "null", "content": "x"})
    with pytest.raises(ValueError, match="`null` is not a regular file"):
        await tools["read_file"].ainvoke({"path": "null"})
    assert stat.S_ISCHR((root / "null").stat().st_mode)


# --- 4. reads that stream -------------------------------------------------------------


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


@contextlib.contextmanager
def peak_rss_growth() -> Iterator[Callable[[], int]]:
    """Measure how far the process's resident memory rose above its start, in bytes.

    The kernel's own peak (VmHWM), reset first through /proc/self/clear_refs; where
    that is refused, a thread sampling VmRSS every millisecond.
    """
    start = _status_kib("VmRSS")
    peak = [start]
    stop = threading.Event()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        sampler = None
    except OSError:

        def sample() -> None:
            while not stop.wait(0.001):
                peak[0] = max(peak[0], _status_kib("VmRSS"))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
    growth = [0]
    try:
        yield lambda: growth[0]
    finally:
        stop.set()
        if sampler is None:
            peak[0] = _status_kib("VmHWM")
        else:
            sampler.join()
        growth[0] = (peak[0] - start) * 1024


def make_sparse(path: Path) -> None:
    """Write 3 short lines, a 1 GiB hole (one line of NULs), then a last line."""
    with open(path, "wb") as f:
        f.write(b"one\ntwo\nthree\n")
        f.seek(1 << 30)
        f.write(b"\nend\n")


async def test_a_ranged_read_of_a_sparse_gib_file_streams(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    make_sparse(root / "sparse.bin")
    tools = tools_for(root)
    with peak_rss_growth() as growth:
        assert await tools["read_file"].ainvoke(
            {"path": "sparse.bin", "start_line": 2, "end_line": 3}
        ) == ("two\nthree")
        with pytest.raises(ValueError, match="line 4 alone has more than 262144 bytes"):
            await tools["read_file"].ainvoke({"path": "sparse.bin", "start_line": 3})
        with pytest.raises(ValueError, match="read a line range"):
            await tools["read_file"].ainvoke({"path": "sparse.bin"})
        # Line 5 is past the hole, which is skipped, not read: it holds no newline.
        assert await tools["read_file"].ainvoke({"path": "sparse.bin", "start_line": 5}) == "end"
        assert await tools["grep_files"].ainvoke({"pattern": "end"}) == (
            "no matches\n(1 file over 262144 bytes not searched: sparse.bin; "
            "read it by line ranges)"
        )
    assert growth() < 50 * 2**20, f"RSS grew {growth() / 2**20:.1f} MiB"
    print(f"\nRSS growth {growth() / 2**20:.1f} MiB")


async def test_a_huge_line_without_newlines_is_not_read_whole(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "one_line.txt").write_bytes(b"x" * (40 * 2**20))  # 40 MiB, no newline
    (root / "crlf.txt").write_bytes(b"a\r\nb\r\n")
    tools = tools_for(root)
    with peak_rss_growth() as growth:
        with pytest.raises(ValueError, match="line 1 alone has more than"):
            await tools["read_file"].ainvoke({"path": "one_line.txt", "end_line": 1})
        assert await tools["read_file"].ainvoke({"path": "one_line.txt", "start_line": 2}) == ""
    assert growth() < 20 * 2**20, f"RSS grew {growth() / 2**20:.1f} MiB"
    assert await tools["read_file"].ainvoke({"path": "crlf.txt"}) == "a\nb"
    assert await tools["read_file"].ainvoke({"path": "crlf.txt", "start_line": 2}) == "b"
    with pytest.raises(ValueError, match="bad line range 3..2"):
        await tools["read_file"].ainvoke({"path": "crlf.txt", "start_line": 3, "end_line": 2})
    exact = "y" * (MAX_READ_BYTES - 2)
    (root / "edge.txt").write_text(f"{exact}\nz")  # exactly the limit: fine
    assert await tools["read_file"].ainvoke({"path": "edge.txt"}) == f"{exact}\nz"


# --- 5. a glob confined like a path ---------------------------------------------------


@pytest.mark.parametrize("glob", ["../*", "../../../usr/**", "/usr/*", "docs/../../*"])
async def test_a_glob_that_leaves_the_folder_is_refused(tmp_path: Path, glob: str) -> None:
    root = tmp_path / "ws"
    (root / "docs").mkdir(parents=True)
    (tmp_path / "secret.txt").write_text("secret\n")
    tools = tools_for(root)
    with pytest.raises(PathEscapeError, match="relative to the folder searched, without `..`"):
        await tools["grep_files"].ainvoke({"pattern": "secret", "path": "docs", "glob": glob})
    with pytest.raises(PathEscapeError, match="relative to the folder listed, without `..`"):
        await tools["list_files"].ainvoke({"path": "docs", "pattern": glob})


async def test_a_glob_matches_names_and_paths_under_the_folder(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    (root / "docs" / "sub").mkdir(parents=True)
    for rel in ("docs/a.txt", "docs/sub/b.txt", "docs/sub/c.md", "top.txt"):
        (root / rel).write_text("hit\n")
    tools = tools_for(root)
    grep = tools["grep_files"]
    assert await grep.ainvoke({"pattern": "hit", "glob": "*.txt"}) == (
        "docs/a.txt:1: hit\ndocs/sub/b.txt:1: hit\ntop.txt:1: hit"
    )
    assert await grep.ainvoke({"pattern": "hit", "path": "docs", "glob": "sub/*"}) == (
        "docs/sub/b.txt:1: hit\ndocs/sub/c.md:1: hit"
    )
    assert await grep.ainvoke({"pattern": "hit", "glob": "docs/sub/*.md"}) == (
        "docs/sub/c.md:1: hit"
    )
    listing = await tools["list_files"].ainvoke({"path": "docs", "pattern": "sub/*.txt"})
    assert listing == "docs/sub/b.txt"
