"""Shared fixtures: no test reaches past loopback, and no real model is ever called."""

from __future__ import annotations

import fcntl
import ipaddress
import os
import socket
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from fanfold.nodes.models import clear_model_cache
from tests.postgres import checkpoint_location, postgres_url  # noqa: F401  (fixtures for all)


def _is_loopback(address: Any) -> bool:
    if isinstance(address, tuple) and address:
        host = address[0]
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return host == "localhost"
    return True  # unix sockets and the like


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail any connection past loopback: a real model call would be a bug in a test."""
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def guard(address: Any) -> None:
        if not _is_loopback(address):
            msg = f"test tried to reach {address!r}: only loopback is allowed"
            raise RuntimeError(msg)

    def connect(self: socket.socket, address: Any) -> None:
        guard(address)
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        guard(address)
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    yield
    clear_model_cache()


# --- pytest-xdist: a test marked `alone` runs while no other test does ---------------------
#
# Every test of a worker holds a shared lock on a file of the run's own for as long as it
# runs (its setup, call and teardown, module fixtures included); an `alone` test holds it
# exclusively. A second lock, the gate, is held by an `alone` test from the moment it
# waits: a test that comes after waits at the gate, so the `alone` one is not starved.
# Consecutive `alone` tests of one worker keep the lock between them. Outside xdist
# (`-n 0`, `-p no:xdist`) nothing is locked. Held outside pytest-timeout's clock (tryfirst):
# a test's timeout counts its own time, not the wait.

_room_held: int | None = None  # the lock this worker holds now: LOCK_SH, LOCK_EX or None


def _locks(config: pytest.Config) -> tuple[int, int]:
    fds = getattr(config, "_fanfold_alone_locks", None)
    if fds is None:
        # xdist gives each worker the basetemp <run's basetemp>/<worker>: one run, one folder.
        run_dir = Path(config.option.basetemp).parent
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
        fds = (os.open(run_dir / "alone.gate", flags), os.open(run_dir / "alone.room", flags))
        config._fanfold_alone_locks = fds  # type: ignore[attr-defined]
    return fds


def _alone(item: pytest.Item | None) -> bool:
    return item is not None and item.get_closest_marker("alone") is not None


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    global _room_held
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return (yield)
    gate, room = _locks(item.config)
    alone = _alone(item)
    if alone and _room_held != fcntl.LOCK_EX:
        fcntl.flock(gate, fcntl.LOCK_EX)  # no test starts after this one waits
        fcntl.flock(room, fcntl.LOCK_EX)  # the tests running now end
        _room_held = fcntl.LOCK_EX
    elif not alone:
        fcntl.flock(gate, fcntl.LOCK_EX)
        fcntl.flock(room, fcntl.LOCK_SH)
        fcntl.flock(gate, fcntl.LOCK_UN)
        _room_held = fcntl.LOCK_SH
    try:
        return (yield)
    finally:
        if not (alone and _alone(nextitem)):
            fcntl.flock(room, fcntl.LOCK_UN)
            if alone:
                fcntl.flock(gate, fcntl.LOCK_UN)
            _room_held = None
