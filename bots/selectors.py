"""Reads for bots: the bot list, one bot with its backtest references and gate decision, backtests.

Nothing here writes; bots/services.py owns every change.
"""
from __future__ import annotations

from django.db.models import QuerySet

from bots.models import BacktestRun, Bot
from bots.services import paper_gate_check

BACKTEST_REFS = 20


def bot_list() -> QuerySet[Bot]:
    return Bot.objects.select_related("owner").order_by("name", "id")


def bot_backtests(*, bot: Bot) -> QuerySet[BacktestRun]:
    """Newest first; `defer` keeps the per-fill trades and equity curve out of listings."""
    return BacktestRun.objects.filter(bot=bot).order_by("-created_at", "-id").defer("trades", "equity", "config_snapshot")


def bot_detail(*, bot: Bot) -> dict:
    """The bot plus what an operator checks before a paper session (walkthrough step 1).

    `sharpe` is the newest backtest's, whatever config it ran; `gate` says whether that is
    enough (it wants a fresh backtest of the current config).
    """
    refs = list(
        BacktestRun.objects.filter(bot=bot)
        .order_by("-created_at", "-id")
        .values("id", "created_at", "sharpe", "config_hash", "total_return", "num_bars", "data_source")[:BACKTEST_REFS]
    )
    return {
        "id": bot.pk,
        "name": bot.name,
        "owner": bot.owner_name,
        "strategy": bot.strategy,
        "params": bot.params,
        "symbols": bot.symbols,
        "timeframe": bot.timeframe,
        "risk": bot.risk,
        "execution": bot.execution,
        "config_hash": bot.config_hash,
        "created_at": bot.created_at,
        "updated_at": bot.updated_at,
        "sharpe": refs[0]["sharpe"] if refs else None,
        "backtest_runs": refs,
        "gate": paper_gate_check(bot=bot).to_dict(),
    }
