"""The kill switch's latched state and the log of every halt and re-arm.

One row holds the latch; while it is set, no new paper session may start.
"""
from __future__ import annotations

from django.conf import settings
from django.db import models


class KillSwitch(models.Model):
    """A singleton (pk=1). `latched` stays true until an explicit re-arm."""

    latched = models.BooleanField(default=False)
    latched_at = models.DateTimeField(null=True, blank=True)
    latched_by = models.CharField(max_length=150, blank=True, default="")
    reason = models.CharField(max_length=300, blank=True, default="")
    rearmed_at = models.DateTimeField(null=True, blank=True)
    rearmed_by = models.CharField(max_length=150, blank=True, default="")

    class Meta:
        db_table = "risk_kill_switch"

    def __str__(self) -> str:
        return "latched" if self.latched else "armed"


class HaltEvent(models.Model):
    class Action(models.TextChoices):
        HALT = "halt"
        REARM = "rearm"

    action = models.CharField(max_length=8, choices=Action.choices)
    scope = models.CharField(max_length=32, help_text="kill-switch, bots, paper")
    reason = models.CharField(max_length=300, blank=True, default="")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    report = models.JSONField(default=dict, help_text="what each subsystem stopped and how long it took")
    elapsed_ms = models.FloatField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        db_table = "risk_halt_events"
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.action} {self.scope} at {self.created_at:%Y-%m-%d %H:%M:%S}"
