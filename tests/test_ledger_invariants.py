"""Accounting invariants of engine runs, and of the ledger rows a run persists to.

Random valid bars (a random walk) and a random script of orders go through `Engine`; at every
bar cash, position and equity must agree with the fills. The result is then persisted with
`ledger.services.run_persist` (twice) and the rows must agree with the result.
"""
from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bots.services import bot_create
from ledger.models import PaperEquityPoint, PaperFill, PaperOrder
from ledger.services import run_create, run_persist
from paper.engine.engine import RunResult
from tests.engine_helpers import SYMBOL, TIMEFRAME, buy, fill_bar_ok, make_bars, run_script, sell

START_CASH = 10_000.0
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@st.composite
def random_bars(draw):
    """30-120 bars of a random walk with valid OHLC (low > 0, low <= open/close <= high)."""
    n = draw(st.integers(30, 120))
    price = draw(st.floats(5.0, 500.0))
    step = st.tuples(
        st.floats(-0.03, 0.03),  # gap from the previous close to the open
        st.floats(-0.08, 0.08),  # open -> close
        st.floats(0.0, 0.04),  # high above max(open, close)
        st.floats(0.0, 0.04),  # low below min(open, close)
        st.sampled_from([0.0, 5.0, 200.0, 5_000.0, 1e6]),  # volume
    )
    rows = []
    for gap, ret, up, down, vol in draw(st.lists(step, min_size=n, max_size=n)):
        o = price * (1 + gap)
        c = o * (1 + ret)
        h = max(o, c) * (1 + up)
        lo = min(o, c) * (1 - down)
        rows.append((o, h, lo, c, vol))
        price = c
    return rows


@st.composite
def order_script(draw, n_bars: int, closes: list[float]):
    """A random script: bar index -> orders (market / limit / stop, gtc / ioc, random qty)."""
    script: dict[int, list[dict]] = {}
    entry = st.tuples(
        st.integers(0, n_bars - 1),
        st.sampled_from(["buy", "sell"]),
        st.sampled_from(["market", "limit", "stop"]),
        st.floats(0.001, 60.0),
        st.floats(-0.1, 0.1),  # price offset from the decision bar's close
        st.sampled_from(["gtc", "ioc"]),
    )
    k = draw(st.integers(4, 40))
    for i, side, kind, qty, off, tif in draw(st.lists(entry, min_size=k, max_size=k)):
        kw: dict = {"type": kind, "tif": tif}
        if kind == "limit":
            kw["limit"] = closes[i] * (1 + off)
        elif kind == "stop":
            kw["stop"] = closes[i] * (1 + off)
        script.setdefault(i, []).append((buy if side == "buy" else sell)(qty, **kw))
    return script


@st.composite
def scenarios(draw):
    rows = draw(random_bars())
    script = draw(order_script(len(rows), [r[3] for r in rows]))
    execution = {
        "allow_short": draw(st.booleans()),
        "max_volume_fraction": draw(st.sampled_from([None, 0.01, 0.1, 1.0])),
        "maker_fee_bps": draw(st.sampled_from([0.0, 2.0, 25.0])),
        "taker_fee_bps": draw(st.sampled_from([0.0, 5.0, 40.0])),
        "slippage_bps": draw(st.sampled_from([0.0, 2.0, 30.0])),
        "slippage_volume_bps": draw(st.sampled_from([0.0, 500.0])),
        "slippage_jitter_bps": draw(st.sampled_from([0.0, 10.0])),
    }
    seed = draw(st.integers(0, 2**31))
    return rows, script, execution, seed


def _run(scenario) -> RunResult:
    rows, script, execution, seed = scenario
    bars = make_bars(rows)
    bars.check()
    result, _ = run_script(bars, script, starting_cash=START_CASH, seed=seed, **execution)
    assert len(result.equity) == len(rows)
    assert fill_bar_ok(result, bars) == []
    return result


def check_accounting(result: RunResult) -> None:
    """(a)-(d): equity, position and cash agree with the fills at every bar."""
    fills = sorted(result.fills, key=lambda f: f.bar_index)
    assert [f.bar_index for f in result.fills] == [f.bar_index for f in fills]  # recorded in bar order
    k = 0
    position = 0.0
    cash = result.starting_cash
    for i in range(len(result.equity)):
        while k < len(fills) and fills[k].bar_index <= i:
            f = fills[k]
            position += f.signed_qty
            cash -= f.signed_qty * f.price + f.fee
            k += 1
        eq, c, pos, close = (float(result.equity[i]), float(result.cash[i]),
                             float(result.position[i]), float(result.close[i]))
        # (a) equity is marked to market
        assert math.isclose(c + pos * close, eq, rel_tol=1e-9, abs_tol=1e-6), f"bar {i}: equity"
        # (b) position is the sum of signed fill quantities so far
        assert math.isclose(pos, position, rel_tol=0, abs_tol=1e-9), f"bar {i}: position {pos} vs {position}"
        # (c) cash is starting cash minus what the fills so far cost, fees included
        assert math.isclose(c, cash, rel_tol=1e-9, abs_tol=1e-6), f"bar {i}: cash {c} vs {cash}"
    assert k == len(fills)
    # (d) total P&L is final equity minus starting cash
    assert math.isclose(result.total_pnl, float(result.equity[-1]) - result.starting_cash, rel_tol=1e-12, abs_tol=1e-9)
    assert result.final_equity == float(result.equity[-1])


@SETTINGS
@given(scenario=scenarios())
def test_accounting_invariants_at_every_bar(scenario):
    result = _run(scenario)
    check_accounting(result)
    if not scenario[2]["allow_short"]:
        # Long-only: never short, and buying power keeps cash from going negative.
        assert (result.position >= -1e-9).all()
        assert (result.cash >= 0).all()


@pytest.mark.parametrize("allow_short", [False, True], ids=["long-only", "short"])
@pytest.mark.parametrize("mvf", [None, 0.05], ids=["full fills", "max_volume_fraction"])
@pytest.mark.parametrize("fees", [0.0, 30.0], ids=["no fees", "fees"])
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_accounting_invariants_by_config(allow_short, mvf, fees, data):
    """Each corner of the config grid gets examples of its own, not only the random mix above."""
    rows = data.draw(random_bars())
    script = data.draw(order_script(len(rows), [r[3] for r in rows]))
    execution = {"allow_short": allow_short, "max_volume_fraction": mvf, "maker_fee_bps": fees,
                 "taker_fee_bps": fees, "slippage_bps": 5.0}
    result = _run((rows, script, execution, 0))
    check_accounting(result)


# --- persisted to the ledger -------------------------------------------------------------

_names = itertools.count()


def _persist(result: RunResult):
    bot = bot_create(name=f"ledger-invariants-{next(_names)}", strategy="buy_and_hold",
                     symbols=[SYMBOL], timeframe=TIMEFRAME)
    run = run_create(
        bot=bot, starting_cash=result.starting_cash, symbol=SYMBOL, timeframe=TIMEFRAME,
        data_source="synthetic", seed=result.seed, config_snapshot={}, config_hash="0" * 64, mode="replay",
    )
    return run_persist(run=run, result=result, status="success", status_reason="completed")


def check_ledger(run, result: RunResult) -> None:
    fills = PaperFill.objects.filter(paper_run=run)
    # (e) fill counts agree
    assert run.num_fills == fills.count() == len(result.fills)
    # (f) P&L
    assert run.total_pnl == result.final_equity - run.starting_cash
    assert math.isclose(run.total_pnl, result.total_pnl, rel_tol=1e-12, abs_tol=1e-9)
    assert run.ending_equity == result.final_equity
    assert run.bars_processed == len(result.equity)
    # (h) the rows add up to the final position
    signed = sum(f.qty if f.side == "buy" else -f.qty for f in fills)
    assert math.isclose(signed, float(result.position[-1]), rel_tol=0, abs_tol=1e-9)
    # equity points mirror the result bar for bar
    points = list(PaperEquityPoint.objects.filter(paper_run=run).order_by("bar_index")
                  .values_list("bar_index", "equity", "cash", "position"))
    assert [p[0] for p in points] == list(range(len(result.equity)))
    for (i, eq, cash, pos) in points:
        assert (eq, cash, pos) == (float(result.equity[i]), float(result.cash[i]), float(result.position[i]))
    assert PaperOrder.objects.filter(paper_run=run).count() == len(result.orders)


@pytest.mark.django_db
@SETTINGS
@given(scenario=scenarios())
def test_ledger_rows_match_result_and_persist_is_idempotent(scenario):
    result = _run(scenario)
    run = _persist(result)
    check_ledger(run, result)
    counts = (
        PaperFill.objects.filter(paper_run=run).count(),
        PaperEquityPoint.objects.filter(paper_run=run).count(),
        PaperOrder.objects.filter(paper_run=run).count(),
    )
    # (g) persisting the same result again duplicates nothing
    run = run_persist(run=run, result=result, status="success", status_reason="completed")
    assert counts == (
        PaperFill.objects.filter(paper_run=run).count(),
        PaperEquityPoint.objects.filter(paper_run=run).count(),
        PaperOrder.objects.filter(paper_run=run).count(),
    )
    run.refresh_from_db()
    check_ledger(run, result)
    assert run.status == "success" and run.status_reason == "completed"
