"""`manage.py backtest BOT [--start] [--end]`: run a backtest and print its metrics."""
import json
from datetime import date

from django.core.management.base import BaseCommand, CommandError

from bots.services import backtest_run, bot_get
from config.errors import AppError


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"not a date (YYYY-MM-DD): {value!r}", returncode=2) from None


class Command(BaseCommand):
    help = "Backtest a bot (by id or name) over stored bars or synthetic data, and print its metrics."

    def add_arguments(self, parser):
        parser.add_argument("bot", help="bot id or name")
        parser.add_argument("--start", type=str, help="first day, YYYY-MM-DD (default: all data)")
        parser.add_argument("--end", type=str, help="last day, YYYY-MM-DD, inclusive")
        parser.add_argument("--symbol", help="one of the bot's symbols (default: the first)")
        parser.add_argument("--data-source", choices=["stored", "synthetic"], default="stored")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--starting-cash", type=float, default=100_000.0)
        parser.add_argument("--json", action="store_true", help="print the metrics as JSON")

    def handle(self, *args, **opts):
        start = _date(opts["start"]) if opts["start"] else None
        end = _date(opts["end"]) if opts["end"] else None
        try:
            bot = bot_get(bot_ref=opts["bot"])
            run = backtest_run(
                bot=bot, start=start, end=end, symbol=opts["symbol"], data_source=opts["data_source"],
                seed=opts["seed"], starting_cash=opts["starting_cash"],
            )
        except AppError as exc:
            raise CommandError(exc.message, returncode=2) from None
        if opts["json"]:
            self.stdout.write(json.dumps({"backtest_id": run.pk, "bot": bot.name, **run.metrics}, indent=2))
            return
        self.stdout.write(format_backtest(run))


def format_backtest(run) -> str:
    m = run.metrics

    def pct(x):
        return "n/a" if x is None else f"{x * 100:.2f}%"

    def num(x, fmt=".3f"):
        return "n/a" if x is None else format(x, fmt)

    lines = [
        f"backtest {run.pk} of bot {run.bot.name!r} ({run.bot.strategy}) on {m.get('data_label', run.symbol)}",
        f"  bars {run.num_bars}  {run.start:%Y-%m-%d} .. {run.end:%Y-%m-%d}  status {run.status}"
        + (f" ({run.halt['message']})" if run.halt else ""),
        f"  total return {pct(m.get('total_return'))}   CAGR {pct(m.get('cagr'))}   final equity {num(m.get('final_equity'), ',.2f')}",
        f"  sharpe {num(m.get('sharpe'))}   sortino {num(m.get('sortino'))}   max drawdown {pct(m.get('max_drawdown'))}",
        f"  trades {m.get('num_trades')}   win rate {pct(m.get('win_rate'))}   profit factor {num(m.get('profit_factor'))}   "
        f"exposure {pct(m.get('exposure'))}   fills {run.num_fills}   fees {num(m.get('total_fees'), ',.2f')}",
        f"  config {run.config_hash[:12]}  engine time {run.duration_ms:.1f} ms",
    ]
    return "\n".join(lines)
