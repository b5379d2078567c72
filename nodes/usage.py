"""Reading token usage off model messages."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage

from fanfold.nodes.domain import Usage


def usage_of(message: Any) -> Usage:
    """Return a message's token usage; zero when it reports none."""
    meta = message.usage_metadata if isinstance(message, AIMessage) else None
    if not meta:
        return Usage()
    return Usage(
        input_tokens=meta.get("input_tokens", 0),
        output_tokens=meta.get("output_tokens", 0),
        total_tokens=meta.get("total_tokens", 0),
    )
