"""Schemathesis hooks shared by the CI fuzz (tests/test_schemathesis.py) and the exploratory CLI run.

- Ids: a generated `bot_id`, `run_id` or `token_id` is pointed at a row that exists three times
  in four (the rest stay as generated: mostly 404s), so operations are fuzzed past their lookup.
- The fuzz never revokes the token it authenticates with: `DELETE /tokens/{id}` of that token is
  sent to the spare token instead.
- Refusals of valid-looking requests (positive_data_acceptance) are accepted only when the API
  refused them for a rule JSON Schema cannot state - a rule between two fields, or one that
  depends on stored state - and named it (SEMANTIC_REFUSALS). Anything else still fails.

The exploratory run against a live server (embedded mode; its log prints TOKEN=...), from the
repository root:

    OUTPUTS_DIR=/tmp/st-out DATABASE_URL=sqlite:////tmp/st.sqlite3 .venv/bin/python manage.py serve --port 8765
    DATABASE_URL=sqlite:////tmp/st.sqlite3 .venv/bin/python manage.py create_api_token operator --name spare
    curl -H "Authorization: Bearer $TOKEN" -X POST http://127.0.0.1:8765/bots/1/paper \\
      -d '{"starting_cash":100000,"duration_minutes":60}'          # a run id for ST_RUN_IDS
    # ST_TOKEN_ID: the spare token's id, ST_PROTECTED_TOKEN_ID: TOKEN's id (GET /tokens lists both)
    PYTHONPATH=. ST_BASE_URL=http://127.0.0.1:8765 ST_TOKEN=$TOKEN ST_BOT_ID=1 ST_TOKEN_ID=2 \\
      ST_PROTECTED_TOKEN_ID=1 ST_RUN_IDS=<run id> SCHEMATHESIS_HOOKS=tests.schemathesis_hooks \\
      .venv/bin/schemathesis run http://127.0.0.1:8765/openapi.json -H "Authorization: Bearer $TOKEN" \\
      --checks all --max-examples 300 --seed 2 --generation-database none -w 2 \\
      [--phases coverage,fuzzing,stateful --max-time 420]

ST_FILTER_LOG=FILE writes each refusal SEMANTIC_REFUSALS let through, to review them.
"""
from __future__ import annotations

import json
import os
import re
import zlib

import schemathesis

# The rows a case's ids are pointed at (the CI fixture fills this; the CLI reads ST_* variables).
KNOWN: dict = {
    "bot_id": int(os.environ["ST_BOT_ID"]) if os.environ.get("ST_BOT_ID") else None,
    "run_ids": [r for r in os.environ.get("ST_RUN_IDS", "").split(",") if r],
    "token_id": int(os.environ["ST_TOKEN_ID"]) if os.environ.get("ST_TOKEN_ID") else None,
    "protected_token_id": int(os.environ["ST_PROTECTED_TOKEN_ID"]) if os.environ.get("ST_PROTECTED_TOKEN_ID") else None,
}

RUN_ID = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
ID_MAX = 2**63 - 1  # bot and token ids, as the schema bounds them

# Positive cases the API may refuse with 422, by the refusal's code, and why the schema cannot
# say so. `fields` (a regex) narrows a code to the fields it may name.
SEMANTIC_REFUSALS = {
    "invalid_bot": {
        "fields": r"^params(\..*)?$|^strategy$",
        "why": "a strategy's params depend on which strategy it is (and fast < slow, oversold < overbought); "
               "a dotted strategy path must name an importable Strategy subclass",
    },
    "invalid_session": {
        "fields": r"^symbol$",
        "why": "the symbol must be one of the bot's symbols (stored state)",
    },
    "invalid_backtest": {
        "fields": r"^(symbol|start|end)$",
        "why": "the symbol must be one of the bot's symbols (stored state); end >= start relates two fields",
    },
    "no_bars": {"fields": r".*", "why": "stored bars must exist for the symbol and range (stored state)"},
    "not_enough_bars": {"fields": r"^start$", "why": "stored bars must cover the session (stored state)"},
    "too_many_bars": {"fields": r"^end$", "why": "a synthetic range's bar count depends on the bot's timeframe"},
    "invalid_input": {
        "fields": r"^body$",
        "messages": r"end must not be before start",
        "why": "end >= start relates two fields",
    },
}


def _pick(value) -> bool:
    """Three in four generated ids are replaced by a real one (deterministic in the value)."""
    return _digest(value) % 4 != 0


def _valid_id(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= ID_MAX


def _digest(value) -> int:
    return zlib.crc32(str(value).encode("utf-8", "surrogatepass"))


def steer_ids(path_parameters: dict | None) -> dict | None:
    if not path_parameters:
        return path_parameters
    params = dict(path_parameters)
    for name, value in params.items():
        if isinstance(value, bool):
            continue
        # Only a valid id is replaced: a negative case (an id out of range) must stay negative.
        if name == "bot_id" and KNOWN["bot_id"] and _valid_id(value) and _pick(value):
            params[name] = KNOWN["bot_id"]
        elif name == "run_id" and KNOWN["run_ids"] and isinstance(value, str) and RUN_ID.match(value) and _pick(value):
            params[name] = KNOWN["run_ids"][_digest(value) % len(KNOWN["run_ids"])]
        elif name == "token_id" and KNOWN["token_id"] and _valid_id(value) and _pick(value):
            params[name] = KNOWN["token_id"]
    return params


def protect_auth_token(case) -> None:
    if case.method.upper() == "DELETE" and "token_id" in (case.path_parameters or {}):
        if KNOWN["protected_token_id"] is not None and str(case.path_parameters["token_id"]) == str(KNOWN["protected_token_id"]):
            case.path_parameters = {**case.path_parameters, "token_id": KNOWN["token_id"]}


def semantic_reason(response) -> str | None:
    """Why a 422 refusal of a valid-looking request is one JSON Schema cannot state, or None."""
    if response.status_code != 422:
        return None
    try:
        body = json.loads(response.content)
    except ValueError:
        return None
    rule = SEMANTIC_REFUSALS.get(body.get("code")) if isinstance(body, dict) else None
    if rule is None:
        return None
    errors = body.get("errors") if isinstance(body.get("errors"), list) else [{"field": "", "message": body.get("detail", "")}]
    for error in errors:
        field = str(error.get("field", "")).removeprefix("body.") if error.get("field") != "body" else "body"
        if not re.search(rule["fields"], field):
            return None
        if "messages" in rule and not re.search(rule["messages"], str(error.get("message", ""))):
            return None
    return rule["why"]


def keep_failure(failure, response) -> bool:
    if getattr(failure, "code", None) == "ST202" or type(failure).__name__ == "RejectedPositiveData":
        reason = semantic_reason(response)
        if reason is not None and os.environ.get("ST_FILTER_LOG"):  # what was let through, to review
            with open(os.environ["ST_FILTER_LOG"], "a") as log:
                log.write(response.content.decode("utf-8", "replace")[:300] + "\n")
        return reason is None
    return True


def install(schema) -> None:
    """Scope the hooks to one schema (the CI fuzz)."""

    @schema.hook("map_path_parameters")
    def _map_path_parameters(context, path_parameters):
        return steer_ids(path_parameters)

    @schema.hook("filter_failure")
    def _filter_failure(context, failure, case, response):
        return keep_failure(failure, response)


if os.environ.get("SCHEMATHESIS_HOOKS") == __name__:
    # Loaded by the CLI: global hooks.
    @schemathesis.hook("map_path_parameters")
    def map_path_parameters(context, path_parameters):
        return steer_ids(path_parameters)

    @schemathesis.hook("before_call")
    def before_call(context, case, kwargs):
        protect_auth_token(case)
        # As in CI, a case meets an armed kill switch: a POST /kill-switch of an earlier case does
        # not turn every later session start into a 423. ST_BASE_URL and ST_TOKEN (a staff user's).
        if os.environ.get("ST_BASE_URL") and case.method.upper() == "POST" and case.path.endswith("/paper"):
            import requests

            requests.post(os.environ["ST_BASE_URL"].rstrip("/") + "/kill-switch/rearm", timeout=30,
                          headers={"Authorization": f"Bearer {os.environ['ST_TOKEN']}"})

    @schemathesis.hook("filter_failure")
    def filter_failure(context, failure, case, response):
        return keep_failure(failure, response)
