"""Writes for bots: create, update, delete, run a backtest, and the paper metadata gate.

Every rule about bots lives here; the API, admin and commands call these functions.
"""
from __future__ import annotations

import math
import time
import unicodedata
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from bots.models import BacktestRun, Bot
from config.errors import AppError, Conflict, NotFound
from paper.engine.bars import Bars, timeframe_seconds
from paper.engine.botconfig import BotConfigError
from paper.engine.engine import RunResult
from paper.engine.synthetic import synthetic_bars

EQUITY_POINTS_KEPT = 5000
# A synthetic backtest generates its bars in memory: two years of minutes is the ceiling.
MAX_SYNTHETIC_BARS = 1_100_000
# The same bounds the API's schemas state, for every other caller (commands, dashboard, scripts).
MAX_STARTING_CASH = 1e12
MAX_SEED = 2**63 - 1
BOT_ID_MAX = 2**63 - 1
NAME_MAX_LENGTH = Bot._meta.get_field("name").max_length


def _invalid(code: str, field: str, message: str, status: int = 422) -> AppError:
    return AppError(code, message, status=status, details=[{"field": field, "message": message}])


def _name_checked(name) -> None:
    """A bot's name is text an operator can read and type: not blank, no control characters."""
    if not isinstance(name, str):
        raise _invalid("invalid_bot", "name", f"name must be text, not {type(name).__name__}", status=400)
    if not name.strip():
        raise _invalid("invalid_bot", "name", "name must not be blank", status=400)
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in name):
        raise _invalid("invalid_bot", "name", "name must not contain control characters", status=400)


def backtest_inputs_check(*, starting_cash, seed) -> tuple[float, int]:
    """starting_cash in (0, 1e12] and finite, seed an integer in [0, 2**63): or a 422 naming the field."""
    if isinstance(starting_cash, bool) or not isinstance(starting_cash, (int, float)) \
            or not math.isfinite(starting_cash) or starting_cash <= 0:
        raise _invalid("invalid_backtest", "starting_cash", "starting_cash must be a positive number")
    if starting_cash > MAX_STARTING_CASH:
        raise _invalid("invalid_backtest", "starting_cash", f"starting_cash must be at most {MAX_STARTING_CASH:g}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise _invalid("invalid_backtest", "seed", f"seed must be an integer from 0 to {MAX_SEED}")
    return float(starting_cash), seed


def _validation_details(exc: ValidationError) -> list[dict]:
    details = []
    for field, messages in exc.message_dict.items():
        for m in messages:
            details.append({"field": field, "message": m})
    return details


def bot_create(
    *,
    name: str,
    strategy: str,
    symbols: list[str],
    timeframe: str = "1d",
    params: dict | None = None,
    risk: dict | None = None,
    execution: dict | None = None,
    owner=None,
) -> Bot:
    """A new bot; `owner` (a user) may change it (bots/permissions.py), None makes a staff-only bot."""
    _name_checked(name)
    bot = Bot(
        name=name,
        owner=owner,
        strategy=strategy,
        params=params or {},
        symbols=symbols,
        timeframe=timeframe,
        risk=risk or {},
        execution=execution or {},
    )
    try:
        bot.save()
    except ValidationError as exc:
        details = _validation_details(exc)
        raise AppError("invalid_bot", "; ".join(d["message"] for d in details), details=details) from None
    return bot


def bot_update(*, bot: Bot, **changes) -> Bot:
    allowed = {"name", "strategy", "params", "symbols", "timeframe", "risk", "execution"}
    unknown = set(changes) - allowed
    if unknown:
        raise AppError("invalid_bot", f"unknown fields: {', '.join(sorted(unknown))}")
    if "name" in changes:
        _name_checked(changes["name"])
    for key, value in changes.items():
        setattr(bot, key, value)
    try:
        bot.save()
    except ValidationError as exc:
        bot.refresh_from_db()
        details = _validation_details(exc)
        raise AppError("invalid_bot", "; ".join(d["message"] for d in details), details=details) from None
    return bot


def bot_delete(*, bot: Bot) -> None:
    """Delete a bot and its backtests; a bot with paper runs stays (the ledger keeps them)."""
    from ledger.models import PaperTradingRun

    if PaperTradingRun.objects.filter(bot=bot).exists():
        raise Conflict("bot_has_paper_runs",
                       f"bot {bot.pk} has paper runs; the ledger keeps them, so the bot cannot be deleted")
    bot.delete()


def bot_get(*, bot_ref: str | int) -> Bot:
    """A bot by id or by name."""
    ref = str(bot_ref)
    # ASCII digits only ("١٢٣".isdigit() is true too), and no int() of a 5,000-digit string.
    is_id = ref.isascii() and ref.isdigit() and len(ref) <= 19 and int(ref) <= BOT_ID_MAX
    bot = Bot.objects.select_related("owner").filter(pk=int(ref)).first() if is_id else None
    # A name longer than the column, or with a NUL (PostgreSQL refuses it in a query), names no bot.
    if bot is None and len(ref) <= NAME_MAX_LENGTH and "\x00" not in ref:
        bot = Bot.objects.select_related("owner").filter(name=ref).first()
    if bot is None:
        shown = ref if len(ref) <= 60 else f"{ref[:60]}..."
        raise NotFound("bot_not_found", f"no bot with id or name {shown!r}")
    return bot


def _as_datetime(value: date | datetime | None, *, end: bool = False) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if timezone.is_aware(value) else value.replace(tzinfo=UTC)
    if end:  # the day's last second (not day + 1 - 1 s, which overflows on 9999-12-31)
        return datetime(value.year, value.month, value.day, 23, 59, 59, tzinfo=UTC)
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


def backtest_bars(
    *,
    bot: Bot,
    symbol: str | None = None,
    start: date | datetime | None = None,
    end: date | datetime | None = None,
    data_source: str = "stored",
    seed: int = 0,
    synthetic_count: int | None = None,
) -> Bars:
    """The bars a backtest reads: from the bar store, or from the seeded synthetic generator."""
    from paper.selectors import NoBarsError, bars_load

    symbol = symbol or bot.symbols[0]
    if symbol not in bot.symbols:
        raise _invalid("invalid_backtest", "symbol",
                       f"symbol {str(symbol)[:40]!r} is not one of the bot's symbols {list(bot.symbols)[:10]}")
    if start is not None and end is not None and _as_datetime(end, end=True) < _as_datetime(start):
        raise _invalid("invalid_backtest", "end", f"end {end} is before start {start}")
    if data_source == "stored":
        try:
            return bars_load(symbol=symbol, timeframe=bot.timeframe, start=start, end=end)
        except NoBarsError as exc:
            raise AppError("no_bars", str(exc), status=422) from None
    if data_source == "synthetic":
        step = timeframe_seconds(bot.timeframe)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise _invalid("invalid_backtest", "seed", f"seed must be an integer from 0 to {MAX_SEED}")
        if synthetic_count is not None and (isinstance(synthetic_count, bool) or not isinstance(synthetic_count, int)):
            raise _invalid("invalid_backtest", "bars", "the number of synthetic bars must be an integer")
        start_dt = _as_datetime(start) or datetime(2024, 1, 1, tzinfo=UTC)
        if synthetic_count is None:
            try:
                end_dt = _as_datetime(end, end=True) or start_dt + timedelta(days=365)
            except OverflowError:
                end_dt = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
            synthetic_count = max(1, int((end_dt - start_dt).total_seconds() // step) + 1)
        if not 1 <= synthetic_count <= MAX_SYNTHETIC_BARS:
            raise AppError("too_many_bars", f"a synthetic run takes 1 to {MAX_SYNTHETIC_BARS:,} bars; "
                           f"{synthetic_count:,} {bot.timeframe} bars were asked for", status=422)
        try:
            # The last bar's time must be representable too (a start of 9999-12-31 was an OverflowError).
            datetime.fromtimestamp(int(start_dt.timestamp()) + step * synthetic_count, UTC)
        except (OverflowError, OSError, ValueError):
            raise _invalid("invalid_backtest", "start", f"synthetic bars from {start} run past the year 9999") from None
        return synthetic_bars(symbol, bot.timeframe, synthetic_count, seed=seed, start_ts=int(start_dt.timestamp()))
    raise AppError("bad_data_source", f"data_source must be 'stored' or 'synthetic', not {data_source!r}")


def backtest_run(
    *,
    bot: Bot,
    start: date | datetime | None = None,
    end: date | datetime | None = None,
    symbol: str | None = None,
    data_source: str = "stored",
    seed: int = 0,
    starting_cash: float = 100_000.0,
    synthetic_count: int | None = None,
) -> BacktestRun:
    """Run the bot over bars through the engine and store the result as a BacktestRun."""
    backtest_inputs_check(starting_cash=starting_cash, seed=seed)
    bars = backtest_bars(bot=bot, symbol=symbol or (bot.symbols[0] if bot.symbols else None), start=start, end=end,
                         data_source=data_source, seed=seed, synthetic_count=synthetic_count)
    return backtest_run_with_result(bot=bot, bars=bars, seed=seed, starting_cash=starting_cash)[0]


def backtest_run_with_result(*, bot: Bot, bars: Bars, seed: int = 0,
                             starting_cash: float = 100_000.0) -> tuple[BacktestRun, RunResult]:
    """Backtest over the given bars; returns the stored BacktestRun and the engine's result."""
    starting_cash, seed = backtest_inputs_check(starting_cash=starting_cash, seed=seed)
    try:
        config = bot.trading_config()
        engine = config.build_engine(starting_cash=starting_cash, seed=seed, symbol=bars.symbol)
    except BotConfigError as exc:
        raise AppError("invalid_bot", str(exc), details=exc.errors) from None
    except ValueError as exc:
        raise AppError("invalid_backtest", str(exc)) from None
    started = time.perf_counter()
    result = engine.run(bars)
    elapsed_ms = (time.perf_counter() - started) * 1000
    stride = max(1, len(result.equity) // EQUITY_POINTS_KEPT)
    idx = list(range(0, len(result.equity), stride))
    if idx and idx[-1] != len(result.equity) - 1:
        idx.append(len(result.equity) - 1)
    equity = [[int(result.ts[i]), float(result.equity[i])] for i in idx]
    metrics = dict(result.metrics)
    metrics["data_label"] = bars.label
    with transaction.atomic():
        run = BacktestRun.objects.create(
            bot=bot,
            config_hash=config.config_hash,
            config_snapshot=config.canonical(),
            symbol=engine.symbol,
            timeframe=bot.timeframe,
            data_source=bars.source if bars.source != "csv" else "stored",
            start=datetime.fromtimestamp(int(bars.ts[0]), UTC) if len(bars) else None,
            end=datetime.fromtimestamp(int(bars.ts[-1]), UTC) if len(bars) else None,
            num_bars=len(bars),
            seed=seed,
            starting_cash=starting_cash,
            status=result.status,
            halt=result.halt.to_dict() if result.halt else None,
            metrics=metrics,
            sharpe=metrics.get("sharpe"),
            total_return=metrics.get("total_return"),
            num_fills=len(result.fills),
            trades=[f.to_dict() for f in result.fills],
            equity=equity,
            duration_ms=elapsed_ms,
        )
    return run, result


# --- the paper metadata gate -------------------------------------------------------------------

@dataclass(frozen=True)
class GateDecision:
    ok: bool
    condition: str  # "passed" or the failed condition's code
    message: str
    backtest_id: int | None = None

    def to_dict(self) -> dict:
        return {"ok": self.ok, "condition": self.condition, "message": self.message, "backtest_id": self.backtest_id}


GATE_CONDITIONS = {
    "no_backtest": "the bot has no backtest",
    "config_changed": "no backtest matches the bot's current config hash",
    "backtest_too_old": "the latest backtest of the current config is too old",
    "zero_sharpe": "the latest backtest of the current config has a zero or undefined sharpe",
}


def paper_gate_check(*, bot: Bot, now: datetime | None = None) -> GateDecision:
    """May this bot start a paper session? Needs a fresh backtest of its current config with non-zero sharpe."""
    now = now or timezone.now()
    max_age = timedelta(hours=settings.PAPER_GATE_MAX_AGE_HOURS)
    runs = BacktestRun.objects.filter(bot=bot).order_by("-created_at", "-id")
    if not runs.exists():
        return GateDecision(False, "no_backtest", f"{GATE_CONDITIONS['no_backtest']}: run a backtest first")
    latest = runs.filter(config_hash=bot.config_hash).first()
    if latest is None:
        return GateDecision(
            False, "config_changed",
            f"{GATE_CONDITIONS['config_changed']} ({bot.config_hash[:12]}): the bot changed since its last backtest; backtest it again",
        )
    age = now - latest.created_at
    if age > max_age:
        hours = age.total_seconds() / 3600
        return GateDecision(
            False, "backtest_too_old",
            f"{GATE_CONDITIONS['backtest_too_old']}: backtest {latest.pk} is {hours:.1f} h old, the limit is {max_age.total_seconds() / 3600:g} h",
            latest.pk,
        )
    if latest.sharpe is None or latest.sharpe != latest.sharpe or latest.sharpe == 0:
        return GateDecision(
            False, "zero_sharpe",
            f"{GATE_CONDITIONS['zero_sharpe']}: backtest {latest.pk} has sharpe {latest.sharpe}",
            latest.pk,
        )
    return GateDecision(True, "passed", f"backtest {latest.pk} (sharpe {latest.sharpe:.3f}) is fresh", latest.pk)
