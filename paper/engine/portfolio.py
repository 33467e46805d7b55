"""The account of one run: cash, the position in the run's symbol, fees and realized P&L.

Equity is marked to market: cash + position x price.
"""
from __future__ import annotations

from paper.engine.orders import Fill

# Positions smaller than this are float dust from summing fills, not holdings.
_DUST = 1e-9


class Portfolio:
    __slots__ = ("symbol", "starting_cash", "cash", "position", "avg_price", "realized_pnl", "fees_paid")

    def __init__(self, symbol: str, starting_cash: float):
        self.symbol = symbol
        self.starting_cash = float(starting_cash)
        self.cash = float(starting_cash)
        self.position = 0.0
        self.avg_price = 0.0
        self.realized_pnl = 0.0
        self.fees_paid = 0.0

    def apply(self, fill: Fill) -> None:
        signed = fill.signed_qty
        self.cash -= signed * fill.price + fill.fee
        self.fees_paid += fill.fee
        old = self.position
        new = old + signed
        if abs(new) < _DUST:
            new = 0.0
        if old == 0 or (old > 0) == (signed > 0):
            # Opening or adding: the average entry price moves.
            total = abs(old) + abs(signed)
            self.avg_price = (abs(old) * self.avg_price + abs(signed) * fill.price) / total
        else:
            closed = min(abs(old), abs(signed))
            direction = 1.0 if old > 0 else -1.0
            self.realized_pnl += closed * (fill.price - self.avg_price) * direction
            if new != 0 and (new > 0) != (old > 0):
                self.avg_price = fill.price  # flipped: the remainder opened at this fill
            elif new == 0:
                self.avg_price = 0.0
        self.position = new

    def equity(self, price: float) -> float:
        return self.cash + self.position * price

    def positions(self, price: float) -> dict[str, dict]:
        """The seed's `positions` shape: {symbol: {qty, avg_price, market_value, unrealized_pnl}}."""
        if self.position == 0:
            return {}
        return {
            self.symbol: {
                "qty": self.position,
                "avg_price": self.avg_price,
                "market_value": self.position * price,
                "unrealized_pnl": (price - self.avg_price) * self.position,
            }
        }
