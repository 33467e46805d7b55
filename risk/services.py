"""The kill switch: fire (fan out to every registered subsystem and latch), re-arm, read.

A latched kill switch refuses new sessions (HTTP 423) until someone re-arms it.
"""
from __future__ import annotations

import logging
import time

from django.db import transaction
from django.utils import timezone

from config.errors import AppError, Forbidden
from risk.models import HaltEvent, KillSwitch
from risk.registry import HaltReport, halt_handlers

log = logging.getLogger(__name__)


class KillSwitchLatched(AppError):
    status = 423


def kill_switch_state() -> KillSwitch:
    switch, _ = KillSwitch.objects.get_or_create(pk=1)
    return switch


def kill_switch_assert_armed() -> None:
    """Raise 423 while the kill switch is latched."""
    switch = KillSwitch.objects.filter(pk=1, latched=True).first()
    if switch is not None:
        raise KillSwitchLatched(
            "kill_switch_latched",
            f"the kill switch is latched since {switch.latched_at:%Y-%m-%d %H:%M:%S} UTC"
            f" ({switch.reason or 'no reason given'}); re-arm it before starting sessions",
        )


def _latch(*, reason: str, user) -> None:
    with transaction.atomic():
        switch, _ = KillSwitch.objects.select_for_update().get_or_create(pk=1)
        if not switch.latched:
            switch.latched = True
            switch.latched_at = timezone.now()
            switch.latched_by = getattr(user, "username", "") or ""
            switch.reason = reason[:300]
            switch.save()


def halt_subsystems(*, subsystems: list[str] | None, reason: str, user=None, latch: bool,
                    scope: str) -> dict:
    """Run the named halt handlers (all when None), latching first if asked. Returns the report."""
    started = time.perf_counter()
    if latch:
        _latch(reason=reason, user=user)
    handlers = halt_handlers()
    names = list(handlers) if subsystems is None else subsystems
    reports: list[dict] = []
    for name in names:
        handler = handlers.get(name)
        if handler is None:
            raise AppError("unknown_subsystem", f"no halt handler registered for {name!r}")
        t0 = time.perf_counter()
        try:
            report = handler(reason)
        except Exception as exc:  # one failing subsystem must not stop the others from halting
            log.exception("halt handler %s failed", name)
            report = HaltReport(subsystem=name, detail=f"failed: {type(exc).__name__}: {exc}")
        report.elapsed_ms = (time.perf_counter() - t0) * 1000
        reports.append(report.to_dict())
    elapsed_ms = (time.perf_counter() - started) * 1000
    body = {
        "scope": scope,
        "latched": kill_switch_state().latched,
        "reason": reason,
        "subsystems": reports,
        "stopped": sum(r["count"] for r in reports),
        "elapsed_ms": round(elapsed_ms, 2),
    }
    HaltEvent.objects.create(action=HaltEvent.Action.HALT, scope=scope, reason=reason[:300],
                             user=user if getattr(user, "pk", None) else None, report=body, elapsed_ms=elapsed_ms)
    return body


def kill_switch_fire(*, reason: str = "kill switch", user=None) -> dict:
    """The top-bar kill switch: latch, then fan out to every registered subsystem."""
    return halt_subsystems(subsystems=None, reason=f"kill_switch: {reason}", user=user, latch=True, scope="kill-switch")


REARM_POLICY = "only staff users may re-arm the kill switch; any operator may fire it"


def kill_switch_may_rearm(user) -> bool:
    """Staff may re-arm; any operator may fire (firing is never blocked). No user = the system."""
    return user is None or bool(getattr(user, "is_staff", False) and getattr(user, "is_active", False))


def kill_switch_rearm(*, user=None) -> KillSwitch:
    """Re-arm the kill switch. `user` None is the system (commands, tests); a user must be staff."""
    if not kill_switch_may_rearm(user):
        raise Forbidden("forbidden", f"{getattr(user, 'username', '') or 'this user'} may not re-arm the kill "
                                     f"switch: {REARM_POLICY} (ask a staff user, or an admin to grant staff)")
    with transaction.atomic():
        switch, _ = KillSwitch.objects.select_for_update().get_or_create(pk=1)
        was = switch.latched
        switch.latched = False
        switch.rearmed_at = timezone.now()
        switch.rearmed_by = getattr(user, "username", "") or ""
        switch.save()
        HaltEvent.objects.create(action=HaltEvent.Action.REARM, scope="kill-switch",
                                 reason="re-armed" if was else "re-armed (was not latched)",
                                 user=user if getattr(user, "pk", None) else None)
    return switch
