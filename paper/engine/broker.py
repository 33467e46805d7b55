"""The simulated broker: accepts orders, matches them against OHLC bars, charges fees.

One broker serves backtests, fast replays and live-paced sessions. The fill rules:

    Orders placed on bar N (at its close) are eligible from bar N+1. On each eligible bar
    with open O, high H, low L (all prices below are clamped to [L, H]):

    | order            | condition on the bar                  | fill price                 | liquidity |
    |------------------|---------------------------------------|----------------------------|-----------|
    | market buy       | always                                | O x (1 + slippage)         | taker     |
    | market sell      | always                                | O x (1 - slippage)         | taker     |
    | limit buy @P     | O < P (favourable gap)                | O                          | maker     |
    |                  | else L < P (trades strictly through)  | P                          | maker     |
    |                  | else (L >= P, touching is not enough) | no fill                    |           |
    | limit sell @P    | O > P (favourable gap)                | O                          | maker     |
    |                  | else H > P                            | P                          | maker     |
    |                  | else                                  | no fill                    |           |
    | stop buy @S      | O >= S (adverse gap)                  | O x (1 + slippage)         | taker     |
    |                  | else H >= S (touch triggers)          | S x (1 + slippage)         | taker     |
    | stop sell @S     | O <= S (adverse gap)                  | O x (1 - slippage)         | taker     |
    |                  | else L <= S                           | S x (1 - slippage)         | taker     |
    | stop-limit buy   | triggers like a stop buy at price T;  | T x (1 + slippage), capped | taker     |
    |   @S limit P     | fills there if T <= P, else rests as  | at P                       |           |
    |                  | a limit buy @P from the next bar      | as a limit buy @P (above)  | maker     |
    | stop-limit sell  | mirror of the buy                     |                            |           |

    - slippage = slippage_bps/1e4 + slippage_volume_bps/1e4 x (qty / bar volume)
      + U(0, slippage_jitter_bps)/1e4 drawn from the run's own seeded generator.
    - No fill is ever outside the bar's [low, high]: slipped prices are clamped.
    - Partial fills: with max_volume_fraction f, a fill takes at most f x bar volume; the
      rest stays open (GTC) or is canceled (IOC).
    - IOC orders live for their first eligible bar only; the unfilled remainder is canceled.
    - Buying power: the part of a buy that opens or adds to a long position is cut to what
      cash (after covering any short) can pay, fee included; if nothing is affordable the
      order is canceled ("insufficient cash").
    - Long-only bots: a sell is cut to the long position (it can only reduce it) and the
      rest is canceled; a sell with nothing to sell is rejected at submission.
    - Fees: notional x maker_fee_bps/1e4 or taker_fee_bps/1e4 by liquidity.
    - Orders still open when the data ends stay open and are reported as open.
"""
from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from paper.engine.orders import (
    Fill,
    Liquidity,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)
from paper.engine.portfolio import Portfolio


class ExecutionConfig(BaseModel):
    """Fees, slippage and fill options of the simulated venue (the bot's execution block)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    maker_fee_bps: float = Field(2.0, ge=0, le=1000)
    taker_fee_bps: float = Field(5.0, ge=0, le=1000)
    slippage_bps: float = Field(2.0, ge=0, le=1000)
    slippage_volume_bps: float = Field(0.0, ge=0, le=100_000, description="extra bps at 100% of bar volume")
    slippage_jitter_bps: float = Field(0.0, ge=0, le=1000, description="uniform random extra bps, seeded")
    max_volume_fraction: float | None = Field(None, gt=0, le=1, description="cap a fill at this share of bar volume")
    allow_short: bool = False
    qty_step: float = Field(1e-8, ge=1e-12, le=1e6, description="quantities are rounded down to this step")


def match_price(order: Order, o: float, h: float, l: float) -> tuple[float | None, Liquidity]:
    """The raw fill price of `order` on a bar (before slippage), per the table above.

    Pure: it only sets `order.triggered` for stop-limit orders whose stop was touched.
    """
    side = order.side
    kind = order.type
    if kind is OrderType.MARKET:
        return o, Liquidity.TAKER
    if kind is OrderType.LIMIT or (kind is OrderType.STOP_LIMIT and order.triggered):
        p = order.limit_price
        if side is Side.BUY:
            if o < p:
                return o, Liquidity.MAKER
            if l < p:
                return p, Liquidity.MAKER
        else:
            if o > p:
                return o, Liquidity.MAKER
            if h > p:
                return p, Liquidity.MAKER
        return None, Liquidity.MAKER
    # STOP, or a STOP_LIMIT not yet triggered
    s = order.stop_price
    if side is Side.BUY:
        trigger = o if o >= s else (s if h >= s else None)
    else:
        trigger = o if o <= s else (s if l <= s else None)
    if trigger is None:
        return None, Liquidity.TAKER
    if kind is OrderType.STOP:
        return trigger, Liquidity.TAKER
    order.triggered = True
    p = order.limit_price
    if (side is Side.BUY and trigger <= p) or (side is Side.SELL and trigger >= p):
        return trigger, Liquidity.TAKER
    return None, Liquidity.TAKER  # rests as a limit from the next bar


class SimulatedBroker:
    def __init__(self, *, symbol: str, starting_cash: float, execution: ExecutionConfig, seed: int):
        self.symbol = symbol
        self.execution = execution
        self.portfolio = Portfolio(symbol, starting_cash)
        # One generator per run, never the global one.
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.orders: list[Order] = []
        self.open_orders: list[Order] = []
        self.fills: list[Fill] = []
        self._ids: set[str] = set()
        self._order_seq = 0
        self._fill_seq = 0
        self._step = execution.qty_step
        self._maker = execution.maker_fee_bps / 1e4
        self._taker = execution.taker_fee_bps / 1e4
        self._slip = execution.slippage_bps / 1e4

    # -- submission ---------------------------------------------------------------------
    def next_order_id(self) -> str:
        while True:
            self._order_seq += 1
            oid = f"o{self._order_seq:06d}"
            if oid not in self._ids:
                return oid

    def round_qty(self, qty: float) -> float:
        step = self._step
        # The tolerance absorbs float dust from summing fills (0.1 + 0.2 style).
        return math.floor(abs(qty) / step + 1e-6) * step

    def submit(self, request: OrderRequest, *, ts: int, bar_index: int) -> Order:
        """Validate and accept (or reject, with a reason) an order decided on bar `bar_index`."""
        oid = request.client_order_id or self.next_order_id()
        order = Order(
            client_order_id=oid,
            symbol=self.symbol,
            side=request.side,
            type=request.type,
            qty=float(request.qty) if _finite(request.qty) else request.qty,
            limit_price=request.limit_price,
            stop_price=request.stop_price,
            tif=request.tif,
            created_ts=ts,
            created_bar=bar_index,
            updated_ts=ts,
        )
        reason = self._refuse(order)
        if oid in self._ids:
            # A duplicate id is refused and not recorded under that id again.
            order.status = OrderStatus.REJECTED
            order.reason = f"duplicate client_order_id {oid!r}"
            return order
        self._ids.add(oid)
        self.orders.append(order)
        if reason:
            order.status = OrderStatus.REJECTED
            order.reason = reason
            return order
        order.qty = self.round_qty(order.qty)
        order.status = OrderStatus.ACCEPTED
        self.open_orders.append(order)
        return order

    def reject(self, request: OrderRequest, *, ts: int, bar_index: int, reason: str) -> Order:
        """Record an order the risk gate refused before it reached the venue."""
        oid = request.client_order_id or self.next_order_id()
        order = Order(
            client_order_id=oid, symbol=self.symbol, side=request.side, type=request.type,
            qty=request.qty, limit_price=request.limit_price, stop_price=request.stop_price,
            tif=request.tif, created_ts=ts, created_bar=bar_index, updated_ts=ts,
            status=OrderStatus.REJECTED, reason=reason,
        )
        if oid not in self._ids:
            self._ids.add(oid)
            self.orders.append(order)
        return order

    def _refuse(self, order: Order) -> str:
        if not _finite(order.qty) or order.qty <= 0:
            return "qty must be a positive number"
        if self.round_qty(order.qty) <= 0:
            return f"qty {order.qty} is below the quantity step {self._step}"
        needs_limit = order.type in (OrderType.LIMIT, OrderType.STOP_LIMIT)
        needs_stop = order.type in (OrderType.STOP, OrderType.STOP_LIMIT)
        if needs_limit and (not _finite(order.limit_price) or order.limit_price <= 0):
            return f"{order.type} order needs a positive limit price"
        if needs_stop and (not _finite(order.stop_price) or order.stop_price <= 0):
            return f"{order.type} order needs a positive stop price"
        if not needs_limit and order.limit_price is not None:
            return f"{order.type} order takes no limit price"
        if not needs_stop and order.stop_price is not None:
            return f"{order.type} order takes no stop price"
        if order.side is Side.SELL and not self.execution.allow_short:
            pending_sells = sum(o.remaining for o in self.open_orders if o.side is Side.SELL)
            if self.portfolio.position - pending_sells <= 0:
                return "short selling is not allowed for a long-only bot"
        return ""

    # -- cancel -----------------------------------------------------------------------------
    def cancel(self, client_order_id: str, *, ts: int, reason: str = "canceled by strategy") -> bool:
        for order in self.open_orders:
            if order.client_order_id == client_order_id:
                self._close(order, OrderStatus.CANCELED, ts, reason)
                self.open_orders = [o for o in self.open_orders if o.status.is_open]
                return True
        return False

    def cancel_all(self, *, ts: int, reason: str) -> list[Order]:
        canceled = list(self.open_orders)
        for order in canceled:
            self._close(order, OrderStatus.CANCELED, ts, reason)
        self.open_orders = []
        return canceled

    @staticmethod
    def _close(order: Order, status: OrderStatus, ts: int, reason: str) -> None:
        order.status = status
        order.reason = reason
        order.updated_ts = ts

    # -- matching ------------------------------------------------------------------------------
    def process_bar(self, i: int, ts: int, o: float, h: float, l: float, v: float) -> list[Fill]:
        """Match every open order eligible on bar `i`; apply fills to the portfolio."""
        new_fills: list[Fill] = []
        ex = self.execution
        pf = self.portfolio
        for order in self.open_orders:
            if order.created_bar >= i or not order.status.is_open:
                continue
            raw, liquidity = match_price(order, o, h, l)
            if raw is not None:
                qty = order.remaining
                if ex.max_volume_fraction is not None:
                    qty = min(qty, self.round_qty(ex.max_volume_fraction * v))
                cut_to_position = False
                if order.side is Side.SELL and not ex.allow_short:
                    held = self.round_qty(max(pf.position, 0.0))
                    if qty > held:
                        qty, cut_to_position = held, True
                taker = liquidity is Liquidity.TAKER
                # Drawn once per fill attempt, so the run's generator advances the same way every run.
                jitter = self.rng.uniform(0.0, ex.slippage_jitter_bps) / 1e4 if taker and ex.slippage_jitter_bps else 0.0
                price = self._fill_price(order, raw, taker, qty, v, jitter, l, h)
                fee_rate = self._maker if liquidity is Liquidity.MAKER else self._taker
                if order.side is Side.BUY:
                    # Covering a short is never cut; the part that opens or adds to a long is
                    # cut to what the cash left after covering can pay.
                    cover = max(-pf.position, 0.0)
                    if qty > cover:
                        cost_per_unit = price * (1 + fee_rate)
                        room = self._affordable_buy(pf.cash - cover * cost_per_unit, cost_per_unit)
                        if qty - cover > room:
                            qty = cover + room
                            # Volume slippage is priced on the qty that really fills (never dearer).
                            price = self._fill_price(order, raw, taker, qty, v, jitter, l, h)
                if qty <= 0:
                    why = "insufficient cash" if order.side is Side.BUY else "no position left to sell"
                    if ex.max_volume_fraction is not None and v * ex.max_volume_fraction < self._step:
                        why = "no volume on the bar"
                        if order.tif is TimeInForce.GTC:
                            continue  # wait for a bar with volume
                    self._close(order, OrderStatus.CANCELED, ts, why)
                    continue
                self._fill_seq += 1
                fill = Fill(
                    fill_id=f"f{self._fill_seq:06d}",
                    client_order_id=order.client_order_id,
                    symbol=self.symbol,
                    side=order.side,
                    qty=qty,
                    price=price,
                    fee=qty * price * fee_rate,
                    ts=ts,
                    bar_index=i,
                    liquidity=liquidity,
                )
                pf.apply(fill)
                new_fills.append(fill)
                filled = order.filled_qty + qty
                order.avg_fill_price = (order.avg_fill_price * order.filled_qty + price * qty) / filled
                order.filled_qty = filled
                order.updated_ts = ts
                if order.remaining <= self._step / 2:
                    order.status = OrderStatus.FILLED
                else:
                    order.status = OrderStatus.PARTIALLY_FILLED
                if cut_to_position and order.status.is_open:
                    # A long-only sell can only reduce the position: the rest must not wait to
                    # sell a position bought later.
                    self._close(order, OrderStatus.CANCELED, ts, "long-only: remainder beyond the position canceled")
            if order.status.is_open and order.tif is TimeInForce.IOC:
                self._close(order, OrderStatus.CANCELED, ts, "ioc: unfilled remainder canceled")
        self.open_orders = [o for o in self.open_orders if o.status.is_open]
        self.fills.extend(new_fills)
        return new_fills

    def _fill_price(self, order: Order, raw: float, taker: bool, qty: float, v: float,
                    jitter: float, l: float, h: float) -> float:
        """Slip a taker fill against the trader, cap stop-limits at their limit, clamp to [low, high]."""
        price = raw
        if taker:
            slip = self._slip + jitter
            vol_bps = self.execution.slippage_volume_bps
            if vol_bps and v > 0:
                slip += vol_bps / 1e4 * (qty / v)
            price = raw * (1 + slip) if order.side is Side.BUY else raw * (1 - slip)
            if order.type is OrderType.STOP_LIMIT:
                lp = order.limit_price
                price = min(price, lp) if order.side is Side.BUY else max(price, lp)
        return min(max(price, l), h)

    def _affordable_buy(self, cash: float, cost_per_unit: float) -> float:
        """The largest qty on the step grid whose cost, fee included, `cash` can pay (never rounds up)."""
        if cash <= 0:
            return 0.0
        step = self._step
        qty = math.floor(cash / cost_per_unit / step) * step
        while qty > 0 and qty * cost_per_unit > cash:
            # Past 2**53 steps, `qty - step` is `qty` again in float64 (the step is below the
            # number's resolution): step down by one unit in the last place instead, which
            # takes a few iterations, not forever.
            lower = qty - step
            qty = lower if lower < qty else math.nextafter(qty, 0.0)
        return max(qty, 0.0)


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
