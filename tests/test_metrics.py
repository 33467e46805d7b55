"""Tests for paper.engine.metrics: round trips from fills and run statistics.

Ratios are checked against empyrical on real ETH-USD daily closes; trades against hand-worked cases.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import empyrical
import numpy as np
import pandas as pd
import pytest

from paper.engine.metrics import (
    Trade,
    compute_metrics,
    equity_returns,
    open_positions,
    round_trips,
)
from paper.engine.orders import Fill, Side

SAMPLE = Path(__file__).resolve().parent.parent / "paper" / "sample_data" / "ETH-USD-1d.csv"
DAY = 86400
T0 = 1_700_000_000 - 1_700_000_000 % DAY
CASH = 10_000.0
REL = 1e-9

_ids = iter(range(1_000_000))


def fill(side: str, qty: float, price: float, bar: int, fee: float = 0.0, symbol: str = "ETH-USD") -> Fill:
    n = next(_ids)
    return Fill(
        fill_id=f"f{n}",
        client_order_id=f"o{n}",
        symbol=symbol,
        side=Side(side),
        qty=qty,
        price=price,
        fee=fee,
        ts=T0 + bar * DAY,
        bar_index=bar,
    )


def metrics(equity, fills=(), timeframe="1d", starting_cash=100.0, position=None, ts=None) -> dict:
    equity = np.asarray(equity, dtype=float)
    if ts is None:
        ts = T0 + np.arange(len(equity), dtype=np.int64) * DAY
    m = compute_metrics(
        equity=equity,
        ts=ts,
        timeframe=timeframe,
        starting_cash=starting_cash,
        fills=list(fills),
        position=position,
    )
    json.dumps(m, allow_nan=False)  # every result must be strict JSON
    return m


# --- real data: ETH-USD daily, checked against empyrical ----------------------------------


@pytest.fixture(scope="module")
def eth() -> pd.DataFrame:
    df = pd.read_csv(SAMPLE, parse_dates=["Date"])
    df["ts"] = (df["Date"] - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1)
    assert len(df) > 2000 and df["Close"].notna().all()
    return df


def reference_returns(equity: np.ndarray, starting_cash: float) -> np.ndarray:
    """The return series fed to empyrical, built independently with pandas (first vs cash)."""
    r = pd.Series(equity).pct_change()
    r.iloc[0] = equity[0] / starting_cash - 1.0
    return r.to_numpy()


def check_against_empyrical(m: dict, equity: np.ndarray, starting_cash: float) -> None:
    r = reference_returns(equity, starting_cash)
    np.testing.assert_allclose(equity_returns(equity, starting_cash), r, rtol=1e-12, atol=1e-15)
    assert m["sharpe"] == pytest.approx(
        empyrical.sharpe_ratio(r, period="daily", annualization=365), rel=REL
    )
    assert m["sortino"] == pytest.approx(empyrical.sortino_ratio(r, annualization=365), rel=REL)
    assert m["max_drawdown"] == pytest.approx(-empyrical.max_drawdown(r), rel=REL)
    # The sample is gap-free daily data, so calendar years == len(r) / 365, empyrical's count.
    assert m["cagr"] == pytest.approx(empyrical.annual_return(r, annualization=365), rel=REL)


def underwater_longest_run(equity: np.ndarray, starting_cash: float) -> int:
    s = pd.Series(equity)
    peak = s.cummax().clip(lower=starting_cash)
    under = s < peak
    runs = under.groupby((under != under.shift()).cumsum()).sum()
    return int(runs.max())


def test_buy_and_hold_matches_empyrical(eth):
    close = eth["Close"].to_numpy()
    equity = CASH * close / close[0]
    m = metrics(equity, ts=eth["ts"].to_numpy(), starting_cash=CASH)
    check_against_empyrical(m, equity, CASH)
    assert m["total_return"] == pytest.approx(close[-1] / close[0] - 1, rel=1e-12)
    assert m["final_equity"] == pytest.approx(equity[-1])
    assert m["bars"] == len(eth)
    assert m["periods_per_year"] == 365.0
    assert m["max_drawdown_duration_bars"] == underwater_longest_run(equity, CASH)
    # ETH's 2018 crash is well over 90% peak-to-trough on daily closes.
    assert 0.9 < m["max_drawdown"] < 1.0


def test_first_return_is_measured_against_starting_cash(eth):
    # Bought at the first bar's open with a 0.1% fee: the first bar already moved the account,
    # and that move must be in the statistics.
    close = eth["Close"].to_numpy()
    equity = CASH * (1 - 0.001) * close / eth["Open"].iloc[0]
    r = reference_returns(equity, CASH)
    assert r[0] != 0.0
    m = metrics(equity, ts=eth["ts"].to_numpy(), starting_cash=CASH)
    check_against_empyrical(m, equity, CASH)
    dropped = np.asarray(r[1:])
    assert m["sharpe"] != pytest.approx(
        empyrical.sharpe_ratio(dropped, annualization=365), rel=1e-6
    )


def test_sma50_long_flat_matches_empyrical(eth):
    close = eth["Close"]
    signal = (close > close.rolling(50).mean()).astype(float)
    pos = signal.shift(1).fillna(0.0)  # decided on yesterday's close, held today
    cost = 0.001 * pos.diff().abs().fillna(pos.iloc[0])
    strat = pos * close.pct_change().fillna(0.0) - cost
    equity = (CASH * (1 + strat).cumprod()).to_numpy()

    m = metrics(equity, ts=eth["ts"].to_numpy(), starting_cash=CASH, position=pos.to_numpy())
    check_against_empyrical(m, equity, CASH)
    assert m["exposure"] == pytest.approx(float((pos != 0).mean()), rel=1e-12)
    assert 0.2 < m["exposure"] < 0.8
    assert m["max_drawdown_duration_bars"] == underwater_longest_run(equity, CASH)


def test_sma50_fills_round_trips_and_exposure(eth):
    close = eth["Close"]
    opens = eth["Open"].to_numpy()
    pos = (close > close.rolling(50).mean()).astype(float).shift(1).fillna(0.0).to_numpy()
    change = np.diff(np.concatenate(([0.0], pos)))
    fills = [
        fill("buy" if change[i] > 0 else "sell", 1.0, float(opens[i]), i, fee=0.5)
        for i in np.flatnonzero(change)
    ]
    entries = np.flatnonzero(change > 0)
    exits = np.flatnonzero(change < 0)
    n_closed = len(exits)
    assert n_closed > 10

    trades = round_trips(fills)
    assert len(trades) == n_closed
    assert all(t.side == "long" and t.qty == 1.0 for t in trades)
    expected_pnl = opens[exits] - opens[entries[:n_closed]] - 1.0
    np.testing.assert_allclose([t.pnl for t in trades], expected_pnl, rtol=1e-12)
    assert [t.bars_held for t in trades] == list(exits - entries[:n_closed])

    m = metrics(np.full(len(pos), CASH), fills=fills, starting_cash=CASH)
    # Rebuilt from fill bar indices it must agree with the position series.
    assert m["exposure"] == pytest.approx(float((pos != 0).mean()), rel=1e-12)
    assert m["num_trades"] == n_closed
    assert m["num_fills"] == len(fills)
    assert m["total_fees"] == pytest.approx(0.5 * len(fills))
    assert m["win_rate"] == pytest.approx(float(np.mean(expected_pnl > 0)))
    assert m["best_trade"] == pytest.approx(expected_pnl.max())
    assert m["worst_trade"] == pytest.approx(expected_pnl.min())
    assert len(entries) == n_closed + (1 if pos[-1] else 0)
    assert bool(open_positions(fills)) == bool(pos[-1])


# --- hand-computed round trips -----------------------------------------------------------


def test_simple_long():
    [t] = round_trips([fill("buy", 2, 100, 0, fee=1), fill("sell", 2, 110, 3, fee=1)])
    assert t == Trade(
        symbol="ETH-USD", side="long", entry_ts=T0, exit_ts=T0 + 3 * DAY,
        entry_price=100.0, exit_price=110.0, qty=2.0, pnl=18.0, fees=2.0,
        bars_held=3, return_pct=18 / 200,
    )


def test_simple_short():
    [t] = round_trips([fill("sell", 1, 50, 1, fee=0.5), fill("buy", 1, 40, 2, fee=0.5)])
    assert (t.side, t.entry_price, t.exit_price, t.qty) == ("short", 50.0, 40.0, 1.0)
    assert t.pnl == pytest.approx(9.0)
    assert t.return_pct == pytest.approx(9 / 50)
    assert t.bars_held == 1


def test_losing_short():
    [t] = round_trips([fill("sell", 2, 50, 0), fill("buy", 2, 60, 1)])
    assert t.side == "short" and t.pnl == pytest.approx(-20.0)


def test_partial_exits_make_one_trade():
    fills = [fill("buy", 4, 100, 0), fill("sell", 1, 110, 2), fill("sell", 3, 90, 5)]
    [t] = round_trips(fills)
    assert t.exit_price == pytest.approx((110 + 3 * 90) / 4)
    assert t.pnl == pytest.approx(110 + 270 - 400)
    assert (t.qty, t.bars_held, t.exit_ts) == (4.0, 5, T0 + 5 * DAY)
    assert round_trips(fills[:2]) == []


def test_scale_in():
    [t] = round_trips([fill("buy", 1, 100, 0), fill("buy", 3, 120, 1), fill("sell", 4, 130, 2)])
    assert t.entry_price == pytest.approx(115.0)
    assert t.qty == 4.0
    assert t.pnl == pytest.approx(4 * 130 - 460)
    assert t.return_pct == pytest.approx(60 / 460)


def test_scale_out_and_back_in_is_one_trade():
    fills = [
        fill("buy", 1, 100, 0),
        fill("sell", 0.5, 110, 1),
        fill("buy", 0.5, 100, 2),
        fill("sell", 1, 110, 3),
    ]
    [t] = round_trips(fills)
    assert t.qty == 1.0  # max position, not total bought
    assert (t.entry_price, t.exit_price) == (100.0, 110.0)
    assert t.pnl == pytest.approx(0.5 * 10 + 1 * 10)
    assert t.return_pct == pytest.approx(15 / 150)  # on everything bought: 1.5 units at 100


def test_flip_splits_fill_and_fee():
    fills = [
        fill("buy", 2, 100, 0, fee=2),
        fill("sell", 5, 110, 1, fee=5),  # closes the long 2, opens a short 3
        fill("buy", 3, 100, 4, fee=3),
    ]
    first, second = round_trips(fills)
    assert (first.side, first.qty, first.entry_price, first.exit_price) == ("long", 2.0, 100.0, 110.0)
    assert first.fees == pytest.approx(2 + 5 * 2 / 5)
    assert first.pnl == pytest.approx(20 - 4)
    assert (first.exit_ts, first.bars_held) == (T0 + DAY, 1)

    assert (second.side, second.qty, second.entry_price, second.exit_price) == ("short", 3.0, 110.0, 100.0)
    assert second.fees == pytest.approx(5 * 3 / 5 + 3)
    assert second.pnl == pytest.approx(30 - 6)
    assert (second.entry_ts, second.bars_held) == (T0 + DAY, 3)
    assert first.fees + second.fees == pytest.approx(sum(f.fee for f in fills))


def test_flip_leaves_open_remainder():
    fills = [fill("sell", 1, 100, 0, fee=1), fill("buy", 4, 90, 2, fee=4)]
    [t] = round_trips(fills)
    assert t.side == "short" and t.fees == pytest.approx(2.0) and t.pnl == pytest.approx(8.0)
    assert open_positions(fills) == {
        "ETH-USD": {
            "symbol": "ETH-USD", "side": "long", "qty": 3.0,
            "avg_entry_price": 90.0, "entry_ts": T0 + 2 * DAY, "fees": pytest.approx(3.0),
        }
    }


def test_float_residue_still_closes():
    fills = [fill("buy", 0.1, 100, 0), fill("buy", 0.2, 100, 1), fill("sell", 0.3, 101, 2)]
    assert 0.1 + 0.2 - 0.3 != 0.0
    [t] = round_trips(fills)
    assert t.pnl == pytest.approx(0.3)
    assert open_positions(fills) == {}


def test_open_trade_not_returned():
    fills = [fill("buy", 1, 100, 0), fill("sell", 1, 105, 1), fill("buy", 2, 100, 2)]
    assert len(round_trips(fills)) == 1
    assert open_positions(fills)["ETH-USD"]["qty"] == 2.0


def test_symbols_are_independent_and_ordered_by_exit():
    fills = [
        fill("buy", 1, 100, 0, symbol="ETH-USD"),
        fill("sell", 2, 10, 1, symbol="SOL-USD"),
        fill("buy", 2, 9, 2, symbol="SOL-USD"),
        fill("sell", 1, 120, 3, symbol="ETH-USD"),
    ]
    trades = round_trips(fills)
    assert [(t.symbol, t.side) for t in trades] == [("SOL-USD", "short"), ("ETH-USD", "long")]
    assert [t.pnl for t in trades] == [pytest.approx(2.0), pytest.approx(20.0)]


def test_no_fills():
    assert round_trips([]) == []
    assert open_positions([]) == {}


# --- trade statistics and exposure --------------------------------------------------------


def _trades_with_pnls(pnls):
    fills = []
    for k, p in enumerate(pnls):
        fills += [fill("buy", 1, 100, 2 * k), fill("sell", 1, 100 + p, 2 * k + 1)]
    return fills


def test_win_rate_profit_factor_and_trade_stats():
    fills = _trades_with_pnls([10, -5, 20, -10, 0])
    m = metrics(np.full(10, 100.0), fills)
    assert m["num_trades"] == 5
    assert m["num_fills"] == 10
    assert m["win_rate"] == pytest.approx(2 / 5)  # the break-even trade is not a win
    assert m["profit_factor"] == pytest.approx(30 / 15)
    assert m["avg_trade_pnl"] == pytest.approx(3.0)
    assert m["best_trade"] == pytest.approx(20.0)
    assert m["worst_trade"] == pytest.approx(-10.0)


def test_profit_factor_undefined_without_losers():
    m = metrics(np.full(4, 100.0), _trades_with_pnls([5, 1]))
    assert m["win_rate"] == 1.0
    assert m["profit_factor"] is None


def test_no_trades_stats_are_none():
    m = metrics(np.full(3, 100.0))
    assert m["num_trades"] == 0
    for key in ("win_rate", "profit_factor", "avg_trade_pnl", "best_trade", "worst_trade"):
        assert m[key] is None


def test_fees_are_summed_over_all_fills_including_open():
    fills = [fill("buy", 1, 100, 0, fee=1.5), fill("sell", 1, 100, 1, fee=1.5), fill("buy", 1, 100, 2, fee=2)]
    assert metrics(np.full(4, 100.0), fills)["total_fees"] == pytest.approx(5.0)


def test_exposure_from_fills():
    # Held at the close of bars 2, 3, 4; flat again from bar 5; in and out within bar 7.
    fills = [
        fill("buy", 1, 100, 2),
        fill("sell", 1, 100, 5),
        fill("buy", 1, 100, 7),
        fill("sell", 1, 100, 7),
    ]
    assert metrics(np.full(10, 100.0), fills)["exposure"] == pytest.approx(0.3)


def test_exposure_from_fills_short_flip_and_two_symbols():
    fills = [
        fill("sell", 1, 100, 1),
        fill("buy", 2, 100, 2),  # flips long
        fill("sell", 1, 100, 4),
        fill("buy", 1, 5, 6, symbol="SOL-USD"),
    ]
    # ETH held over bars 1-3, SOL from bar 6 to the end (bars 6-9).
    assert metrics(np.full(10, 100.0), fills)["exposure"] == pytest.approx(0.7)


def test_exposure_from_position_array_wins_over_fills():
    position = np.array([0, 1, 1, 0, -2, 0, 0, 0], dtype=float)
    m = metrics(np.full(8, 100.0), [fill("buy", 1, 100, 0)], position=position)
    assert m["exposure"] == pytest.approx(3 / 8)
    two_symbols = np.array([[0, 0], [1, 0], [0, 3], [0, 0]], dtype=float)
    assert metrics(np.full(4, 100.0), position=two_symbols)["exposure"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="position"):
        metrics(np.full(4, 100.0), position=np.zeros(3))


# --- hand-computed ratios and edge cases --------------------------------------------------


def test_hand_computed_ratios():
    m = metrics([110.0, 99.0, 108.9], starting_cash=100.0)
    # r = [+0.1, -0.1, +0.1]: the first return is against starting cash.
    mean = 0.1 / 3
    assert m["sharpe"] == pytest.approx(mean / math.sqrt(0.04 / 3) * math.sqrt(365), rel=1e-12)
    assert m["sortino"] == pytest.approx(mean / math.sqrt(0.01 / 3) * math.sqrt(365), rel=1e-12)
    assert m["max_drawdown"] == pytest.approx(0.1)
    assert m["max_drawdown_duration_bars"] == 2  # 108.9 is still below the 110 peak
    assert m["total_return"] == pytest.approx(0.089)
    assert m["cagr"] == pytest.approx(1.089 ** (365 / 3) - 1, rel=1e-9)


def test_drawdown_starts_from_starting_cash():
    m = metrics([90.0, 95.0, 101.0, 80.0, 85.0], starting_cash=100.0)
    assert m["max_drawdown"] == pytest.approx(21 / 101)
    assert m["max_drawdown_duration_bars"] == 2  # bars 0-1 below 100, then bars 3-4 below 101
    m = metrics([90.0, 95.0, 99.0, 100.0, 99.5], starting_cash=100.0)
    assert m["max_drawdown"] == pytest.approx(0.1)
    assert m["max_drawdown_duration_bars"] == 3


def test_cagr_uses_calendar_time_and_timeframe():
    ts = T0 + np.arange(24, dtype=np.int64) * 3600
    m = metrics(np.linspace(100, 101, 24), timeframe="1h", ts=ts)
    years = 24 * 3600 / (365 * DAY)
    assert m["cagr"] == pytest.approx(1.01 ** (1 / years) - 1, rel=1e-9)
    assert m["periods_per_year"] == 8760.0
    assert metrics([100.0, 101.0], timeframe="1m", ts=T0 + np.array([0, 60]))["periods_per_year"] == 525_600


def test_cagr_too_large_to_represent_is_none():
    m = metrics([150.0, 300.0], timeframe="1m", ts=T0 + np.array([0, 60]))
    assert m["cagr"] is None
    assert m["total_return"] == pytest.approx(2.0)


def test_empty_equity():
    m = metrics([], starting_cash=100.0)
    assert m["bars"] == 0
    assert m["final_equity"] == 100.0
    assert m["total_return"] == 0.0
    assert m["sharpe"] == 0.0
    assert m["max_drawdown"] == 0.0 and m["max_drawdown_duration_bars"] == 0
    assert m["cagr"] is None and m["sortino"] is None and m["exposure"] is None


def test_single_bar():
    m = metrics([110.0], starting_cash=100.0)
    assert m["bars"] == 1
    assert m["total_return"] == pytest.approx(0.1)
    assert m["sharpe"] == 0.0  # a single return has no dispersion
    assert m["sortino"] is None
    assert m["max_drawdown"] == 0.0
    assert m["cagr"] == pytest.approx(1.1**365 - 1, rel=1e-9)


def test_constant_equity():
    m = metrics(np.full(50, 100.0), starting_cash=100.0)
    assert m["sharpe"] == 0.0
    assert m["sortino"] is None
    assert m["max_drawdown"] == 0.0 and m["max_drawdown_duration_bars"] == 0
    assert m["total_return"] == 0.0 and m["cagr"] == 0.0
    assert m["exposure"] == 0.0


def test_steady_growth_has_no_spurious_sharpe():
    # Identical 1% returns: float noise in their std must not produce a Sharpe of ~1e15.
    m = metrics(100.0 * 1.01 ** np.arange(1, 31), starting_cash=100.0)
    assert m["sharpe"] == 0.0
    assert m["sortino"] is None
    assert m["total_return"] == pytest.approx(1.01**30 - 1)


def test_equity_touching_zero():
    m = metrics([100.0, 50.0, 0.0, 0.0], starting_cash=100.0)
    assert m["max_drawdown"] == 1.0
    assert m["max_drawdown_duration_bars"] == 3
    assert m["total_return"] == -1.0
    assert m["cagr"] is None
    np.testing.assert_allclose(equity_returns(np.array([100.0, 50.0, 0.0, 0.0]), 100.0), [0, -0.5, -1, 0])
    assert m["sharpe"] < 0 and m["sortino"] < 0


def test_equity_below_zero_stays_finite():
    m = metrics([100.0, -20.0, 10.0], starting_cash=100.0)
    assert m["max_drawdown"] == pytest.approx(1.2)
    # Returns after the wipe-out count as 0: r = [0, -1.2, 0].
    np.testing.assert_allclose(equity_returns(np.array([100.0, -20.0, 10.0]), 100.0), [0, -1.2, 0])
    assert m["sharpe"] == pytest.approx(-0.4 / math.sqrt(0.48) * math.sqrt(365))
    assert metrics([100.0, -20.0, -10.0], starting_cash=100.0)["cagr"] is None


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="starting_cash"):
        metrics([100.0], starting_cash=0.0)
    with pytest.raises(ValueError, match="ts"):
        metrics([100.0, 101.0], ts=np.array([T0]))
    with pytest.raises(ValueError, match="NaN"):
        metrics([100.0, float("nan")])
    with pytest.raises(ValueError, match="timeframe"):
        metrics([100.0], timeframe="2d")


def test_result_is_plain_python_types():
    m = metrics([101.0, 99.0, 102.0], _trades_with_pnls([1, -1]))
    expected_keys = {
        "total_return", "cagr", "sharpe", "sortino", "max_drawdown", "max_drawdown_duration_bars",
        "win_rate", "profit_factor", "exposure", "num_trades", "num_fills", "total_fees",
        "final_equity", "periods_per_year", "bars", "avg_trade_pnl", "best_trade", "worst_trade",
    }
    assert set(m) == expected_keys
    for key, value in m.items():
        assert value is None or type(value) in (int, float), key
    for key in ("max_drawdown_duration_bars", "num_trades", "num_fills", "bars"):
        assert type(m[key]) is int
