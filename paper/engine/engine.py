"""The engine: one loop driving strategy -> risk -> broker -> portfolio over bars.

Backtests and fast replays call `run(bars)`; live sessions call `extend(bars)` as bars
arrive. Both go through `_advance`, so the same bars and seed give the same fills.

Per bar i: fill open orders on bar i -> mark to market at close i -> post-bar risk check
-> strategy.on_bar (sees bars 0..i; its orders are eligible from bar i+1) -> equity point.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from paper.engine.bars import FIELDS, Bars
from paper.engine.broker import ExecutionConfig, SimulatedBroker
from paper.engine.indicators import check_causal, compute_indicator, is_builtin
from paper.engine.metrics import compute_metrics
from paper.engine.orders import Fill, Order, OrderRequest, OrderStatus, Side
from paper.engine.strategy import Strategy, StrategyContext
from risk.limits import RiskBreach, RiskLimits

# on_event(stage, message, extras): how a live session turns engine events into frames.
EventSink = Callable[[str, str, dict], None]

# Run statuses inside the engine; the ledger maps them onto its own vocabulary.
RUNNING, COMPLETED, HALTED, STOPPED = "running", "completed", "halted", "stopped"


@dataclass
class RunResult:
    status: str
    symbol: str
    timeframe: str
    source: str
    starting_cash: float
    seed: int
    ts: np.ndarray
    close: np.ndarray
    equity: np.ndarray
    cash: np.ndarray
    position: np.ndarray
    orders: list[Order]
    fills: list[Fill]
    halt: RiskBreach | None = None
    stop_reason: str = ""
    metrics: dict = field(default_factory=dict)
    # Index of the first processed bar: fills' bar_index counts warm-up bars, arrays do not.
    bar_offset: int = 0

    @property
    def open_orders(self) -> list[Order]:
        return [o for o in self.orders if o.status.is_open]

    @property
    def final_equity(self) -> float:
        return float(self.equity[-1]) if len(self.equity) else self.starting_cash

    @property
    def total_pnl(self) -> float:
        return self.final_equity - self.starting_cash

    @property
    def num_fills(self) -> int:
        return len(self.fills)

    def fills_bytes(self) -> bytes:
        """Canonical bytes of every fill: equal bytes mean identical fills."""
        return json.dumps([f.to_dict() for f in self.fills], sort_keys=True).encode()


class Engine:
    def __init__(
        self,
        *,
        strategy: Strategy,
        symbol: str,
        timeframe: str,
        starting_cash: float,
        seed: int = 0,
        risk: RiskLimits | None = None,
        execution: ExecutionConfig | None = None,
        on_event: EventSink | None = None,
    ):
        if not (isinstance(starting_cash, (int, float)) and math.isfinite(starting_cash) and starting_cash > 0):
            raise ValueError("starting_cash must be a positive number")
        self.strategy = strategy
        self.symbol = symbol
        self.timeframe = timeframe
        self.starting_cash = float(starting_cash)
        self.seed = int(seed)
        self.risk = risk or RiskLimits.from_block(None)
        self.execution = execution or ExecutionConfig()
        self.on_event = on_event
        self.broker = SimulatedBroker(
            symbol=symbol, starting_cash=starting_cash, execution=self.execution, seed=self.seed
        )
        self.source = ""
        self._cols: dict[str, list] = {"ts": [], **{k: [] for k in FIELDS}}
        self._arrays: dict[str, np.ndarray] = {}
        self._specs = strategy.indicators()
        self._ind: dict[str, list] = {name: [] for name in self._specs}
        self._causal_checked = False
        self.ctx = StrategyContext(self, self._cols, self._ind, symbol, timeframe)
        self._equity: list[float] = []
        self._cash: list[float] = []
        self._position: list[float] = []
        self._target_orders: set[str] = set()
        self.status = RUNNING
        self.halt: RiskBreach | None = None
        self.stop_reason = ""
        self._peak = self.starting_cash
        self._day: int | None = None
        self._day_start_equity = self.starting_cash
        self._last_equity = self.starting_cash
        self._started = False
        self.warmup_bars = 0

    # -- feeding bars ---------------------------------------------------------------------
    @property
    def bars_processed(self) -> int:
        return len(self._equity)

    def run(self, bars: Bars) -> RunResult:
        """Process every bar (backtest / fast replay) and return the result."""
        self.extend(bars)
        return self.result()

    def warmup(self, bars: Bars) -> None:
        """History before the run starts: indicators see it, the strategy never trades on it.

        No orders, fills or equity points come from warm-up bars. Only before the first bar.
        """
        if self._started:
            raise RuntimeError("warm-up bars must come before the first processed bar")
        self._append(bars)
        self.warmup_bars = len(self._cols["ts"])

    def _append(self, bars: Bars) -> int:
        if bars.symbol != self.symbol or bars.timeframe != self.timeframe:
            raise ValueError(
                f"bars are {bars.symbol} {bars.timeframe}, the run trades {self.symbol} {self.timeframe}"
            )
        cols = self._cols
        if len(bars) and cols["ts"] and int(bars.ts[0]) <= cols["ts"][-1]:
            raise ValueError("bars must arrive in time order, after the last processed bar")
        first_new = len(cols["ts"])
        if len(bars) == 0:
            return first_new
        self.source = bars.source
        for name in ("ts", *FIELDS):
            arr = getattr(bars, name)
            cols[name].extend(arr.tolist())
            old = self._arrays.get(name)
            self._arrays[name] = arr.copy() if old is None else np.concatenate([old, arr])
        self._compute_indicators()
        return first_new

    def preload(self, bars: Bars) -> None:
        """Append bars known in advance (a replay) without processing them; `advance` then
        processes them in steps. Indicators are computed once for all of them."""
        self._append(bars)

    def advance(self, count: int) -> int:
        """Process up to `count` loaded, unprocessed bars. Returns how many were processed."""
        if self.status != RUNNING:
            return 0
        lo = self.warmup_bars + self.bars_processed
        hi = min(len(self._cols["ts"]), lo + count)
        if hi <= lo:
            return 0
        self._start()
        before = self.bars_processed
        self._advance(lo, hi)
        return self.bars_processed - before

    def _start(self) -> None:
        if not self._started:
            self._started = True
            self.ctx.i = -1
            self.strategy.on_start(self.ctx)

    def extend(self, bars: Bars) -> int:
        """Append newly arrived bars and process them. Returns how many bars were processed."""
        if len(bars) == 0 or self.status != RUNNING:
            return 0
        if len(self._cols["ts"]) != self.warmup_bars + self.bars_processed:
            raise RuntimeError("extend() after preload(): process the loaded bars with advance() first")
        first_new = self._append(bars)
        self._start()
        before = self.bars_processed
        self._advance(first_new, len(self._cols["ts"]))
        return self.bars_processed - before

    def _compute_indicators(self) -> None:
        """Recompute every declared indicator over the bars seen so far.

        Indicators are prefix-stable (value at i depends only on bars 0..i, bit for bit),
        so computing them over a longer history never changes an earlier value.
        """
        if not self._specs:
            return
        if not self._causal_checked:
            n = len(self._arrays["ts"])
            cuts = sorted({max(1, n // 4), max(1, n // 2), max(1, (3 * n) // 4)})
            for spec in self._specs.values():
                if not is_builtin(spec.fn):
                    check_causal(spec.fn, spec.kwargs, self._arrays, cuts)
            self._causal_checked = True
        for name, spec in self._specs.items():
            values = compute_indicator(spec, self._arrays).tolist()
            target = self._ind[name]
            target[:] = values

    def _advance(self, lo: int, hi: int) -> None:
        if self.status != RUNNING:
            return
        broker = self.broker
        pf = broker.portfolio
        risk = self.risk
        bar_checks = risk.has_bar_checks
        ctx = self.ctx
        on_bar = self.strategy.on_bar
        emit = self.on_event
        cols = self._cols
        T, O, H, L, C, V = cols["ts"], cols["open"], cols["high"], cols["low"], cols["close"], cols["volume"]
        eq_out, cash_out, pos_out = self._equity.append, self._cash.append, self._position.append
        peak, day, day_start, last_eq = self._peak, self._day, self._day_start_equity, self._last_equity
        try:
            for i in range(lo, hi):
                ts = T[i]
                c = C[i]
                if emit is not None:
                    self._emit_bar(i)
                if broker.open_orders:
                    fills = broker.process_bar(i, ts, O[i], H[i], L[i], V[i])
                    if fills and emit is not None:
                        self._emit_fills(fills, c, i)
                pos = pf.position
                cash = pf.cash
                eq = cash + pos * c
                if eq > peak:
                    peak = eq
                d = ts // 86400
                if d != day:
                    day = d
                    day_start = last_eq
                last_eq = eq
                eq_out(eq)
                cash_out(cash)
                pos_out(pos)
                if bar_checks:
                    breach = risk.check_bar(
                        equity=eq, peak_equity=peak, day_start_equity=day_start,
                        exposure=abs(pos) * c, ts=ts, bar_index=i,
                    )
                    if breach is not None:
                        self._halt(breach, i)
                        if emit is not None:
                            self._emit_equity(i)
                        break
                ctx.i = i
                on_bar(ctx)
                if emit is not None:
                    self._emit_equity(i)
                if self.status != RUNNING:
                    break
        finally:
            self._peak, self._day, self._day_start_equity, self._last_equity = peak, day, day_start, last_eq

    # -- the strategy's actions (called through StrategyContext) ----------------------------
    def on_target(self, exposure: float) -> None:
        """Trade towards `exposure` x equity with a market order at the next bar's open."""
        if not math.isfinite(exposure):
            raise ValueError("target exposure must be finite")
        i = self.ctx.i
        broker = self.broker
        pf = broker.portfolio
        if exposure < 0 and not self.execution.allow_short:
            exposure = 0.0
        if self.on_event is not None:
            signal = "buy" if exposure > 0 else ("sell" if exposure < 0 else "flat")
            self._emit("signal.emitted", f"{signal} (target exposure {exposure:g})", i,
                       signal=signal, target_exposure=exposure)
        ts = self._cols["ts"][i]
        for order in list(broker.open_orders):
            if order.client_order_id in self._target_orders:
                broker.cancel(order.client_order_id, ts=ts, reason="replaced by a new target")
        price = self._cols["close"][i]
        if exposure == 0:
            delta = -pf.position
        else:
            equity = pf.cash + pf.position * price
            delta = exposure * equity / price - pf.position
        qty = broker.round_qty(delta)
        if qty <= 0:
            return
        order = self.submit(OrderRequest(side=Side.BUY if delta > 0 else Side.SELL, qty=qty))
        if order.status.is_open:
            self._target_orders.add(order.client_order_id)

    def submit(self, request: OrderRequest) -> Order:
        """Risk gate, then the broker. Orders decided on bar i are eligible from bar i+1."""
        i = self.ctx.i
        if i < 0:
            raise RuntimeError("orders can only be placed from on_bar")
        cols = self._cols
        ts = cols["ts"][i]
        broker = self.broker
        if self.status != RUNNING:
            why = f"run is {self.status}" + (f": {self.halt.message}" if self.halt else "")
            return broker.reject(request, ts=ts, bar_index=i, reason=why)
        qty = request.qty
        if isinstance(qty, (int, float)) and math.isfinite(qty) and qty > 0:
            pf = broker.portfolio
            close = cols["close"][i]
            price = request.limit_price or request.stop_price or close
            pending = sum(o.signed_remaining for o in broker.open_orders)
            signed = qty if request.side is Side.BUY else -qty
            breach = self.risk.check_order(
                signed_qty=signed, price=price, position=pf.position, pending=pending,
                equity=pf.cash + pf.position * close, ts=ts, bar_index=i,
            )
            if breach is not None:
                order = broker.reject(request, ts=ts, bar_index=i, reason=f"risk: {breach.message}")
                self._emit_order(order, i)
                if self.status == RUNNING:
                    self._halt(breach, i)
                return order
        order = broker.submit(request, ts=ts, bar_index=i)
        self._emit_order(order, i)
        return order

    def cancel(self, client_order_id: str) -> bool:
        ts = self._cols["ts"][self.ctx.i] if self.ctx.i >= 0 else 0
        return self.broker.cancel(client_order_id, ts=ts)

    # -- halting and stopping --------------------------------------------------------------
    def _halt(self, breach: RiskBreach, i: int) -> None:
        self.halt = self.risk.latch(breach)
        self.status = HALTED
        self.broker.cancel_all(ts=breach.ts, reason=f"risk halt: {breach.message}")
        if self.on_event is not None:
            self._emit("risk.halted", breach.message, i, halt=breach.to_dict())

    def stop(self, reason: str) -> None:
        """Stop from outside (operator stop, kill switch): no new orders, open ones canceled."""
        if self.status != RUNNING:
            return
        self.status = STOPPED
        self.stop_reason = reason
        ts = self._cols["ts"][-1] if self._cols["ts"] else 0
        self.broker.cancel_all(ts=ts, reason=f"run stopped: {reason}")

    # -- result ---------------------------------------------------------------------------
    def result(self) -> RunResult:
        n = self.bars_processed
        w = self.warmup_bars
        status = COMPLETED if self.status == RUNNING else self.status
        ts = np.asarray(self._cols["ts"][w : w + n], dtype=np.int64)
        equity = np.asarray(self._equity, dtype=np.float64)
        position = np.asarray(self._position, dtype=np.float64)
        fills = list(self.broker.fills)
        metrics = compute_metrics(
            equity=equity, ts=ts, timeframe=self.timeframe, starting_cash=self.starting_cash,
            fills=fills, position=position,
        )
        return RunResult(
            status=status,
            symbol=self.symbol,
            timeframe=self.timeframe,
            source=self.source,
            starting_cash=self.starting_cash,
            seed=self.seed,
            ts=ts,
            close=np.asarray(self._cols["close"][w : w + n], dtype=np.float64),
            equity=equity,
            cash=np.asarray(self._cash, dtype=np.float64),
            position=position,
            orders=list(self.broker.orders),
            fills=fills,
            halt=self.halt,
            stop_reason=self.stop_reason,
            metrics=metrics,
            bar_offset=w,
        )

    def points(self, positions) -> list[tuple[int, int, float, float, float]]:
        """(absolute bar index, ts, equity, cash, position) of these processed bars (0-based)."""
        w, ts = self.warmup_bars, self._cols["ts"]
        return [(w + k, ts[w + k], self._equity[k], self._cash[k], self._position[k]) for k in positions]

    def last_point(self) -> tuple[int, int, float, float, float]:
        """(absolute bar index, ts, equity, cash, position) of the last processed bar."""
        i = self.warmup_bars + len(self._equity) - 1
        return i, self._cols["ts"][i], self._equity[-1], self._cash[-1], self._position[-1]

    # -- events (live sessions only; backtests pass no sink) -------------------------------------
    def snapshot(self, i: int | None = None) -> dict:
        """Equity and positions marked at bar i's close (default: the last processed bar)."""
        if i is None:
            i = self.warmup_bars + self.bars_processed - 1
        pf = self.broker.portfolio
        if i < 0:
            return {"equity": pf.cash, "cash": pf.cash, "positions": {}}
        price = self._cols["close"][i]
        return {"equity": pf.equity(price), "cash": pf.cash, "positions": pf.positions(price)}

    def _emit(self, stage: str, message: str, i: int, **extras) -> None:
        ts = self._cols["ts"][i] if i >= 0 else 0
        payload = {"bar_index": i, "bar_ts": ts, **self.snapshot(i), **extras}
        self.on_event(stage, message, payload)

    def _emit_bar(self, i: int) -> None:
        c = self._cols
        bar = {k: c[k][i] for k in ("ts", *FIELDS)}
        self._emit("bar.received", f"{self.symbol} bar {i} close {bar['close']:.6g}", i, bar=bar)

    def _emit_fills(self, fills: list[Fill], close: float, i: int) -> None:
        for f in fills:
            self._emit("order.filled", f"{f.side} {f.qty:.8g} {f.symbol} @ {f.price:.6g}", i, fill=f.to_dict())

    def _emit_order(self, order: Order, i: int) -> None:
        if self.on_event is None:
            return
        if order.status is OrderStatus.REJECTED:
            self._emit("order.rejected", f"{order.side} {order.qty:.8g} rejected: {order.reason}", i,
                       order=order.to_dict())
        else:
            self._emit("order.placed", f"{order.side} {order.qty:.8g} {order.symbol} {order.type}", i,
                       order=order.to_dict())

    def _emit_equity(self, i: int) -> None:
        self._emit("equity.update", f"equity {self._equity[-1]:.2f}", i)
