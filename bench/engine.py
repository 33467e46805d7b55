"""Engine benchmark: SMA crossover over 200,000 synthetic 1-minute bars, full engine, no DB.

Also times persisting a run with >= 2,000 fills to the ledger (on DATABASE_URL or SQLite).
Usage: .venv/bin/python bench/engine.py [--bars 200000] [--repeat 5] [--skip-persist]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def engine_once(bars, config) -> tuple[float, object]:
    engine = config.build_engine(starting_cash=100_000.0, seed=7)
    t0 = time.perf_counter()
    result = engine.run(bars)
    return time.perf_counter() - t0, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bars", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-persist", action="store_true")
    args = parser.parse_args()

    from paper.engine.botconfig import BotConfig
    from paper.engine.synthetic import synthetic_bars

    bars = synthetic_bars("SYN-USD", "1m", args.bars, seed=42)
    config = BotConfig.validate(
        strategy="sma_crossover",
        params={"fast": 20, "slow": 80},
        symbols=["SYN-USD"],
        timeframe="1m",
        risk={"max_drawdown_pct": 90, "max_position_pct": 150, "max_order_notional": 1e9,
              "max_orders_per_minute": 10, "max_daily_loss_pct": 50},
    )
    times = []
    result = None
    for _ in range(args.repeat):
        elapsed, result = engine_once(bars, config)
        times.append(elapsed)
    best = min(times)
    med = statistics.median(times)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"engine: {args.bars:,} synthetic 1m bars, sma_crossover(20,80), risk limits on, "
          f"{result.num_fills:,} fills, status {result.status}")
    print(f"engine: best {best:.3f} s = {args.bars / best:,.0f} bars/s; median {med:.3f} s = {args.bars / med:,.0f} bars/s "
          f"(target >= 300,000 bars/s)")
    if args.skip_persist:
        return
    persist(result, config)


def persist(result, config) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    if "DATABASE_URL" not in os.environ:
        os.environ["DATABASE_URL"] = "sqlite:////tmp/papertrade-bench.sqlite3"
    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    from bots.models import Bot
    from ledger.models import PaperTradingRun
    from ledger.services import run_create, run_persist

    bot, _ = Bot.objects.get_or_create(
        name="bench-bot",
        defaults=dict(strategy=config.strategy, params=config.params, symbols=list(config.symbols),
                      timeframe=config.timeframe, risk=config.risk),
    )
    # Persist a slice of the run holding at least 2,000 fills (fills + orders + equity points).
    run = run_create(bot=bot, starting_cash=result.starting_cash, symbol=result.symbol, timeframe=result.timeframe,
                     data_source="synthetic", seed=result.seed, config_snapshot=config.canonical(),
                     config_hash=config.config_hash, mode="replay")
    t0 = time.perf_counter()
    run_persist(run=run, result=result, status="success", status_reason="completed")
    elapsed = time.perf_counter() - t0
    print(f"persist ({connection.vendor}): {result.num_fills:,} fills, {len(result.orders):,} orders, "
          f"{len(result.equity):,} equity points in one transaction: {elapsed:.3f} s")
    t0 = time.perf_counter()
    run_persist(run=run, result=result, status="success", status_reason="completed")
    print(f"persist again (idempotent, nothing duplicated): {time.perf_counter() - t0:.3f} s; "
          f"fills in ledger {PaperTradingRun.objects.get(pk=run.pk).fills.count():,}")


if __name__ == "__main__":
    main()
