"""The one model seam: every node gets its chat model through `load_chat_model`."""

from __future__ import annotations

import asyncio
import math
import os
import threading
import weakref
from typing import Any

from langchain_core.language_models import BaseChatModel

from fanfold.nodes.demo_model import DemoChatModel

OPENAI_TIMEOUT_S = 60.0
OPENAI_MAX_CONNECTIONS = 1000
"""Connections per model client, all of which may stay alive between calls: a run
never has more calls in flight than its `max_concurrency`."""
OPENAI_MAX_RETRIES = 0
"""The client never retries: `nodes.calls.call_model` is the one retry layer."""


def load_chat_model(spec: str | BaseChatModel) -> BaseChatModel:
    """Turn a model spec into a chat model; a chat model passes through unchanged.

    Specs:
        `demo` or `demo:latency=0.5`: the offline demo model (each call takes
        `latency` seconds); `log=FILE` appends a line per call; `fail=t2+t5` makes
        those tasks' calls fail (to see a failure, a policy or `fanfold rerun` at work);
        `hang=t3` makes that task's calls never answer (to see a timeout);
        `cpu=0.05` makes each call burn that many seconds of CPU in the calling
        thread (CPU-heavy subagents, to see worker processes scale).
        `openai:<model>`: ChatOpenAI; `OPENAI_API_KEY` and `OPENAI_BASE_URL` are
        honoured, so any OpenAI-compatible server works.
        `openai:<model>@<base_url>`: the same against that base URL.

    One instance per spec and event loop, so every subagent of a run shares one
    HTTP client (and its connection pool), and no connection outlives the loop
    it was opened on (a second `asyncio.run` in one process gets fresh clients).

    Raises:
        ValueError: the spec names no known provider or has bad options.
    """
    if isinstance(spec, BaseChatModel):
        return spec
    if not isinstance(spec, str):
        msg = f"model must be a spec string or a chat model, got `{type(spec).__name__}`"
        raise TypeError(msg)
    key = (spec.strip(), os.environ.get("OPENAI_BASE_URL"), os.environ.get("OPENAI_API_KEY"))
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    with _LOCK:
        cache = _SYNC_MODELS if loop is None else _LOOP_MODELS.setdefault(loop, {})
        model = cache.get(key)
        if model is None:
            model = cache[key] = _build(*key)
    return model


async def aclose_models() -> None:
    """Close the HTTP clients of the models cached for the running event loop.

    Call it before a loop you started ends (`graphs.run` and the CLI do), so no
    pooled connection is left to be collected after its loop closed.
    """
    loop = asyncio.get_running_loop()
    with _LOCK:
        models = list(_LOOP_MODELS.pop(loop, {}).values())
    for model in models:
        client = getattr(model, "http_async_client", None)
        if client is not None and hasattr(client, "aclose"):
            await client.aclose()


def clear_model_cache() -> None:
    """Forget every cached model (tests; a changed environment)."""
    with _LOCK:
        _SYNC_MODELS.clear()
        _LOOP_MODELS.clear()


_LOCK = threading.Lock()
_SYNC_MODELS: dict[tuple[str, str | None, str | None], BaseChatModel] = {}
_LOOP_MODELS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str, str | None, str | None], BaseChatModel]
] = weakref.WeakKeyDictionary()


SPEC_FORMS = (
    "demo, demo:latency=S (options: latency, cpu, log, fail, hang), openai:<model> or "
    "openai:<model>@<base_url>"
)


def check_model_spec(spec: str) -> str:
    """Return the spec when it names a known provider with valid options.

    Raises:
        ValueError: saying what a spec looks like and what is wrong with this one.
    """
    try:
        _parse(spec)
    except ValueError as exc:
        msg = f"a model spec ({SPEC_FORMS}); {exc}"
        raise ValueError(msg) from None
    return spec


def _parse(spec: str) -> tuple[str, dict[str, Any]]:
    """Return a spec's provider and its options.

    Raises:
        ValueError: what is wrong with the spec, in a few words.
    """
    provider, _, rest = spec.strip().partition(":")
    if provider == "demo":
        return provider, _demo_options(rest)
    if provider == "openai":
        model, _, base_url = rest.partition("@")
        if not model:
            raise ValueError("`openai:` names no model")
        return provider, {"model": model, "base_url": base_url or None}
    msg = f"unknown provider `{provider}`" if provider else "empty spec"
    raise ValueError(msg)


def _build(spec: str, env_base_url: str | None, env_api_key: str | None) -> BaseChatModel:
    try:
        provider, options = _parse(spec)
    except ValueError as exc:
        msg = f"model spec `{spec}`: {exc}; use {SPEC_FORMS}"
        raise ValueError(msg) from None
    if provider == "demo":
        return DemoChatModel(**options)
    from langchain_openai import ChatOpenAI
    from pydantic import SecretStr

    base = options["base_url"] or env_base_url
    key = env_api_key or ("not-needed" if base else None)
    if key is None:
        msg = (
            f"model spec `{spec}` needs OPENAI_API_KEY (or OPENAI_BASE_URL for a "
            "local OpenAI-compatible server)"
        )
        raise ValueError(msg)
    import openai

    # Our own client, not langchain-openai's process-wide one per base URL, and
    # the openai SDK's own HTTP stack: with a plain `httpx.AsyncClient` (20 kept-
    # alive connections, fewer than max_concurrency) httpcore closed idle
    # connections whenever more than 20 were open (encode/httpcore#1035): 851 TCP
    # connections for 1000 calls at mc=50 and 200 ms, and 2 ms more CPU per call.
    limits = type(openai.DEFAULT_CONNECTION_LIMITS)(
        max_connections=OPENAI_MAX_CONNECTIONS, max_keepalive_connections=OPENAI_MAX_CONNECTIONS
    )
    client = openai.DefaultAsyncHttpxClient(timeout=OPENAI_TIMEOUT_S, limits=limits)
    return ChatOpenAI(
        model=options["model"],
        http_async_client=client,
        base_url=base,
        api_key=SecretStr(key),
        stream_usage=True,
        timeout=OPENAI_TIMEOUT_S,
        max_retries=OPENAI_MAX_RETRIES,
    )


def _demo_options(rest: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for part in filter(None, rest.split(",")):
        key, _, value = part.partition("=")
        if key == "log":
            if not value:
                raise ValueError("demo option `log` needs a file path")
            options["log"] = value
            continue
        if key in ("fail", "hang"):
            ids = [t for t in value.split("+") if t]
            if not ids:
                msg = f"demo option `{key}` needs task ids, joined by `+`: {key}=t2+t5"
                raise ValueError(msg)
            options[key] = ids
            continue
        if key not in ("latency", "cpu"):
            msg = f"unknown demo option `{key}` (known: latency, cpu, log, fail, hang)"
            raise ValueError(msg)
        try:
            seconds = float(value)
        except ValueError:
            msg = f"demo {key} `{value}` is not a number of seconds"
            raise ValueError(msg) from None
        if not math.isfinite(seconds) or seconds < 0:
            msg = f"demo {key} `{value}` is not a finite number >= 0"
            raise ValueError(msg)
        options[key] = seconds
    return options
