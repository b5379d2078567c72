"""Run settings, declared once: validation, coercion, the Studio schema, flags, the limit."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from typing import Any

import pytest
from pydantic import ValidationError

from fanfold import AgentKind, Plan, RunSettings, Task, arun, execute_tasks_parallel
from fanfold.graphs.orchestrator import compile_orchestrator, graph
from fanfold.nodes.context import concurrency, requirement, setting_flags, settings_of
from fanfold.nodes.errors import SettingsError
from tests.fakes import TaskScript, TaskScriptedModel

NUMBERS = [
    name
    for name, info in RunSettings.model_fields.items()
    if requirement(name).startswith(("an integer", "a number"))
]


def test_every_number_setting_is_found() -> None:
    assert {"max_concurrency", "task_timeout_s", "max_retries", "start_jitter_s"} <= set(NUMBERS)
    assert {"retry_budget_s", "mcp_ttl_s"} <= set(NUMBERS)
    assert len(NUMBERS) == 16


@pytest.mark.parametrize("name", NUMBERS)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, True, "3", [1]])
def test_nan_inf_bools_and_strings_are_refused_where_numbers_belong(name: str, bad: Any) -> None:
    # Each used to slip through: start_jitter_s=nan stalled every task, max_retries=nan
    # retried forever, max_steps=nan never stopped, task_timeout_s=nan timed every task
    # out at once, max_tasks=nan accepted any plan, max_retries="3" was a bare TypeError.
    with pytest.raises(SettingsError) as info:
        RunSettings(**{name: bad})
    [problem] = info.value.problems
    assert problem.field == name and problem.value is bad
    assert f"`{name}` must be {requirement(name)}" in str(info.value)
    flag = setting_flags()[name]
    assert info.value.for_cli().startswith(f"{flag.name} must be ")


def test_the_message_names_the_flag_and_the_rule() -> None:
    with pytest.raises(SettingsError) as info:
        RunSettings(max_concurrency=0)
    assert info.value.for_cli() == "--max-concurrency must be an integer >= 1, got 0"
    assert str(info.value) == "`max_concurrency` must be an integer >= 1, got 0"
    assert isinstance(info.value, ValueError)  # catchable as the builtin it is


def test_several_problems_are_reported_together() -> None:
    with pytest.raises(SettingsError) as info:
        RunSettings(max_retries=-1, policy="sometimes", colour="red")  # type: ignore[call-arg]
    fields = [p.field for p in info.value.problems]
    assert fields == ["policy", "max_retries", "colour"] or set(fields) == {
        "policy",
        "max_retries",
        "colour",
    }
    text = str(info.value)
    assert "one of settle, fail_fast or quorum:K" in text
    assert "unknown setting `colour` (known: model, planner_model" in text


def test_a_bad_model_spec_says_what_a_spec_looks_like() -> None:
    with pytest.raises(SettingsError, match="unknown provider `nosuch`"):
        RunSettings(model="nosuch:model")
    with pytest.raises(SettingsError, match="demo latency `-1`"):
        RunSettings(model="demo:latency=-1")


def test_settings_are_frozen_and_replace_validates() -> None:
    s = RunSettings()
    with pytest.raises(ValidationError):
        s.max_concurrency = 2  # type: ignore[misc]
    t = s.replace(max_concurrency=2)
    assert (t.max_concurrency, s.max_concurrency) == (2, 8)
    with pytest.raises(SettingsError):
        s.replace(max_concurrency=0)


def test_dicts_from_http_are_coerced() -> None:
    s = settings_of(
        {"kinds": [{"name": "poet", "system_prompt": "verse"}], "perspectives": ["poet"]}
    )
    assert s.kinds == (AgentKind(name="poet", system_prompt="verse"),)
    with pytest.raises(SettingsError, match="unknown setting `nope`"):
        settings_of({"nope": 1})


def test_to_json_round_trips_and_keeps_only_plain_values() -> None:
    model = TaskScriptedModel(scripts={})
    s = RunSettings(
        model="demo:latency=0.1",
        planner_model=model,
        kinds=[
            AgentKind(name="poet", system_prompt="verse", model="demo"),
            AgentKind(name="live", system_prompt="x", model=model),
        ],
        max_total_tokens=500,
    )
    saved = s.to_json()
    assert "planner_model" not in saved and saved["tools"] == []
    assert [k["name"] for k in saved["kinds"]] == ["poet"]  # the object-backed kind is not JSON
    again = RunSettings(**saved)
    assert again.to_json() == {**saved, "planner_model": None}  # the object is not saved


def test_the_studio_context_schema_shows_minimums_and_descriptions() -> None:
    schema = graph.get_context_jsonschema()
    props = schema["properties"]
    assert props["max_concurrency"]["minimum"] == 1
    retries = next(v for v in props["max_retries"]["anyOf"] if v.get("type") == "integer")
    assert retries["minimum"] == 0
    assert props["retry_budget_s"]["minimum"] == 0
    timeout = next(v for v in props["task_timeout_s"]["anyOf"] if v.get("type") == "number")
    assert timeout["exclusiveMinimum"] == 0
    for name in setting_flags():
        assert props[name].get("description"), name
    assert not any(name.startswith("_") for name in props)  # no caches shown
    assert props["model"]["type"] == "string"  # objects have their JSON form only


def test_every_setting_a_cli_user_may_want_has_a_flag() -> None:
    flags = setting_flags()
    for name in (
        "planner_model",
        "max_steps",
        "max_tasks",
        "tool_timeout_s",
        "request_timeout_s",
        "start_jitter_s",
        "perspectives",
    ):
        assert name in flags, name
    python_only = {"kinds", "tool_registry"}
    assert set(RunSettings.model_fields) - set(flags) == python_only
    assert len({f.name for f in flags.values()}) == len(flags)  # no flag twice


def test_the_smallest_max_concurrency_wins() -> None:
    s = RunSettings(max_concurrency=8)
    assert concurrency(s, {}) == (8, None)
    assert concurrency(s, {"max_concurrency": 3}) == (3, 3)
    assert concurrency(s, {"max_concurrency": 20}) == (8, 20)
    assert concurrency(s, {"configurable": {"max_concurrency": 2}}) == (2, None)
    for bad in (0, -1, 2.5, True, "4"):
        with pytest.raises(SettingsError, match="max_concurrency"):
            concurrency(s, {"max_concurrency": bad})  # type: ignore[typeddict-item]


async def test_a_config_limit_langgraph_would_hang_on_is_refused_at_once() -> None:
    g = compile_orchestrator(synthesize_answer=False)
    plan = Plan(tasks=[Task(id="a", description="x")])
    with pytest.raises(SettingsError, match="max_concurrency"):
        await g.ainvoke({"request": "", "given_plan": plan}, {"max_concurrency": 0})


async def test_a_smaller_limit_in_the_config_bounds_an_arun() -> None:
    scripts = {f"t{i}": TaskScript(latency=0.05) for i in range(6)}
    model = TaskScriptedModel(scripts=scripts)
    plan = Plan(tasks=[Task(id=f"t{i}", description="x", tools=[]) for i in range(6)])
    out = await arun(
        "",
        settings=RunSettings(model=model, max_concurrency=6, start_jitter_s=0),
        plan=plan,
        config={"max_concurrency": 2},
    )
    assert out.metrics.peak_concurrency == 2 and model.recorder.peak == 2


async def test_one_string_is_not_a_list_of_tasks() -> None:
    with pytest.raises(TypeError, match="single string"):
        await execute_tasks_parallel("one string", model="demo")  # type: ignore[arg-type]


def test_the_first_exception_does_not_import_the_openai_sdk() -> None:
    # `classify` runs on the event loop at a task's first failure; importing the SDK
    # there stalled the loop 0.2-0.5 s, enough to change fail_fast outcomes.
    code = (
        "import sys\n"
        "from fanfold.nodes.faults import classify\n"
        "assert 'openai' not in sys.modules, 'imported by fanfold.nodes.faults'\n"
        "assert classify(ConnectionError('x')) == 'connection'\n"
        "assert classify(RuntimeError('x')) is None\n"
        "assert 'openai' not in sys.modules, 'imported by classify'\n"
        "print('clean')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0 and "clean" in proc.stdout, proc.stderr


def test_the_readme_settings_table_is_the_declaration() -> None:
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = text.split("| setting | default | CLI | meaning |", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| [^|]* \| (?:`(--[\w-]+)`)? *\|", table, re.M)
    flags = {name: flag.name for name, flag in setting_flags().items()}
    assert [name for name, _ in rows] == list(RunSettings.model_fields)  # every one, in order
    assert {name: flag for name, flag in rows if flag} == flags


async def test_tools_named_by_import_path_survive_json_and_are_imported_at_run_time() -> None:
    model = TaskScriptedModel(
        scripts={"a": TaskScript(latency=0, call=("calculator", {"expression": "6 * 7"}))}
    )
    s = RunSettings(model=model, tools=["fanfold.tools.builtins:calculator"], start_jitter_s=0)
    assert s.to_json()["tools"] == ["fanfold.tools.builtins:calculator"]
    plan = Plan(tasks=[Task(id="a", description="x", tools=["calculator"])])
    out = await arun("", settings=s, plan=plan)
    assert out.results[0].status == "ok" and "42" in out.results[0].output
    listed = RunSettings(tools=["fanfold.tools.builtins:BUILTIN_TOOLS"])
    assert listed.tools == ("fanfold.tools.builtins:BUILTIN_TOOLS",)


async def test_a_bad_tool_path_is_named() -> None:
    with pytest.raises(SettingsError, match="import paths `package.module:name`"):
        RunSettings(tools=["no colon here"])
    s = RunSettings(tools=["fanfold.tools.builtins:nothing_here"])
    with pytest.raises(SettingsError) as info:
        await arun("x", settings=s)
    assert "`tools` must be an importable tool (AttributeError" in str(info.value)
    assert info.value.for_cli().startswith("--tools must be")
    s = RunSettings(tools=["fanfold.tools.builtins:evaluate"])  # a function, not a tool
    with pytest.raises(SettingsError, match="a LangChain tool or a list of tools"):
        await arun("x", settings=s)


def test_every_way_to_build_settings_validates() -> None:
    s = RunSettings()
    for build in (
        lambda: s.model_copy(update={"max_concurrency": 0}),
        lambda: s.replace(max_concurrency=0),
        lambda: RunSettings.model_validate({"max_concurrency": 0}),
        lambda: RunSettings.model_validate_json('{"max_concurrency": 0}'),
    ):
        with pytest.raises(SettingsError, match="`max_concurrency` must be an integer >= 1"):
            build()
    assert RunSettings.model_validate({"max_concurrency": 3}).max_concurrency == 3


def test_lists_inside_settings_cannot_change_behind_validation() -> None:
    s = RunSettings(perspectives=["skeptic"], tools=["fanfold.tools.builtins:calculator"])
    assert s.perspectives == ("skeptic",) and isinstance(s.tools, tuple)
    with pytest.raises(AttributeError):
        s.tools.append("no colon")  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("start_jitter_s", 1e308, "<= 60"),  # would stall every task for its whole timeout
        ("requests_per_second", 5e-324, ">= 0.001"),  # would hang the planner
        ("workspace", "", "an existing folder"),  # would mean the current folder
        ("perspectives", ["nope"], "unknown: ['nope']"),
    ],
)
def test_absurd_values_that_would_only_hang_a_run_are_refused(
    field: str, value: Any, needle: str
) -> None:
    with pytest.raises(SettingsError, match=re.escape(needle)):
        RunSettings(**{field: value})


async def test_a_tool_module_that_fails_to_import_is_named(tmp_path: Any, monkeypatch: Any) -> None:
    (tmp_path / "broken_tools.py").write_text("raise RuntimeError('no config file')\n")
    (tmp_path / "syntax_tools.py").write_text("def (:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for spec, why in (
        ("broken_tools:x", "RuntimeError: no config file"),
        ("syntax_tools:x", "SyntaxError"),
    ):
        with pytest.raises(SettingsError, match=re.escape(why)):
            await arun("x", settings=RunSettings(tools=[spec]))
