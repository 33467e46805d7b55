"""The demo environment the quick start sets up: operator, demo bot, fresh backtest, API token.

Idempotent: running it again reuses the operator and bot and backtests again only when needed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date

from django.contrib.auth.models import User

from bots.models import BacktestRun, Bot
from bots.services import backtest_run, bot_create, paper_gate_check
from paper.services import sample_data_load

DEMO_USERNAME = "operator"
DEMO_BOT = {
    "name": "demo-sma-eth",
    "strategy": "sma_crossover",
    "params": {"fast": 5, "slow": 20},
    "symbols": ["ETH-USD", "BTC-USD"],
    "timeframe": "1d",
    "risk": {"max_drawdown_pct": 60, "max_position_pct": 100, "max_order_notional": 1_000_000,
             "max_orders_per_minute": 30},
}


@dataclass
class DemoEnvironment:
    user: User
    password: str
    bot: Bot
    backtest: BacktestRun
    token: str | None


def demo_password() -> str:
    return os.environ.get("DEMO_PASSWORD", "paper-demo")


def demo_bot_ensure(*, owner: User | None = None, start: date = date(2022, 1, 1),
                    end: date = date(2023, 12, 31)) -> tuple[Bot, BacktestRun]:
    """The demo bot, owned by `owner`, with a backtest of its current config that passes the gate.
    A demo bot without an owner (made by `manage.py demo` before the operator existed) becomes `owner`'s."""
    bot = Bot.objects.filter(name=DEMO_BOT["name"]).first() or bot_create(**DEMO_BOT, owner=owner)
    if bot.owner_id is None and owner is not None:
        Bot.objects.filter(pk=bot.pk, owner__isnull=True).update(owner=owner)
        bot.owner = owner
    decision = paper_gate_check(bot=bot)
    if decision.ok:
        return bot, BacktestRun.objects.get(pk=decision.backtest_id)
    return bot, backtest_run(bot=bot, start=start, end=end, symbol="ETH-USD")


def demo_environment_ensure(*, with_token: bool = True) -> DemoEnvironment:
    from paper.tokens import api_token_create

    sample_data_load()
    password = demo_password()
    user = User.objects.filter(username=DEMO_USERNAME).first()
    if user is None:
        user = User.objects.create_user(DEMO_USERNAME, password=password, is_staff=True, is_superuser=True)
    bot, backtest = demo_bot_ensure(owner=user)
    token = api_token_create(user=user, name="demo")[1] if with_token else None
    return DemoEnvironment(user=user, password=password, bot=bot, backtest=backtest, token=token)
