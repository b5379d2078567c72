"""The command against llmock, a third-party OpenAI-compatible server on 127.0.0.1.

llmock runs with `--tool-mode off`: it never calls the planner's tool and answers every
request with the scripted text (the planner, the subagents and the synthesizer alike).
"""

from __future__ import annotations

import json

import pytest

from tests.llmock_server import LLMockProcess, free_port, llmock_fixture
from tests.test_cli import check_failure, failure_lines, fanfold

pytestmark = pytest.mark.http

PROSE = "I am sorry, but I cannot break this work into tasks. Perhaps ask a person instead."
PLAN = {
    "tasks": [
        {"id": "facts", "description": "Find the facts about tea"},
        {"id": "note", "description": "Write a note", "depends_on": ["facts"]},
    ],
    "rationale": "facts first",
}
FENCED = f"Here is the plan:\n```json\n{json.dumps(PLAN, indent=2)}\n```\nI hope it helps."
IN_PROSE = f"Sure. The plan is {json.dumps(PLAN)} and nothing else."

prose_llm = llmock_fixture(reply=PROSE, tool_mode="off")
fenced_llm = llmock_fixture(reply=FENCED, tool_mode="off")
in_prose_llm = llmock_fixture(reply=IN_PROSE, tool_mode="off")


def _model(server: LLMockProcess) -> str:
    return f"openai:any-model@{server.base_url}"


def test_a_prose_reply_is_exit_2_showing_what_the_model_said(prose_llm: LLMockProcess) -> None:
    proc = fanfold("run", "Compare tea and coffee", "--model", _model(prose_llm), "--json")
    line, doc = check_failure(proc, 2, "PlanError")
    assert PROSE in line
    assert "use a model that calls tools or answers with a JSON plan" in line
    assert doc is not None and PROSE in doc["error"]["message"]
    assert doc["error"]["exception"] == "fanfold.PlanError"
    # The planner asked, then asked once more with the problem (one repair round).
    assert len(prose_llm.requests()) == 2


@pytest.mark.parametrize("server", ["fenced_llm", "in_prose_llm"])
def test_a_json_plan_in_the_text_reply_is_planned_from(
    server: str, request: pytest.FixtureRequest
) -> None:
    llm: LLMockProcess = request.getfixturevalue(server)
    proc = fanfold("run", "Compare tea and coffee", "--model", _model(llm), "--json")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and not failure_lines(proc.stderr)
    doc = json.loads(proc.stdout)
    assert [(t["id"], t["depends_on"]) for t in doc["plan"]["tasks"]] == [
        ("facts", []),
        ("note", ["facts"]),
    ]
    assert doc["plan"]["rationale"] == "facts first"
    assert doc["status"] == "ok"
    assert [r["task_id"] for r in doc["results"]] == ["facts", "note"]
    assert "plan: 2 tasks in 2 generations" in proc.stderr


def test_an_unreachable_server_is_exit_3_in_one_line() -> None:
    base_url = f"http://127.0.0.1:{free_port()}/v1"  # a free port: nothing listens
    proc = fanfold("run", "x", "--model", f"openai:any-model@{base_url}", "--max-retries", "0")
    line, _ = check_failure(proc, 3, "Unreachable", as_json=False)
    assert line.startswith("fanfold: cannot reach the model server at http://127.0.0.1:")
    assert proc.stdout == ""
    assert proc.stderr.strip() == line
    as_json = fanfold(
        "run", "x", "--model", f"openai:any-model@{base_url}", "--max-retries", "0", "--json"
    )
    _, doc = check_failure(as_json, 3, "Unreachable")
    assert doc is not None and "cannot reach the model server" in doc["error"]["message"]


refusing_llm = llmock_fixture(
    tool_mode="off",
    behaviors=[{"type": "fail", "status": 401, "message": "bad key", "times": None}],
)
failing_llm = llmock_fixture(
    tool_mode="off", behaviors=[{"type": "fail", "status": 503, "times": None}]
)


def test_a_server_that_refuses_the_request_is_exit_2(refusing_llm: LLMockProcess) -> None:
    proc = fanfold("run", "x", "--model", _model(refusing_llm), "--json")
    line, doc = check_failure(proc, 2, "BadInput")
    assert f"the model server at {refusing_llm.root_url} refused the request (401" in line
    assert "OPENAI_API_KEY" in line
    assert len(refusing_llm.requests()) == 1  # a 401 is never retried


def test_a_server_that_keeps_failing_is_exit_3(failing_llm: LLMockProcess) -> None:
    proc = fanfold("run", "x", "--model", _model(failing_llm), "--max-retries", "1", "--json")
    line, _ = check_failure(proc, 3, "Unreachable")
    assert f"the model server at {failing_llm.root_url} kept failing after 1 retry" in line
    assert len(failing_llm.requests()) == 2
