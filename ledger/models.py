"""The paper ledger: runs, orders, fills and equity points, as the seed's SQL reads them.

Run ids are readable strings (the same in the API, the UI, artifact folders and SQL).
Ledger rows are written by services only, in bulk and idempotently.
"""
from __future__ import annotations

import secrets
from datetime import UTC, datetime

from django.conf import settings
from django.db import models


def new_run_id() -> str:
    """e.g. '20261121T081500Z-3f9a2c1b': sortable by creation time, safe as a folder name."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


class RunStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    ABORTED = "aborted"


TERMINAL_STATUSES = (RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.ABORTED)

# status_reason codes: one vocabulary for the DB, the API, artifacts and the CLI. A reason is
# "<code>" or "<code>: <words>" (e.g. "kill_switch: fired by alice").
REASON_COMPLETED = "completed"
REASON_RISK_HALT = "risk_halt"
REASON_KILL_SWITCH = "kill_switch"
REASON_OPERATOR_STOP = "operator_stop"
REASON_WORKER_LOST = "worker_lost"
REASON_RESUME_MISMATCH = "resume_mismatch"
REASON_EXCEPTION = "exception"
REASON_BROKER_UNAVAILABLE = "broker_unavailable"


class PaperTradingRun(models.Model):
    id = models.CharField(primary_key=True, max_length=40, default=new_run_id, editable=False)
    # bot and status have no index of their own: paper_runs_bot_created and paper_runs_status_created
    # start with them (and serve every query by bot or status).
    bot = models.ForeignKey("bots.Bot", on_delete=models.PROTECT, related_name="paper_runs", db_index=False)
    # Who started it (NULL: a replay from `manage.py run --paper`, or a run from before owners).
    # PROTECT: the ledger keeps who started each session, so its user cannot be deleted.
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True,
                              related_name="paper_runs_started")
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    status_reason = models.CharField(max_length=200, blank=True, default="")
    total_pnl = models.FloatField(null=True)
    num_fills = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(null=True, db_index=True)
    ended_at = models.DateTimeField(null=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, help_text="heartbeat while running")
    mode = models.CharField(max_length=16, default="live", help_text="live (paced session) or replay")
    starting_cash = models.FloatField()
    duration_minutes = models.FloatField(null=True)
    symbol = models.CharField(max_length=32)
    timeframe = models.CharField(max_length=8)
    data_source = models.CharField(max_length=16, default="synthetic")
    seed = models.BigIntegerField(default=0)
    pace = models.FloatField(default=1.0, help_text="bars per bar-interval; >1 runs faster than real time")
    config_hash = models.CharField(max_length=64)
    config_snapshot = models.JSONField(default=dict)
    halt = models.JSONField(null=True, blank=True, help_text="the risk breach that halted the run")
    error_type = models.CharField(max_length=100, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    ending_equity = models.FloatField(null=True)
    bars_processed = models.PositiveIntegerField(default=0)
    metrics = models.JSONField(default=dict, blank=True)
    request_id = models.CharField(max_length=100, blank=True, default="")
    worker_id = models.CharField(max_length=100, blank=True, default="", help_text="who runs it (lease)")
    stop_requested = models.CharField(max_length=200, blank=True, default="", help_text="stop reason, set by stop / kill switch")

    class Meta:
        db_table = "paper_trading_runs"
        ordering = ["-started_at", "-created_at"]
        # The session list pages newest first (ledger.selectors.runs_list), whole or by status or bot:
        # an index in that order reads one page instead of sorting every run.
        indexes = [
            models.Index(fields=["-created_at", "-id"], name="paper_runs_created"),
            models.Index(fields=["status", "-created_at", "-id"], name="paper_runs_status_created"),
            models.Index(fields=["bot", "-created_at", "-id"], name="paper_runs_bot_created"),
        ]

    def __str__(self) -> str:
        return self.id

    def get_absolute_url(self) -> str:
        from django.urls import reverse

        return reverse("dashboard:session", args=[self.pk])

    @property
    def owner_name(self) -> str:
        """The username of who started it, or "" (a replay, or a run from before owners)."""
        return self.owner.get_username() if self.owner_id is not None else ""

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def equity(self) -> float:
        """Ending equity so far, or the starting cash before the first bar."""
        return self.ending_equity if self.ending_equity is not None else self.starting_cash

    @property
    def data_label(self) -> str:
        """'synthetic' or 'stored': synthetic prices are never shown as real ones."""
        return "synthetic" if self.data_source == "synthetic" else "stored"

    @property
    def ws_path(self) -> str:
        """The run's frames socket (paper/routing.py)."""
        return f"/ws/paper/{self.id}"


class PaperOrder(models.Model):
    # No index of its own: uniq_order_per_run starts with it (as for the fills, equity points and frames).
    paper_run = models.ForeignKey(PaperTradingRun, on_delete=models.CASCADE, related_name="orders", db_index=False)
    order_id = models.CharField(max_length=64, help_text="client order id, unique per run")
    symbol = models.CharField(max_length=32)
    side = models.CharField(max_length=4)
    type = models.CharField(max_length=16)
    qty = models.FloatField()
    limit_price = models.FloatField(null=True)
    stop_price = models.FloatField(null=True)
    tif = models.CharField(max_length=4)
    status = models.CharField(max_length=20)
    filled_qty = models.FloatField(default=0)
    avg_fill_price = models.FloatField(null=True)
    reason = models.CharField(max_length=300, blank=True, default="")
    bar_index = models.IntegerField()
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        db_table = "paper_orders"
        ordering = ["paper_run", "created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["paper_run", "order_id"], name="uniq_order_per_run"),
        ]

    def __str__(self) -> str:
        return f"{self.order_id} {self.side} {self.qty:g} {self.symbol} ({self.status})"


class PaperFill(models.Model):
    # No index of its own: paper_fills_run_time_id and uniq_fill_per_run both start with it. A
    # separate one cost every fill write two more index entries (its _like twin too) and led the
    # planner to sort a big run's fills instead of reading them in order.
    paper_run = models.ForeignKey(PaperTradingRun, on_delete=models.CASCADE, related_name="fills", db_index=False)
    fill_id = models.CharField(max_length=64)
    order_id = models.CharField(max_length=64)
    symbol = models.CharField(max_length=32)
    side = models.CharField(max_length=4)
    qty = models.FloatField()
    price = models.FloatField()
    fee = models.FloatField()
    liquidity = models.CharField(max_length=5)
    bar_index = models.IntegerField()
    filled_at = models.DateTimeField()

    class Meta:
        db_table = "paper_fills"
        ordering = ["paper_run", "filled_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["paper_run", "fill_id"], name="uniq_fill_per_run"),
        ]
        # A run's fills page (ledger.selectors.run_fills) in index order, no sort; the count by run too.
        indexes = [models.Index(fields=["paper_run", "filled_at", "id"], name="paper_fills_run_time_id")]

    def __str__(self) -> str:
        return f"{self.fill_id} {self.side} {self.qty:g} {self.symbol} @ {self.price:g}"


class PaperEquityPoint(models.Model):
    paper_run = models.ForeignKey(PaperTradingRun, on_delete=models.CASCADE, related_name="equity_points",
                                  db_index=False)  # uniq_equity_point_per_run starts with it
    bar_index = models.IntegerField()
    ts = models.DateTimeField()
    equity = models.FloatField()
    cash = models.FloatField()
    position = models.FloatField()

    class Meta:
        db_table = "paper_equity_points"
        ordering = ["paper_run", "bar_index"]
        constraints = [
            models.UniqueConstraint(fields=["paper_run", "bar_index"], name="uniq_equity_point_per_run"),
        ]

    def __str__(self) -> str:
        return f"{self.paper_run_id} bar {self.bar_index}: {self.equity:,.2f}"


class PaperFrame(models.Model):
    """A stage frame as sent on ws/paper/<id>, kept so late clients get the recent ones first."""

    paper_run = models.ForeignKey(PaperTradingRun, on_delete=models.CASCADE, related_name="frames",
                                  db_index=False)  # uniq_frame_seq_per_run starts with it
    seq = models.PositiveIntegerField(help_text="1, 2, 3 ... per run")
    stage = models.CharField(max_length=32, db_index=True)
    message = models.CharField(max_length=300)
    payload = models.JSONField(help_text="the whole frame as sent")
    created_at = models.DateTimeField()

    class Meta:
        db_table = "paper_frames"
        ordering = ["paper_run", "seq"]
        constraints = [models.UniqueConstraint(fields=["paper_run", "seq"], name="uniq_frame_seq_per_run")]

    def __str__(self) -> str:
        return f"{self.paper_run_id} #{self.seq} {self.stage}"
