"""A session that ends while Redis is down gets one ending and all its reports (issue 13,
finding 2: it got `session.completed`, then `session.failed: exception: ConnectionError`, and
no metrics.json, report.json, run_report.md, trades.csv or charts).

Real components: a redis-server of the test's own on a free port behind the artifacts actor's
RedisBroker, stopped (SIGKILL) just before the session's last bar.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from datetime import date

import pytest

import paper.sessions as sessions
from bots.services import backtest_run, bot_create
from ledger.models import PaperFrame, PaperTradingRun
from ledger.services import TERMINAL_FRAME_STAGES
from paper import artifact_contract
from paper.sessions import SessionRequest, session_execute, session_start

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server on PATH"),
]

BARS = 12


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def own_redis(tmp_path):
    port = _free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield proc, f"redis://127.0.0.1:{port}/0"
    if proc.poll() is None:
        proc.kill()
    proc.wait()


@pytest.fixture
def artifacts_on_redis(own_redis, settings):
    """The artifacts actor behind a real RedisBroker on the test's own Redis, delayed as in production."""
    from dramatiq.brokers.redis import RedisBroker

    from paper.actors import write_session_artifacts

    proc, url = own_redis
    broker = RedisBroker(url=url)
    previous = write_session_artifacts.broker
    write_session_artifacts.broker = broker
    broker.declare_actor(write_session_artifacts)
    settings.PAPER_ARTIFACTS_DELAY_MS = 500
    yield proc
    write_session_artifacts.broker = previous


@pytest.fixture
def ready_bot(sample_data):
    bot = bot_create(name="redisdown", strategy="sma_crossover", params={"fast": 2, "slow": 4},
                     symbols=["ETH-USD"], timeframe="1d", risk={"max_drawdown_pct": 90})
    backtest_run(bot=bot, start=date(2022, 1, 1), end=date(2023, 12, 31))
    return bot


def test_a_session_ending_while_redis_is_down_ends_once_with_every_artifact(
        ready_bot, artifacts_on_redis, monkeypatch, settings):
    redis_proc = artifacts_on_redis
    run = session_start(bot=ready_bot, request=SessionRequest(
        starting_cash=100_000, duration_minutes=BARS, seed=2, pace=60_000.0))
    real = sessions.ledger.session_bar_persist

    def persist(**kw):
        out = real(**kw)
        if kw["bars_processed"] == BARS - 1 and redis_proc.poll() is None:
            redis_proc.kill()  # Redis goes down before the last bar and the epilogue
            redis_proc.wait()
        return out

    monkeypatch.setattr(sessions.ledger, "session_bar_persist", persist)
    assert session_execute(run.id) == "success"
    assert redis_proc.poll() is not None
    run.refresh_from_db()
    assert (run.status, run.status_reason, run.error_type) == ("success", "completed", "")
    stages = list(PaperFrame.objects.filter(paper_run=run).order_by("seq").values_list("stage", flat=True))
    assert [s for s in stages if s in TERMINAL_FRAME_STAGES] == ["session.completed"] and stages[-1] == "session.completed"
    folder = settings.OUTPUTS_DIR / "paper_sessions" / run.id
    missing = [name for name in artifact_contract.CANONICAL_FILES if not (folder / name).is_file()]
    assert missing == []
    status = (folder / artifact_contract.STATUS).read_text()
    assert '"success"' in status
    assert PaperTradingRun.objects.filter(pk=run.id, status="success").exists()


def test_charts_that_cannot_be_written_cost_only_the_charts(ready_bot, monkeypatch, settings):
    """Chart rendering or writing fails (here: `artifacts/` is a file, so no PNG can go in it):
    the session's ending stands and every other artifact is written, report.json naming the
    missing charts."""
    import json

    run = session_start(bot=ready_bot, request=SessionRequest(
        starting_cash=100_000, duration_minutes=BARS, seed=2, pace=60_000.0))
    folder = settings.OUTPUTS_DIR / "paper_sessions" / run.id
    real = sessions.ledger.session_bar_persist

    def persist(**kw):
        out = real(**kw)
        if kw["bars_processed"] == BARS - 1:
            shutil.rmtree(folder / artifact_contract.ARTIFACTS_DIR, ignore_errors=True)
            (folder / artifact_contract.ARTIFACTS_DIR).write_text("not a folder")
        return out

    monkeypatch.setattr(sessions.ledger, "session_bar_persist", persist)
    assert session_execute(run.id) == "success"
    stages = list(PaperFrame.objects.filter(paper_run=run).order_by("seq").values_list("stage", flat=True))
    assert [s for s in stages if s in TERMINAL_FRAME_STAGES] == ["session.completed"]
    charts = {artifact_contract.EQUITY_PNG, artifact_contract.DRAWDOWN_PNG}
    missing = {name for name in artifact_contract.CANONICAL_FILES if not (folder / name).is_file()}
    assert missing == charts
    report = json.loads((folder / artifact_contract.REPORT).read_text())
    assert set(report["chart_errors"]) == charts and report["status"] == "success"
    assert json.loads((folder / artifact_contract.STATUS).read_text())["terminal"] is True
