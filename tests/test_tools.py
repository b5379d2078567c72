"""Built-in tools and the tool registry."""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from langchain_core.tools import BaseTool, StructuredTool, tool

from fanfold.tools import (
    BUILTIN_TOOLS,
    ToolRegistry,
    UnknownToolError,
    calculator,
    current_time,
    default_registry,
    text_stats,
)
from fanfold.tools.builtins import evaluate

# --- calculator ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1 + 2", 3),
        ("7 - 10", -3),
        ("6 * 7", 42),
        ("7 / 2", 3.5),
        ("7 // 2", 3),
        ("7 % 3", 1),
        ("2 ** 10", 1024),
        ("2 ^ 10", 1024),  # a caret means power, as people write it
        ("3 × 4", 12),
        ("-5 + +2", -3),
        ("  40 * 0.25 / 8 ", 1.25),
    ],
)
def test_evaluate_arithmetic(expression: str, expected: float) -> None:
    assert evaluate(expression) == expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("2 + 3 * 4", 14),
        ("(2 + 3) * 4", 20),
        ("2 * 3 ** 2", 18),
        ("-2 ** 2", -4),
        ("2 ** 3 ** 2", 512),  # right-associative
        ("10 - 4 - 3", 3),  # left-associative
        ("100 / 10 / 5", 2),
    ],
)
def test_evaluate_precedence(expression: str, expected: float) -> None:
    assert evaluate(expression) == expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("sqrt(16)", 4.0),
        ("abs(-3)", 3),
        ("round(2.567, 2)", 2.57),
        ("min(3, 1, 2)", 1),
        ("max(3, 1, 2)", 3),
        ("log(e)", 1.0),
        ("exp(0)", 1.0),
        ("2 * pi", 2 * math.pi),
    ],
)
def test_evaluate_functions_and_constants(expression: str, expected: float) -> None:
    assert evaluate(expression) == pytest.approx(expected)


def test_refused_expression_never_runs(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    for expression in (
        f"open({str(target)!r}, 'w')",
        f"__import__('pathlib').Path({str(target)!r}).touch()",
        f"(lambda: open({str(target)!r}, 'w'))()",
    ):
        with pytest.raises(ValueError, match="unsupported expression"):
            evaluate(expression)
    assert not target.exists()


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("x + 1", "unsupported expression"),
        ("os", "unsupported expression"),
        ("(1).real", "unsupported expression"),
        ("pi.real", "unsupported expression"),
        ("__import__('os')", "unsupported expression"),
        ("lambda: 1", "unsupported expression"),
        ("(lambda: 1)()", "unsupported expression"),
        ("abs(x=1)", "unsupported expression"),
        ("'text'", "unsupported expression"),
        ("[1, 2]", "unsupported expression"),
        ("1j", "unsupported expression"),
        ("2 x 3", "not an arithmetic expression"),
        ("import os", "not an arithmetic expression"),
        ("2 ** 1001", "too large"),
        ("2 ** -5000", "too large"),
        ("10 ** 10 ** 10", "too large"),
        ("1 / 0", "division by zero"),
        ("1 // 0", "division by zero"),
        ("5 % 0", "division by zero"),
        ("0 ** -1", "division by zero"),
        ("", "empty"),
        ("   ", "empty"),
        ("1+" * 300 + "1", "longer than"),
    ],
)
def test_evaluate_refuses(expression: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate(expression)


def test_power_limit_bounds_the_result_not_just_each_exponent() -> None:
    # Checking each `**`'s own exponent is not enough: nested powers would build
    # 2 ** 1_000_000 here (and `((2**1000)**1000)**1000` a ~125 MB int).
    for expression in ("(2 ** 1000) ** 1000", "9 ** 999 * 9 ** 999 * 9 ** 999"):
        with pytest.raises(ValueError):
            evaluate(expression)


def test_round_digits_are_bounded() -> None:
    # `round(5, -n)` computes 10 ** n inside Python: n = 10**7 takes seconds and
    # n = 10**9 hours, without any `**` large enough to trip the power limit.
    with pytest.raises(ValueError):
        evaluate("round(5, -100000)")
    assert evaluate("round(1234.5678, -2)") == 1200


@pytest.mark.parametrize(
    "expression",
    ["10.0 ** 400", "exp(1000)", "1e308 * 10", "max()", "sqrt(1, 2)", "(-8) ** 0.5"],
)
def test_evaluate_raises_only_value_error(expression: str) -> None:
    # Overflow, a wrong argument count or a complex result: still a ValueError, as documented.
    with pytest.raises(ValueError):
        evaluate(expression)


@pytest.mark.parametrize(
    "expression",
    [
        "9.9e999",  # a float literal too large for a float: inf
        "-9.9e999",
        "1e308 * 10",
        "9.9e999 - 9.9e999",  # inf - inf: nan
        "9.9e999 * 0",
        "min(9.9e999, 1)",  # an infinite argument, whatever the function makes of it
        "max(-9.9e999, 1)",
        "1 / 9.9e999",
    ],
)
async def test_calculator_refuses_infinite_numbers(expression: str) -> None:
    # Non-finite results are refused as huge ones are; an inf literal is a result too.
    with pytest.raises(ValueError, match="not a finite number"):
        await calculator.ainvoke({"expression": expression})


@pytest.mark.parametrize(
    ("expression", "shown"),
    [
        ("6 * 7", "42"),
        ("4 / 2", "2"),  # a whole float shows as an int
        ("1 / 3", "0.333333"),
        ("sqrt(2) ** 2", "2"),
        ("2 ** 0.5", "1.41421"),
        ("1e20", "1e+20"),
    ],
)
async def test_calculator_tool(expression: str, shown: str) -> None:
    assert await calculator.ainvoke({"expression": expression}) == shown


async def test_calculator_tool_refuses_with_value_error() -> None:
    with pytest.raises(ValueError, match="unsupported expression"):
        await calculator.ainvoke({"expression": "__import__('os').getcwd()"})
    with pytest.raises(ValueError, match="division by zero"):
        await calculator.ainvoke({"expression": "1 / 0"})


# --- text_stats and current_time -------------------------------------------------------


async def test_text_stats() -> None:
    out = await text_stats.ainvoke({"text": "Hello world. Hello there, world! Tiny cats."})
    assert out == (
        "words=7 characters=43 sentences=3 "
        "top words: hello (2), world (2), cats (1), there (1), tiny (1)"
    )


async def test_text_stats_of_short_words_only() -> None:
    assert await text_stats.ainvoke({"text": "a b c"}) == (
        "words=3 characters=5 sentences=1 top words: none"
    )


async def test_current_time_is_iso_utc_now() -> None:
    stamp = datetime.fromisoformat(await current_time.ainvoke({}))
    assert stamp.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - stamp) < timedelta(minutes=1)


# --- ToolRegistry ----------------------------------------------------------------------


def _named(name: str) -> BaseTool:
    def run(x: int) -> str:
        return f"{name}:{x}"

    return StructuredTool.from_function(func=run, name=name, description=f"tool {name}")


def test_register_and_resolve() -> None:
    reg = ToolRegistry()
    one, two = _named("one"), _named("two")
    reg.register(two)
    reg.register(one)
    assert reg.names() == ["one", "two"]
    assert "one" in reg and "three" not in reg
    assert reg.resolve(None) == [one, two]  # every tool, sorted by name
    assert reg.resolve(["two", "one"]) == [two, one]  # the allow-list's order
    assert reg.resolve([]) == []


def test_resolve_unknown_lists_every_unknown_name() -> None:
    reg = default_registry()
    with pytest.raises(UnknownToolError) as info:
        reg.resolve(["calculator", "shell", "browser"])
    err = info.value
    assert err.names == ["shell", "browser"]
    assert err.known == ["calculator", "current_time", "text_stats"]
    assert "`shell`" in str(err) and "`browser`" in str(err) and "`calculator`" not in str(err)
    assert isinstance(err, KeyError)


def test_duplicate_registration_is_an_error_unless_replacing() -> None:
    reg = ToolRegistry([_named("one")])
    with pytest.raises(ValueError, match="`one`"):
        reg.register(_named("one"))
    newer = _named("one")
    reg.register(newer, replace=True)
    assert reg.resolve(["one"]) == [newer]


def test_register_refuses_a_plain_function() -> None:
    def plain(x: int) -> int:
        return x

    with pytest.raises(TypeError, match="BaseTool"):
        ToolRegistry().register(plain)  # type: ignore[arg-type]


def test_merged_returns_a_new_registry_where_extra_wins() -> None:
    base = default_registry()
    mine_calc = _named("calculator")
    extra = _named("extra")
    merged = base.merged([mine_calc, extra])
    assert merged.names() == ["calculator", "current_time", "extra", "text_stats"]
    assert merged.resolve(["calculator"]) == [mine_calc]
    # The original is untouched.
    assert base.names() == ["calculator", "current_time", "text_stats"]
    assert base.resolve(["calculator"]) == [calculator]


def test_default_registry_holds_the_builtins() -> None:
    assert default_registry().resolve(None) == sorted(BUILTIN_TOOLS, key=lambda t: t.name)


def test_concurrent_register_and_resolve_never_raises() -> None:
    reg = default_registry()
    writers, per_writer, readers = 8, 25, 8
    # Built up front: making a tool is slow and is not what this test is about.
    batches = [[_named(f"w{w}_{i}") for i in range(per_writer)] for w in range(writers)]
    start = threading.Barrier(writers + readers)
    stop = threading.Event()

    def write(batch: list[BaseTool]) -> None:
        start.wait()
        for t in batch:
            reg.register(t)
            assert reg.resolve([t.name]) == [t]  # a writer sees its own tool at once
            time.sleep(0)

    def read() -> int:
        start.wait()
        seen = last = 0
        while not stop.is_set() or seen == 0:
            names = [t.name for t in reg.resolve(None)]
            assert names == sorted(names)
            assert len(names) >= last  # the registry only grows
            last = len(names)
            assert reg.resolve(["calculator", "text_stats"])[0] is calculator
            seen += 1
            time.sleep(0)
        return seen

    with ThreadPoolExecutor(max_workers=writers + readers) as pool:
        reads = [pool.submit(read) for _ in range(readers)]
        writes = [pool.submit(write, batch) for batch in batches]
        for f in writes:
            f.result()
        stop.set()
        assert all(f.result() > 0 for f in reads)

    assert len(reg.names()) == 3 + writers * per_writer


@tool
async def echo(x: int) -> str:
    """Return x."""
    return str(x)


def test_decorated_tool_registers_under_its_name() -> None:
    reg = ToolRegistry([echo])
    assert reg.names() == ["echo"]
