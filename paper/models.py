"""The bar store: OHLCV bars per symbol and timeframe, imported from CSV files.

Rows are written by `paper.services` and read into numpy `Bars` by `paper.selectors`.
"""
from django.db import models


class Bar(models.Model):
    """One OHLCV bar; `ts` is the bar's open time in UTC."""

    symbol = models.CharField(max_length=32, db_index=True)
    timeframe = models.CharField(max_length=8)
    ts = models.DateTimeField(help_text="Bar open time (UTC).")
    open = models.FloatField()
    high = models.FloatField()
    low = models.FloatField()
    close = models.FloatField()
    volume = models.FloatField()
    source = models.CharField(max_length=16, default="csv")

    class Meta:
        db_table = "market_bars"
        ordering = ["symbol", "timeframe", "ts"]
        constraints = [
            models.UniqueConstraint(
                fields=["symbol", "timeframe", "ts"], name="uniq_bar_symbol_timeframe_ts"
            ),
        ]
        # The unique constraint is itself the (symbol, timeframe, ts) index that range reads
        # use; a second identical index would only double the cost of every bulk import.

    def __str__(self) -> str:
        return f"{self.symbol} {self.timeframe} {self.ts:%Y-%m-%d %H:%M}"


class ApiToken(models.Model):
    """An API token for scripts: `Authorization: Bearer <token>`. Only its sha256 is stored."""

    user = models.ForeignKey("auth.User", on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, default="default")
    prefix = models.CharField(max_length=12, help_text="first characters, to tell tokens apart")
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "api_tokens"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"
