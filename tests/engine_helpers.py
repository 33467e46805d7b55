"""Shared helpers for engine tests: hand-built bars and a strategy that places scripted orders.

A script maps a bar index to the orders decided on that bar's close, each as keyword
arguments for `ctx.buy` / `ctx.sell` plus a `side` key, e.g.

    {0: [buy(10)], 3: [sell(5, type="limit", limit=101.0, tif="ioc")], 4: [{"cancel": "o000002"}]}
"""
from __future__ import annotations

import math
from collections.abc import Sequence

from paper.engine.bars import Bars
from paper.engine.broker import ExecutionConfig
from paper.engine.engine import Engine, RunResult
from paper.engine.orders import Order, OrderStatus
from paper.engine.strategy import Strategy, StrategyContext

SYMBOL = "TST"
TIMEFRAME = "1d"
DAY = 86400
T0 = 1_700_000_000
CASH = 100_000.0

# Fees and slippage all zero: tests switch on only what they check.
NO_COSTS = {"maker_fee_bps": 0.0, "taker_fee_bps": 0.0, "slippage_bps": 0.0}


def ts_of(k: int) -> int:
    return T0 + k * DAY


def make_bars(rows: Sequence[Sequence[float]], *, volume: float = 1_000_000.0) -> Bars:
    """Bars from rows of (open, high, low, close) or (open, high, low, close, volume)."""
    n = len(rows)
    return Bars.from_columns(
        symbol=SYMBOL,
        timeframe=TIMEFRAME,
        ts=[ts_of(k) for k in range(n)],
        open=[r[0] for r in rows],
        high=[r[1] for r in rows],
        low=[r[2] for r in rows],
        close=[r[3] for r in rows],
        volume=[r[4] if len(r) > 4 else volume for r in rows],
    )


def buy(qty, **kw) -> dict:
    return {"side": "buy", "qty": qty, **kw}


def sell(qty, **kw) -> dict:
    return {"side": "sell", "qty": qty, **kw}


class ScriptedStrategy(Strategy):
    """Places pre-scripted orders on given bars and records what it saw.

    `placed` holds (decision bar, Order returned by ctx.buy/sell) in placement order;
    `log[i]` holds, for every order placed up to bar i, (status, filled_qty) at the end of on_bar(i)
    (after bar i's fills and the strategy's own actions on bar i).
    """

    def __init__(self, script: dict[int, list[dict]] | None = None):
        super().__init__()
        self.script = script or {}
        self.placed: list[tuple[int, Order]] = []
        self.log: dict[int, dict[str, tuple[OrderStatus, float]]] = {}

    def on_bar(self, ctx: StrategyContext) -> None:
        for spec in self.script.get(ctx.i, ()):
            kw = dict(spec)
            if "cancel" in kw:
                ctx.cancel(kw["cancel"])
                continue
            side = kw.pop("side")
            order = getattr(ctx, side)(**kw)
            self.placed.append((ctx.i, order))
        self.log[ctx.i] = {o.client_order_id: (o.status, o.filled_qty) for _, o in self.placed}

    def order(self, n: int = 0) -> Order:
        """The n-th order placed (as returned to the strategy)."""
        return self.placed[n][1]


def run_script(
    rows_or_bars,
    script: dict[int, list[dict]],
    *,
    starting_cash: float = CASH,
    seed: int = 0,
    **execution,
) -> tuple[RunResult, ScriptedStrategy]:
    """Run `script` over bars (rows or a Bars). `execution` overrides ExecutionConfig fields;
    fees and slippage default to zero."""
    bars = rows_or_bars if isinstance(rows_or_bars, Bars) else make_bars(rows_or_bars)
    strategy = ScriptedStrategy(script)
    engine = Engine(
        strategy=strategy,
        symbol=SYMBOL,
        timeframe=TIMEFRAME,
        starting_cash=starting_cash,
        seed=seed,
        execution=ExecutionConfig(**{**NO_COSTS, **execution}),
    )
    return engine.run(bars), strategy


def fill_bar_ok(result: RunResult, bars: Bars) -> list[str]:
    """Problems with the basic fill invariants: price inside [low, high] of the fill bar
    and fill bar after the decision bar. Empty when all is well."""
    created = {o.client_order_id: o.created_bar for o in result.orders}
    problems = []
    for f in result.fills:
        lo, hi = float(bars.low[f.bar_index]), float(bars.high[f.bar_index])
        if not (lo <= f.price <= hi):
            problems.append(f"{f.fill_id} price {f.price!r} outside [{lo!r}, {hi!r}]")
        if not f.bar_index > created[f.client_order_id]:
            problems.append(f"{f.fill_id} on bar {f.bar_index}, decided on {created[f.client_order_id]}")
        if not (f.qty > 0 and math.isfinite(f.qty)):
            problems.append(f"{f.fill_id} qty {f.qty!r}")
    return problems
