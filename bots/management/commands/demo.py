"""`manage.py demo`: the quick start's main job.

Migrates, loads the shipped ETH-USD / BTC-USD daily bars, creates the demo bot and
backtests it on ETH-USD 2022-01-01 .. 2023-12-31, printing its metrics.
"""
from datetime import date

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from bots.management.commands.backtest import format_backtest
from bots.models import Bot
from bots.services import backtest_run, bot_create
from paper.demo import DEMO_BOT, DEMO_USERNAME
from paper.management.commands.import_bars import format_result
from paper.services import sample_data_load


class Command(BaseCommand):
    help = "Set up the demo (migrate, sample data, demo bot) and backtest the demo bot on ETH-USD."

    def add_arguments(self, parser):
        parser.add_argument("--start", default="2022-01-01")
        parser.add_argument("--end", default="2023-12-31")

    def handle(self, *args, **opts):
        call_command("migrate", verbosity=0, interactive=False)
        for result in sample_data_load():
            self.stdout.write(format_result(result))
        # The demo operator owns the demo bot; before `manage.py serve` has made them, nobody does
        # (staff only), and serve gives it to them.
        operator = get_user_model().objects.filter(username=DEMO_USERNAME).first()
        bot = Bot.objects.filter(name=DEMO_BOT["name"]).first() or bot_create(**DEMO_BOT, owner=operator)
        run = backtest_run(
            bot=bot,
            start=date.fromisoformat(opts["start"]),
            end=date.fromisoformat(opts["end"]),
            symbol="ETH-USD",
        )
        self.stdout.write(format_backtest(run))
