"""Bots (a strategy with params, symbols, timeframe, risk and execution blocks) and their backtests.

A bot is validated on save and carries a config hash over everything that affects trading.
"""
from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from paper.engine.botconfig import BotConfig, BotConfigError


class Bot(models.Model):
    name = models.CharField(max_length=100, unique=True)
    strategy = models.CharField(max_length=200, help_text="registered name or dotted path")
    params = models.JSONField(default=dict, blank=True)
    symbols = models.JSONField(default=list)
    timeframe = models.CharField(max_length=8, default="1d")
    risk = models.JSONField(default=dict, blank=True)
    execution = models.JSONField(default=dict, blank=True)
    # Who may change it (bots/permissions.py). PROTECT: deleting an operator who owns bots is
    # refused (deactivate them, or give their bots to someone first) rather than silently making
    # their bots ownerless. NULL: a bot made before bots had owners (staff-only).
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True,
                              related_name="bots")
    config_hash = models.CharField(max_length=64, editable=False, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "bots"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs):
        self.full_clean()
        super().save(*args, **kwargs)

    def get_absolute_url(self) -> str:
        from django.urls import reverse

        return reverse("dashboard:bot", args=[self.pk])

    @property
    def owner_name(self) -> str:
        """The owner's username, or "" for a bot without one."""
        return self.owner.get_username() if self.owner_id is not None else ""

    def trading_config(self) -> BotConfig:
        """The validated config; raises BotConfigError."""
        return BotConfig.validate(
            strategy=self.strategy,
            params=self.params,
            symbols=self.symbols,
            timeframe=self.timeframe,
            risk=self.risk,
            execution=self.execution,
        )

    def clean(self) -> None:
        try:
            config = self.trading_config()
        except BotConfigError as exc:
            by_field: dict[str, list[str]] = {}
            for e in exc.errors:
                field = e["field"].split(".")[0]
                field = field if field in {"strategy", "params", "symbols", "timeframe", "risk", "execution"} else "__all__"
                by_field.setdefault(field, []).append(f"{e['field']}: {e['message']}")
            raise ValidationError(by_field) from None
        self.params = config.params
        self.risk = config.risk
        self.execution = config.execution
        self.symbols = list(config.symbols)
        self.config_hash = config.config_hash



class BacktestRun(models.Model):
    bot = models.ForeignKey(Bot, on_delete=models.CASCADE, related_name="backtest_runs")
    config_hash = models.CharField(max_length=64, db_index=True)
    config_snapshot = models.JSONField()
    symbol = models.CharField(max_length=32)
    timeframe = models.CharField(max_length=8)
    data_source = models.CharField(max_length=16, help_text="stored or synthetic")
    start = models.DateTimeField(null=True)
    end = models.DateTimeField(null=True)
    num_bars = models.PositiveIntegerField(default=0)
    seed = models.BigIntegerField(default=0)
    starting_cash = models.FloatField()
    status = models.CharField(max_length=16, help_text="completed or halted")
    halt = models.JSONField(null=True, blank=True)
    metrics = models.JSONField(default=dict)
    sharpe = models.FloatField(null=True)
    total_return = models.FloatField(null=True)
    num_fills = models.PositiveIntegerField(default=0)
    trades = models.JSONField(default=list, help_text="every fill of the run")
    equity = models.JSONField(default=list, help_text="[[ts, equity], ...], at most 5,000 points")
    duration_ms = models.FloatField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        db_table = "backtest_runs"
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"backtest {self.pk} of {self.bot_id}"
