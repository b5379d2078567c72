"""Workspace file tools, confined to one root folder (Linux; POSIX with `openat`).

A path a model passes is never opened by name from the top. It is walked one part at
a time from a descriptor of the root: each folder is opened relative to the one
before it with `O_NOFOLLOW`, and all I/O is done on the descriptors so opened. A
symlink is followed only by reading it and walking its target the same way, so one
that leads outside the root is refused even if it is swapped in while a call runs
(the check and the use are one step). `..` is refused in what a model passes; in a
symlink's target it goes back up the folders already open, never above the root.

Only regular files are read or written, and opening one never blocks: a FIFO or a
device node is refused, not waited on. A write goes to a new file that then replaces
the old one, so a hard link to a file outside the root is replaced, never written
through. Reads stream and stop at the byte limit. `grep_files` uses RE2, linear in
the text whatever the pattern, and gives up the GIL while it matches, so no pattern
can stop the event loop; the walk and the search run in a daemon thread that stops
at the next line once the caller stops waiting (the tool timeout, a stopped run).

A refused path, glob or pattern is an error the model sees and can correct.
"""

from __future__ import annotations

import asyncio
import errno
import fnmatch
import inspect
import os
import re
import secrets
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal, TypeVar

import re2  # type: ignore[import-untyped]  # google-re2 ships no type hints
from langchain_core.tools import BaseTool, StructuredTool

MAX_READ_BYTES = 256 * 1024
MAX_WRITE_BYTES = 1024 * 1024
MAX_LIST = 500
MAX_MATCHES = 200
MAX_DEPTH = 64
"""Folders deeper than this below the one listed or searched are left out (and said so)."""

_MAX_SYMLINKS = 40  # as the kernel's own path walk
_CHUNK = 64 * 1024
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # a FIFO: no wait
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_PER_LINE_ONLY = re.compile(r"\\[Az]|\(\?[a-zA-Z]*-")  # see _Pattern.whole
_RE2_SYNTAX = (
    "grep_files uses RE2 syntax: Python's `re` without lookaround (`(?=`, `(?!`, "
    "`(?<=`, `(?<!`), backreferences (`\\1`), possessive or atomic repeats, `\\Z` "
    "(use `$` or `\\z`), or repeat counts over 1000"
)

T = TypeVar("T")


class PathEscapeError(ValueError):
    """A path that would leave the workspace root."""


def _escape(path: str) -> PathEscapeError:
    return PathEscapeError(f"`{path}` leads outside the workspace root (through a symlink)")


def _lstat(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"


def _not_regular(path: str, mode: int) -> ValueError:
    msg = f"`{path}` is not a regular file ({_kind(mode)}); only regular files are read or written"
    return ValueError(msg)


def _shown(text: str) -> str:
    """Return a file name as the model may see it: valid UTF-8, on one line."""
    if text.isprintable():
        return text
    raw = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in raw)


@dataclass(frozen=True)
class _Root:
    """The workspace root: as given (absolute) and resolved."""

    given: PurePosixPath
    real: PurePosixPath

    def parts(self, path: str) -> list[str]:
        """Return `path`'s parts below the root, as written (no symlink looked at)."""
        raw = PurePosixPath(path or ".")
        if ".." in raw.parts:
            msg = f"`{path}`: `..` is not allowed; paths are relative to the workspace root"
            raise PathEscapeError(msg)
        if not raw.is_absolute():
            return list(raw.parts)
        below = self.below(raw)
        if below is None:
            raise PathEscapeError(f"`{path}` is outside the workspace root")
        return below

    def below(self, absolute: PurePosixPath) -> list[str] | None:
        """Return the parts of an absolute path below the root, or None if outside it."""
        for base in (self.real, self.given):
            if absolute == base or base in absolute.parents:
                return list(absolute.relative_to(base).parts)
        return None

    def walk(self, path: str, *, make_dirs: bool = False) -> _Place:
        """Walk `path` from the root's descriptor; return where its last part lives.

        Every symlink on the way is resolved, a last part that is one too. Nothing is
        ever opened through a symlink. The caller closes the place's descriptor.

        Raises:
            PathEscapeError: the path, or a symlink on it, leads outside the root.
            ValueError: a folder on the way is missing (unless `make_dirs`), or is
                not a folder, or there are too many symlinks.
        """
        pending = self.parts(path)
        fds = [os.open(self.real, _DIR)]
        names: list[str] = []
        hops = 0  # symlinks followed and retries: a loop, or a race, ends
        try:
            while pending:
                name = pending.pop(0)
                if name == "..":  # from a symlink's target: back up the open folders
                    if not names:
                        raise _escape(path)
                    os.close(fds.pop())
                    names.pop()
                    continue
                if not pending:  # the last part: anything, unless a symlink
                    info = _lstat(fds[-1], name)
                    if info is None or not stat.S_ISLNK(info.st_mode):
                        return _Place(fds.pop(), name, names, info)
                    step = "symlink"
                else:
                    step = self._enter(fds, names, name, path, make_dirs)
                if step == "entered":
                    continue
                hops += 1
                if hops > _MAX_SYMLINKS:
                    raise ValueError(f"`{path}`: too many symlinks, or it keeps changing")
                try:
                    link = os.readlink(name, dir_fd=fds[-1]) if step == "symlink" else None
                except (FileNotFoundError, OSError) as exc:
                    if exc.errno not in (errno.ENOENT, errno.EINVAL):
                        raise
                    link = None  # no longer a symlink
                if link is None:
                    pending.insert(0, name)  # look again
                    continue
                target = PurePosixPath(link)
                if target.is_absolute():
                    below = self.below(target)
                    if below is None:
                        raise _escape(path)
                    while len(fds) > 1:
                        os.close(fds.pop())
                    names.clear()
                    pending[:0] = below
                else:
                    pending[:0] = target.parts
            fd = fds.pop()
            return _Place(fd, "", names, os.fstat(fd))
        finally:
            for fd in fds:
                os.close(fd)

    @staticmethod
    def _enter(
        fds: list[int], names: list[str], name: str, path: str, make_dirs: bool
    ) -> Literal["entered", "symlink", "again"]:
        """Open folder `name` of the last open folder and push it, or say what it is.

        `again`: a folder made just now, or one that changed between two looks.
        """
        try:
            fd = os.open(name, _DIR, dir_fd=fds[-1])
        except FileNotFoundError:
            if not make_dirs:
                shown = _shown("/".join([*names, name]))
                raise ValueError(f"`{path}`: there is no folder `{shown}`") from None
            with suppress(FileExistsError):
                os.mkdir(name, dir_fd=fds[-1])
            return "again"
        except OSError as exc:
            if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                raise
        else:
            fds.append(fd)
            names.append(name)
            return "entered"
        info = _lstat(fds[-1], name)
        if info is not None and stat.S_ISLNK(info.st_mode):
            return "symlink"
        if info is None or stat.S_ISDIR(info.st_mode):
            return "again"
        shown = _shown("/".join([*names, name]))
        raise ValueError(f"`{path}`: `{shown}` is not a folder")

    @contextmanager
    def opened(self, path: str, want: Literal["file", "folder", "any"]) -> Iterator[_Opened]:
        """Open `path` (a regular file or a folder) inside the root for reading."""
        for _ in range(_MAX_SYMLINKS):
            place = self.walk(path)
            try:
                fd = place.open(path)
            finally:
                os.close(place.dir_fd)
            if fd is not None:
                break
        else:
            raise ValueError(f"`{path}` keeps changing; try again")
        try:
            info = os.fstat(fd)  # what was opened, whatever was there a moment ago
            folder = stat.S_ISDIR(info.st_mode)
            if not folder and not stat.S_ISREG(info.st_mode):
                raise _not_regular(path, info.st_mode)
            if want == "file" and folder:
                raise ValueError(f"`{path}` is not a file (it is a folder)")
            if want == "folder" and not folder:
                raise ValueError(f"`{path}` is not a folder")
            yield _Opened(fd, folder, info.st_size, place.rel)
        finally:
            os.close(fd)


@dataclass(frozen=True)
class _Place:
    """Where a walk ended: an open folder and the name of the last part in it."""

    dir_fd: int
    name: str  # "": the folder itself (the path was the root)
    names: list[str]  # the folder's parts below the root, symlinks resolved
    info: os.stat_result | None  # the last part as the walk saw it (None: missing)

    @property
    def rel(self) -> str:
        """The path below the root, symlinks resolved ("" for the root)."""
        return "/".join([*self.names, self.name])

    def open(self, path: str) -> int | None:
        """Open the folder or regular file for reading; None if it changed since the walk."""
        if not self.name:
            return os.dup(self.dir_fd)
        if self.info is None:
            raise ValueError(f"`{path}` does not exist")
        mode = self.info.st_mode
        if not stat.S_ISDIR(mode) and not stat.S_ISREG(mode):
            raise _not_regular(path, mode)  # never opened: opening a device may act
        try:
            return os.open(self.name, _DIR if stat.S_ISDIR(mode) else _FILE, dir_fd=self.dir_fd)
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP, errno.ENOENT):
                return None  # swapped since the walk: walk again, to follow it or refuse
            raise


@dataclass(frozen=True)
class _Opened:
    fd: int
    folder: bool
    size: int
    rel: str  # below the root, symlinks resolved; "" for the root


def confine(root: str | Path, path: str) -> Path:
    """Return where `path` leads inside `root`, symlinks resolved, or raise.

    A check only: the tools never reopen what it returns by name; they walk the path
    with descriptors the same way and do their I/O on those.

    Raises:
        PathEscapeError: `..` parts, an absolute path outside the root, or a
            symlink that leads outside the root.
        ValueError: a folder on the way is missing or is not a folder.
    """
    where = _root_of(Path(root))
    place = where.walk(path)
    os.close(place.dir_fd)
    return Path(where.real.joinpath(place.rel))


def _replace(place: _Place, path: str, data: bytes) -> None:
    """Write `data` to a new file in the place's folder, then rename it over the last part.

    Nothing is opened by the old name, and a hard link to a file outside the root is
    replaced, not written through.
    """
    info = place.info
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise ValueError(f"`{path}` is a folder")
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise _not_regular(path, info.st_mode)
    temp = f".{secrets.token_hex(8)}.fanfold-tmp"
    fd = os.open(temp, _NEW, 0o666, dir_fd=place.dir_fd)
    try:
        try:
            if info is not None:
                os.fchmod(fd, stat.S_IMODE(info.st_mode))
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.rename(temp, place.name, src_dir_fd=place.dir_fd, dst_dir_fd=place.dir_fd)
    except BaseException:
        with suppress(OSError):
            os.unlink(temp, dir_fd=place.dir_fd)
        raise


def _root_of(base: Path) -> _Root:
    return _Root(PurePosixPath(base.absolute()), PurePosixPath(base.resolve()))


def _check_glob(glob: str, what: str) -> None:
    parts = PurePosixPath(glob).parts
    if PurePosixPath(glob).is_absolute() or ".." in parts:
        msg = (
            f"glob `{glob}` must be relative to the folder {what}, without `..`: "
            "e.g. `*.py` or `src/*.py` (pass the folder as `path`)"
        )
        raise PathEscapeError(msg)


def _glob_matches(glob: str, name: str, below_folder: str, below_root: str) -> bool:
    # `*` crosses `/`: `*.py` and `src/*.py` match at any depth, as `rglob` did.
    return any(fnmatch.fnmatchcase(s, glob) for s in (name, below_folder, below_root))


@dataclass
class _Scan:
    """A walk below one open folder that never follows a symlink and can be stopped."""

    stop: threading.Event
    too_deep: int = 0

    def files(self, dir_fd: int, prefix: str = "", depth: int = 0) -> Iterator[_Entry]:
        """Yield every entry that is not a folder, depth first, by name."""
        with os.scandir(dir_fd) as it:
            entries = sorted((e.name, e.is_dir(follow_symlinks=False), _entry_kind(e)) for e in it)
        for name, is_dir, kind in entries:
            if self.stop.is_set():
                return
            if not is_dir:
                yield _Entry(dir_fd, name, prefix + name, kind)
                continue
            if depth >= MAX_DEPTH:
                self.too_deep += 1
                continue
            try:
                sub = os.open(name, _DIR, dir_fd=dir_fd)
            except OSError:
                continue  # gone, or swapped for a symlink, since it was listed
            try:
                yield from self.files(sub, f"{prefix}{name}/", depth + 1)
            finally:
                os.close(sub)

    def note(self) -> list[str]:
        """Say what the walk left out."""
        if not self.too_deep:
            return []
        return [f"({self.too_deep} folders more than {MAX_DEPTH} levels down not looked in)"]


@dataclass(frozen=True)
class _Entry:
    dir_fd: int
    name: str
    below: str  # below the folder walked
    kind: Literal["file", "symlink", "special"]  # as listed: a FIFO, a device... is special


def _entry_kind(entry: os.DirEntry[str]) -> Literal["file", "symlink", "special"]:
    if entry.is_symlink():
        return "symlink"
    return "file" if entry.is_file(follow_symlinks=False) else "special"


def _lines(fd: int, stop: threading.Event, first: int = 1) -> Iterator[bytes]:
    r"""Yield a file's lines from line `first` on, streaming; "\n" or "\r\n" ends one.

    A line longer than `MAX_READ_BYTES` ends them: its first `MAX_READ_BYTES + 1`
    bytes are yielded (the caller can tell) and nothing more is read.
    """
    skip = first - 1
    part = bytearray()
    while not stop.is_set() and (chunk := os.read(fd, _CHUNK)):
        at = 0
        if skip:  # count lines, keep nothing
            count = chunk.count(b"\n")
            if count < skip:
                skip -= count
                _past_hole(fd)
                continue
            for _ in range(skip):
                at = chunk.index(b"\n", at) + 1
            skip = 0
        while (end := chunk.find(b"\n", at)) >= 0:
            part += chunk[at:end]
            line = bytes(part.removesuffix(b"\r"))
            yield line[: MAX_READ_BYTES + 1]
            if len(line) > MAX_READ_BYTES:
                return
            part.clear()
            at = end + 1
        part += chunk[at:]
        if len(part) > MAX_READ_BYTES + 1:  # + 1: a "\r" may come before the "\n"
            yield bytes(part[: MAX_READ_BYTES + 1])
            return
    if part and not stop.is_set():
        yield bytes(part.removesuffix(b"\r"))


def _past_hole(fd: int) -> None:
    """Seek past a hole at the read position: a sparse file's hole has no newline."""
    try:
        os.lseek(fd, os.lseek(fd, 0, os.SEEK_CUR), os.SEEK_DATA)
    except OSError as exc:
        if exc.errno != errno.ENXIO:  # ENXIO: only a hole is left
            raise
        os.lseek(fd, 0, os.SEEK_END)


def _read_up_to(fd: int, limit: int) -> bytes:
    """Read a file from its start until EOF or past `limit` bytes."""
    data = bytearray()
    while len(data) <= limit and (chunk := os.read(fd, _CHUNK)):
        data += chunk
    return bytes(data)


def _re2_options() -> Any:
    options = re2.Options()
    options.log_errors = False  # a bad pattern is the model's error, not a log line
    return options


@dataclass(frozen=True)
class _Pattern:
    """A model's pattern, compiled by RE2: matched line by line."""

    line: Any
    whole: Any
    """The same pattern over a whole file, lines joined, to skip files at once: a
    line that matches is a match in the whole text too, except through the text's own
    anchors (`\\A`, `\\z`) or a flag turned off, so such patterns go line by line."""

    @classmethod
    def of(cls, pattern: str) -> _Pattern:
        """Compile `pattern`, or raise a `ValueError` telling the model what to use."""
        options = _re2_options()
        try:
            line = re2.compile(pattern, options)
        except re2.error as exc:
            detail = exc.args[0] if exc.args else exc
            detail = detail.decode(errors="replace") if isinstance(detail, bytes) else detail
            msg = f"bad regular expression `{pattern}`: {detail}. {_RE2_SYNTAX}."
            raise ValueError(msg) from None
        whole = None if _PER_LINE_ONLY.search(pattern) else re2.compile("(?m)" + pattern, options)
        return cls(line, whole)

    def hits(self, data: bytes, stop: threading.Event) -> Iterator[tuple[int, str]]:
        """Yield each matching line of a file's bytes, numbered from 1, as `_lines` splits."""
        lines = data.decode("utf-8", "replace").split("\n")
        if lines[-1] == "":
            lines.pop()  # the file ends with a newline: no line after it
        lines = [line.removesuffix("\r") for line in lines]
        if self.whole is not None and self.whole.search("\n".join(lines)) is None:
            return
        for no, line in enumerate(lines, start=1):
            if stop.is_set():
                return
            if self.line.search(line) is not None:
                yield no, line


async def _in_thread(path: str, fn: Callable[[threading.Event], T]) -> T:
    """Run `fn(stop)` in a daemon thread; `stop` is set once nobody waits for it.

    A thread of its own, not the loop's executor, whose threads the loop's close and
    Python's exit wait for; `fn` checks `stop` between lines and files, so a timed-out
    or stopped call ends at once instead of going on working for nobody.

    Raises:
        ValueError: an `OSError` of `fn`, said in terms of `path`.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()
    stop = threading.Event()

    def work() -> None:
        try:
            outcome: tuple[Any, BaseException | None] = (fn(stop), None)
        except BaseException as exc:  # noqa: BLE001 - raised in the awaiting task
            outcome = (None, exc)
        with suppress(RuntimeError):  # the loop is closed: nobody waits
            loop.call_soon_threadsafe(_settle, done, *outcome)

    threading.Thread(target=work, name="fanfold-workspace", daemon=True).start()
    try:
        return await done
    except OSError as exc:
        raise ValueError(f"`{path}`: {exc.strerror or exc}") from None
    finally:
        stop.set()


def _settle(done: asyncio.Future[T], value: T, error: BaseException | None) -> None:
    if done.done():
        return  # cancelled: the caller stopped waiting
    if error is None:
        done.set_result(value)
    else:
        done.set_exception(error)


def _joined(rel: str, below: str) -> str:
    return f"{rel}/{below}" if rel else below


def make_workspace_tools(root: str | Path) -> list[BaseTool]:
    """Return `list_files`, `read_file`, `grep_files` and `write_file` confined to `root`.

    Raises:
        ValueError: `root` is not an existing folder, or this system cannot open
            files relative to a folder's descriptor (Windows).
    """
    base = Path(root)
    if not base.is_dir():
        msg = f"workspace root `{root}` is not an existing folder"
        raise ValueError(msg)
    if os.open not in os.supports_dir_fd or os.scandir not in os.supports_fd:
        msg = "workspace file tools need `openat` (Linux or another POSIX system)"
        raise ValueError(msg)
    where = _root_of(base)

    async def list_files(path: str = ".", pattern: str = "*") -> str:
        """List files under a folder of the workspace (recursively), matching a glob pattern.

        The pattern is matched against each file's name and its path below the folder
        or the workspace root; `*` also matches `/`.
        """
        _check_glob(pattern, "listed")

        def listing(stop: threading.Event) -> str:
            scan = _Scan(stop)
            out: list[str] = []
            with where.opened(path, "folder") as folder:
                for e in scan.files(folder.fd):
                    full = _joined(folder.rel, e.below)
                    if e.kind == "special":
                        continue  # a FIFO, a device, a socket: no file to read or write
                    if _glob_matches(pattern, e.name, e.below, full):
                        out.append(_shown(full))
                        if len(out) >= MAX_LIST:
                            out.append(f"(first {MAX_LIST} files only)")
                            break
            return "\n".join((out or ["no files"]) + scan.note())

        return await _in_thread(path, listing)

    async def read_file(path: str, start_line: int = 1, end_line: int | None = None) -> str:
        """Read a text file of the workspace, optionally only lines start_line..end_line."""
        if start_line < 1 or (end_line is not None and end_line < start_line):
            raise ValueError(f"bad line range {start_line}..{end_line}")

        def read(stop: threading.Event) -> str:
            with where.opened(path, "file") as file:
                if file.size > MAX_READ_BYTES and start_line == 1 and end_line is None:
                    msg = f"`{path}` has {file.size} bytes (limit {MAX_READ_BYTES})"
                    raise ValueError(f"{msg}; read a line range")
                out: list[bytes] = []
                size = -1  # no newline before the first line
                for no, line in enumerate(_lines(file.fd, stop, start_line), start=start_line):
                    if len(line) > MAX_READ_BYTES:
                        msg = f"line {no} alone has more than {MAX_READ_BYTES} bytes"
                        raise ValueError(msg)
                    size += len(line) + 1
                    if size > MAX_READ_BYTES:
                        msg = f"that range has more than {MAX_READ_BYTES} bytes; read fewer lines"
                        raise ValueError(msg)
                    out.append(line)
                    if no == end_line:
                        break
            return b"\n".join(out).decode("utf-8", "replace")

        return await _in_thread(path, read)

    async def grep_files(pattern: str, path: str = ".", glob: str = "*") -> str:
        r"""Search the workspace's text files for a regular expression; `file:line: text` lines.

        The pattern uses RE2 syntax (Python's `re` without lookaround or
        backreferences; `\w`, `\b`, `\d` are ASCII only) and is matched against each
        line. `glob` picks files by name or by path below `path`; `*` also matches `/`.
        """
        _check_glob(glob, "searched")
        regex = _Pattern.of(pattern)

        def search(stop: threading.Event) -> str:
            hits: list[str] = []
            too_big: list[str] = []

            def search_file(fd: int, rel: str) -> None:
                data = _read_up_to(fd, MAX_READ_BYTES)
                if len(data) > MAX_READ_BYTES:
                    too_big.append(_shown(rel))
                    return
                for no, line in regex.hits(data, stop):
                    hits.append(f"{_shown(rel)}:{no}: {line[:200]}")
                    if len(hits) >= MAX_MATCHES:
                        return

            scan = _Scan(stop)
            with where.opened(path, "any") as top:
                if not top.folder:
                    search_file(top.fd, top.rel)
                for e in scan.files(top.fd) if top.folder else ():
                    full = _joined(top.rel, e.below)
                    if e.kind != "file" or not _glob_matches(glob, e.name, e.below, full):
                        continue  # not through a symlink: what it leads to, where it is
                    try:
                        fd = os.open(e.name, _FILE, dir_fd=e.dir_fd)
                    except OSError:
                        continue  # gone, or swapped for a symlink, since it was listed
                    try:
                        if stat.S_ISREG(os.fstat(fd).st_mode):
                            search_file(fd, full)
                    finally:
                        os.close(fd)
                    if len(hits) >= MAX_MATCHES:
                        break
            notes = scan.note()
            if len(hits) >= MAX_MATCHES:
                notes.append(f"(first {MAX_MATCHES} matches only)")
            if too_big:
                n, them = len(too_big), "it" if len(too_big) == 1 else "them"
                names = ", ".join(too_big[:5]) + (", ..." if n > 5 else "")
                notes.append(
                    f"({n} file{'s' * (n > 1)} over {MAX_READ_BYTES} bytes not searched: "
                    f"{names}; read {them} by line ranges)"
                )
            return "\n".join((hits or ["no matches"]) + notes)

        return await _in_thread(path, search)

    async def write_file(path: str, content: str) -> str:
        """Write a text file in the workspace (creating folders); replaces an existing file."""
        data = content.encode()
        if len(data) > MAX_WRITE_BYTES:
            raise ValueError(f"content has {len(data)} bytes (limit {MAX_WRITE_BYTES})")

        def write(stop: threading.Event) -> str:
            place = where.walk(path, make_dirs=True)
            try:
                _replace(place, path, data)
            finally:
                os.close(place.dir_fd)
            return _shown(place.rel)

        rel = await _in_thread(path, write)
        return f"wrote {len(data)} bytes to {rel}"

    return [
        StructuredTool.from_function(
            coroutine=fn, name=fn.__name__, description=inspect.getdoc(fn) or fn.__name__
        )
        for fn in (list_files, read_file, grep_files, write_file)
    ]
