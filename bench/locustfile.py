"""Locust users for bench/load.py: paced reads of the session list and fills pages, and session starts.

Not meant to be run by hand: bench/load.py seeds the database, starts the stack and runs
`locust --headless -f bench/locustfile.py` with these environment variables:

  LOAD_PLAN     JSON file: {"token", "bot_id", "ramp", "read_rate", "read_users", "start_rate",
                "start_users", "list_limit", "fills_limit", "list_count", "runs": [[run_id, num_fills], ...]}
  LOAD_TIMINGS  where to write every request's exact response time (ms) per endpoint, as JSON

Timings are recorded from `ramp` seconds after every user has spawned until the end; the
window's length is written with them.
"""
from __future__ import annotations

import json
import os
import random
import time
from collections import defaultdict

from locust import FastHttpUser, events, task

PLAN = json.loads(open(os.environ["LOAD_PLAN"]).read())  # noqa: SIM115 - read once at import
AUTH = {"Authorization": f"Bearer {PLAN['token']}"}
# The runs load.py gave half the fills to (2,500 each by default), and the others with any.
_MOST = max(r[1] for r in PLAN["runs"])
HEAVY = [tuple(r) for r in PLAN["runs"] if r[1] == _MOST]
LIGHT = [tuple(r) for r in PLAN["runs"] if 0 < r[1] < _MOST]

LIST_FIRST = "GET /paper (first page)"
LIST_DEEP = "GET /paper?offset= (deep page)"
FILLS = "GET /paper/{id}/fills"
START = "POST /bots/{id}/paper"

_times: dict[str, list[float]] = defaultdict(list)
_failures: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
_record_from = float("inf")


@events.spawning_complete.add_listener
def _start_recording(user_count: int, **_kw) -> None:
    global _record_from
    _record_from = time.time() + PLAN["ramp"]


@events.request.add_listener
def _record(request_type, name, response_time, response_length, exception=None, response=None, **_kw) -> None:
    if time.time() < _record_from:
        return
    _times[name].append(float(response_time))
    if exception is not None:
        status = getattr(response, "status_code", None)
        _failures[name][f"{status} {str(exception)[:120]}"] += 1


@events.quitting.add_listener
def _dump(environment, **_kw) -> None:
    with open(os.environ["LOAD_TIMINGS"], "w") as out:
        json.dump({"times": _times, "failures": {k: dict(v) for k, v in _failures.items()},
                   "window": max(time.time() - _record_from, 0.0)}, out)


def poisson_arrivals(rate: float):
    """A wait_time that starts a user's requests as a Poisson process of `rate` per second.

    Independent clients, as an API has: each request is due an exponential gap after the last
    one was due, whenever that one finished (open loop: a slow answer does not slow the
    arrivals). locust's constant_throughput instead keeps users that started together in step,
    so 100 users at 1/s send bursts of 100 requests at once every second: a queue of a burst's
    length each time, whatever the server's speed.
    """

    def wait_time(user) -> float:
        now = time.monotonic()
        due = getattr(user, "_due", None)
        due = (now if due is None else due) + random.expovariate(rate)
        user._due = max(due, now - 5.0)  # far behind (the server stalled): do not burst to catch up
        return max(0.0, user._due - now)

    return wait_time


class Reader(FastHttpUser):
    """read_users users, each a Poisson process of read_rate / read_users requests/s."""

    weight = 1
    wait_time = poisson_arrivals(PLAN["read_rate"] / PLAN["read_users"])

    @task(1)
    def list_first_page(self) -> None:
        self.client.get(f"/paper?limit={PLAN['list_limit']}", headers=AUTH, name=LIST_FIRST)

    @task(1)
    def list_deep_page(self) -> None:
        offset = random.randrange(PLAN["list_count"] // 2, max(PLAN["list_count"] - PLAN["list_limit"], 1 + PLAN["list_count"] // 2))
        self.client.get(f"/paper?limit={PLAN['list_limit']}&offset={offset}", headers=AUTH, name=LIST_DEEP)

    @task(2)
    def fills_page(self) -> None:
        run_id, n = random.choice(HEAVY) if HEAVY and random.random() < 0.8 else random.choice(LIGHT or HEAVY)
        limit = PLAN["fills_limit"]
        offset = random.randrange(0, max(n - limit, 1))
        self.client.get(f"/paper/{run_id}/fills?limit={limit}&offset={offset}", headers=AUTH, name=FILLS)


class Starter(FastHttpUser):
    """Session starts at start_rate per second in all: short, fast-paced sessions of the demo bot."""

    abstract = PLAN["start_users"] == 0  # --start-rate 0: no starter at all
    fixed_count = PLAN["start_users"]
    wait_time = poisson_arrivals(PLAN["start_rate"] / max(PLAN["start_users"], 1))

    @task
    def start_session(self) -> None:
        body = {"starting_cash": 100000, "duration_minutes": 2, "pace": 60}
        with self.client.post(f"/bots/{PLAN['bot_id']}/paper", json=body, headers=AUTH, name=START,
                              catch_response=True) as resp:
            if resp.status_code != 201:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")
