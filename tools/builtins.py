"""Built-in tools, safe by default: no shell, no `eval`, no network."""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from langchain_core.tools import BaseTool, tool

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
_FUNCS: dict[str, Callable[..., float]] = {
    "sqrt": math.sqrt,
    "log": math.log,
    "exp": math.exp,
    "abs": abs,
    "round": lambda x, ndigits=0: _round(x, ndigits),
    "min": min,
    "max": max,
}
_NAMES = {"pi": math.pi, "e": math.e}
_MAX_EXPONENT = 1000
_MAX_DIGITS = 1000
_MAX_EXPRESSION = 500


def _round(x: float, ndigits: float = 0) -> float:
    # round(5, -10**9) builds 10 ** 10**9 inside Python: bound the digits first.
    if not float(ndigits).is_integer() or abs(ndigits) > _MAX_DIGITS:
        msg = f"round() takes a whole number of digits up to {_MAX_DIGITS}, got {ndigits}"
        raise ValueError(msg)
    return round(x, int(ndigits))


def _check_power(base: float, exponent: float) -> None:
    if abs(exponent) > _MAX_EXPONENT:
        msg = f"exponent {exponent} is too large (limit {_MAX_EXPONENT})"
        raise ValueError(msg)
    # Bound the result's size before computing it: (2 ** 1000) ** 1000 passes the
    # exponent check but has 300,000 digits.
    if abs(base) > 1 and exponent > 0 and exponent * math.log10(abs(base)) > _MAX_DIGITS:
        msg = f"result of {base:.6g} ** {exponent:g} would exceed 10 ** {_MAX_DIGITS}"
        raise ValueError(msg)


def _bounded(value: float) -> float:
    if isinstance(value, complex):
        raise ValueError("the result is a complex number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("result is not a finite number")
    if isinstance(value, int) and value.bit_length() > _MAX_DIGITS * 3.33:
        msg = f"result exceeds 10 ** {_MAX_DIGITS}"
        raise ValueError(msg)
    return value


def _eval(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    ):
        return _bounded(node.value)  # `9.9e999` is a literal inf
    if isinstance(node, ast.Name) and node.id in _NAMES:
        return _NAMES[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        result: float = _BINARY[type(node.op)](left, right)
        return _bounded(result)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        value: float = _UNARY[type(node.op)](_eval(node.operand))
        return _bounded(value)
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCS
        and not node.keywords
    ):
        args = [_eval(a) for a in node.args]
        try:
            return _bounded(_FUNCS[node.func.id](*args))
        except TypeError as exc:
            msg = f"`{node.func.id}` does not take {len(args)} argument(s)"
            raise ValueError(msg) from exc
    msg = f"unsupported expression element `{ast.dump(node)[:60]}`"
    raise ValueError(msg)


def evaluate(expression: str) -> float:
    """Evaluate an arithmetic expression without `eval`.

    Raises:
        ValueError: the expression is empty, too long, not arithmetic, or divides by zero.
    """
    text = expression.strip().replace("^", "**").replace("×", "*")
    if not text:
        raise ValueError("empty expression")
    if len(text) > _MAX_EXPRESSION:
        msg = f"expression longer than {_MAX_EXPRESSION} characters"
        raise ValueError(msg)
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        msg = f"not an arithmetic expression: `{expression}`"
        raise ValueError(msg) from exc
    try:
        return _eval(tree)
    except ZeroDivisionError as exc:
        raise ValueError("division by zero") from exc
    except (OverflowError, ArithmeticError) as exc:
        msg = f"cannot compute `{expression}`: {exc}"
        raise ValueError(msg) from exc


@tool
async def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as `40 * 0.25 / 8` or `sqrt(2) ** 2`."""
    value = evaluate(expression)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}" if isinstance(value, float) else str(value)


@tool
async def current_time() -> str:
    """Return the current date and time in UTC, ISO 8601."""
    return datetime.now(UTC).isoformat(timespec="seconds")


_WORD = re.compile(r"\w+", re.UNICODE)


@tool
async def text_stats(text: str) -> str:
    """Count the words, characters and sentences of a text and list its most frequent words."""
    words = [w.lower() for w in _WORD.findall(text)]
    sentences = [s for s in re.split(r"[.!?]+", text) if s.strip()]
    counts: dict[str, int] = {}
    for w in words:
        if len(w) > 3:
            counts[w] = counts.get(w, 0) + 1
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    top_text = ", ".join(f"{w} ({n})" for w, n in top) or "none"
    return (
        f"words={len(words)} characters={len(text)} sentences={len(sentences)} "
        f"top words: {top_text}"
    )


BUILTIN_TOOLS: list[BaseTool] = [calculator, current_time, text_stats]
