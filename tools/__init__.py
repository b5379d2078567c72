"""Tools for Fanfold subagents: a registry and safe built-ins.

This package knows nothing of nodes or graphs.
"""

from fanfold.tools.builtins import BUILTIN_TOOLS, calculator, current_time, text_stats
from fanfold.tools.mcp import McpToolset, McpUnavailable
from fanfold.tools.registry import ToolRegistry, UnknownToolError, default_registry

__all__ = [
    "BUILTIN_TOOLS",
    "McpToolset",
    "McpUnavailable",
    "ToolRegistry",
    "UnknownToolError",
    "calculator",
    "current_time",
    "default_registry",
    "text_stats",
]
