"""The entry points: a `ScriptedOpenAI` for a `with` block, or for an async test."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

from tests.openai_server.server import ScriptedOpenAI


@contextlib.contextmanager
def running(**kwargs: Any) -> Iterator[ScriptedOpenAI]:
    """Run a `ScriptedOpenAI` for the duration of a `with` block."""
    server = ScriptedOpenAI(**kwargs).start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def serving(**kwargs: Any) -> AsyncIterator[ScriptedOpenAI]:
    """Run a `ScriptedOpenAI` for an async test, closing its model clients first.

    The clients are closed while the test's event loop still runs, so no pooled
    connection outlives it.
    """
    from fanfold.nodes.models import aclose_models

    with running(**kwargs) as server:
        try:
            yield server
        finally:
            await aclose_models()
