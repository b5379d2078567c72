"""A small scripted OpenAI-compatible chat-completions server, for tests.

It speaks just enough of the OpenAI HTTP API for `ChatOpenAI`:

- `GET /v1/models`
- `POST /v1/chat/completions`, both plain JSON and `stream: true` server-sent
  events (with a final usage chunk when `stream_options.include_usage` is set).

What it answers depends only on the request, never on call order:

- a `Plan` tool is offered: the planner. Answer with a `Plan` tool call whose
  arguments are the `plan` the test configured, or its `repaired_plan` once a
  user message says `Your plan was rejected:` (the planner's repair round).
- the first user message holds `Results, in plan order:`: the synthesizer.
  Answer with a line naming every task id and status it was given.
- the first user message starts with `Task <id> (`: a subagent. An unknown id is
  a loud failure (HTTP 500, recorded in `errors`). A task with scripted tool
  calls gets them while no `tool` message is in the conversation yet; otherwise
  it gets its final answer, which quotes the tool results and the dependency
  inputs the request carried (scripted answers should be one line, as the
  dependency inputs are read back line by line).

Every answer carries a deterministic `usage` block, derived from the request's
text and the reply's text, and the server keeps per-key sums of the usage it
reported (keys: `planner`, `synthesizer`, or a task id), every request it saw,
and the most requests it held in flight at once. Each answer waits
`latency_s` first (or its task's own), so concurrency is observable.

Mistakes (an unknown task id, a request it cannot place, a missing plan, a
scripted tool that was not offered) are answered with HTTP 500 and
`x-should-retry: false`, and recorded in `errors`: assert it stays empty.

Faults, for fault-tolerance tests (both off by default):

- `faults`: a function of (key, index of this request among that key's requests)
  returning a fault mode from `FAULT_MODES` or None; `SeededFaults` picks them from
  a seeded RNG per request, so what a task gets does not depend on timing. Every
  injected fault is appended to `injected` the moment it is decided, so a request
  the client gave up on (a slow reply, a dropped connection) still counts.
- `rate_limit`: a `TokenBucket`; a request beyond it is answered 429 with
  `retry-after-ms` (counted in `throttled`, never in `injected`).

Layout: `scripts` (task scripts and request records), `wire` (the OpenAI format:
replies, usage, errors, streams), `faults` (fault modes, seeded choice, rate limit,
broken answers), `handler` (routes and the chat-completion flow), `server`
(`ScriptedOpenAI`: state, lifecycle, what it answers), `serve` (`running`, `serving`).
"""

from tests.openai_server.faults import FAULT_MODES, Injected, SeededFaults, TokenBucket
from tests.openai_server.scripts import (
    PLANNER,
    SYNTHESIZER,
    Call,
    ScriptedToolCall,
    TaskScript,
    Tokens,
)
from tests.openai_server.serve import running, serving
from tests.openai_server.server import ScriptedOpenAI
from tests.openai_server.wire import completion_tokens, prompt_tokens, text_of

__all__ = [
    "FAULT_MODES",
    "PLANNER",
    "SYNTHESIZER",
    "Call",
    "Injected",
    "ScriptedOpenAI",
    "ScriptedToolCall",
    "SeededFaults",
    "TaskScript",
    "TokenBucket",
    "Tokens",
    "completion_tokens",
    "prompt_tokens",
    "running",
    "serving",
    "text_of",
]
