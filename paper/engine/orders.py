"""Orders and fills: the values that flow between strategy, risk, broker and ledger.

Order lifecycle: new -> accepted -> partially_filled / filled / canceled / rejected.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"
    STOP_LIMIT = "stop_limit"


class TimeInForce(StrEnum):
    GTC = "gtc"  # good till canceled: rests until filled, canceled or the run ends
    IOC = "ioc"  # immediate or cancel: only the first eligible bar, remainder canceled


class OrderStatus(StrEnum):
    NEW = "new"
    ACCEPTED = "accepted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELED = "canceled"
    REJECTED = "rejected"

    @property
    def is_open(self) -> bool:
        return self in (OrderStatus.NEW, OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED)


class Liquidity(StrEnum):
    MAKER = "maker"
    TAKER = "taker"


@dataclass(slots=True)
class Order:
    client_order_id: str
    symbol: str
    side: Side
    type: OrderType
    qty: float
    limit_price: float | None = None
    stop_price: float | None = None
    tif: TimeInForce = TimeInForce.GTC
    status: OrderStatus = OrderStatus.NEW
    created_ts: int = 0  # decision time: ts of the bar on whose close it was placed
    created_bar: int = -1  # index of that bar; the order is eligible from created_bar + 1
    updated_ts: int = 0
    filled_qty: float = 0.0
    avg_fill_price: float = 0.0
    reason: str = ""  # why it was rejected or canceled
    triggered: bool = False  # stop / stop-limit: has the stop been touched?

    @property
    def remaining(self) -> float:
        return self.qty - self.filled_qty

    @property
    def signed_remaining(self) -> float:
        return self.remaining if self.side is Side.BUY else -self.remaining

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("side", "type", "tif", "status"):
            d[k] = str(d[k])
        return d


@dataclass(slots=True, frozen=True)
class Fill:
    fill_id: str
    client_order_id: str
    symbol: str
    side: Side
    qty: float
    price: float
    fee: float
    ts: int  # ts of the bar it filled on
    bar_index: int
    liquidity: Liquidity = Liquidity.TAKER

    @property
    def signed_qty(self) -> float:
        return self.qty if self.side is Side.BUY else -self.qty

    def to_dict(self) -> dict:
        return {
            "fill_id": self.fill_id,
            "order_id": self.client_order_id,
            "symbol": self.symbol,
            "side": str(self.side),
            "qty": self.qty,
            "price": self.price,
            "fee": self.fee,
            "ts": self.ts,
            "bar_index": self.bar_index,
            "liquidity": str(self.liquidity),
        }


@dataclass(slots=True)
class OrderRequest:
    """What a strategy asks for; the broker turns it into an Order (or a rejection)."""

    side: Side
    qty: float
    type: OrderType = OrderType.MARKET
    limit_price: float | None = None
    stop_price: float | None = None
    tif: TimeInForce = TimeInForce.GTC
    client_order_id: str | None = None
    tags: dict = field(default_factory=dict)
