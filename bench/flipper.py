"""A bench-only strategy (loaded by dotted path): flips between long and flat every bar,
so every bar has an order.filled frame."""
from paper.engine.strategy import Strategy


class Flipper(Strategy):
    name = "bench_flipper"

    def on_bar(self, ctx) -> None:
        ctx.target(1.0 if ctx.i % 2 == 0 else 0.0)
