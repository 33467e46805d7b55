"""The kill switch: fire (fan out to every registered subsystem and latch), re-arm, read.

A latched kill switch refuses new sessions (HTTP 423) until someone re-arms it. It fails
closed: the latch is written first, from a reason no input can break (`halt_reason`); the
stops go out even when the latch cannot be written; a failure is answered with a 503 that
names it; and a switch whose state cannot be read counts as latched.
"""
from __future__ import annotations

import logging
import re
import time
import unicodedata

from django.db import DatabaseError, transaction
from django.utils import timezone

from config.errors import AppError, Forbidden
from ledger.models import REASON_KILL_SWITCH, REASON_OPERATOR_STOP
from risk.models import HaltEvent, KillSwitch
from risk.registry import HaltReport, halt_handlers

log = logging.getLogger(__name__)


class KillSwitchLatched(AppError):
    status = 423


class HaltIncomplete(AppError):
    """A halt whose latch or stops could not all be written (the stops that could go out did)."""

    status = 503


# The longest reason kept: the run row's status_reason and stop_requested hold 200 characters,
# with room left for the door's prefix ("kill_switch: ", "operator_stop: ").
REASON_MAX = 180
_SPACE = re.compile(r"\s+")


def halt_reason(text: str | None, *, default: str) -> str:
    """A halt reason in a form every column takes: control and format characters (NUL among
    them), lone surrogates and unassigned code points removed, whitespace collapsed, at most
    REASON_MAX characters. An empty result is `default`. Never refused: a kill switch fires
    whatever its reason says."""
    if not isinstance(text, str):
        return default
    kept = "".join(" " if ch in "\t\n\r\x0b\x0c\x85\u2028\u2029" else ch for ch in text
                   if ch in "\t\n\r\x0b\x0c\x85\u2028\u2029" or unicodedata.category(ch)[0] != "C")
    kept = _SPACE.sub(" ", kept).strip()
    if len(kept) > REASON_MAX:
        kept = kept[: REASON_MAX - 1].rstrip() + "\u2026"
    return kept or default


def kill_switch_state() -> KillSwitch:
    switch, _ = KillSwitch.objects.get_or_create(pk=1)
    return switch


def kill_switch_latched() -> bool:
    """Whether the switch is latched; a state that cannot be read counts as latched."""
    try:
        return KillSwitch.objects.filter(pk=1, latched=True).exists()
    except DatabaseError:
        log.warning("the kill switch's state cannot be read; treating it as latched", exc_info=True)
        return True


def kill_switch_assert_armed() -> None:
    """Raise 423 while the kill switch is latched, or while its state cannot be read."""
    try:
        switch = KillSwitch.objects.filter(pk=1, latched=True).first()
    except DatabaseError as exc:
        log.warning("the kill switch's state cannot be read; refusing new sessions", exc_info=True)
        raise KillSwitchLatched(
            "kill_switch_unreadable",
            f"the kill switch's state cannot be read ({type(exc).__name__}), so it counts as latched; "
            "new sessions are refused until the database answers",
        ) from None
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
    """Run the named halt handlers (all when None), latching first if asked. Returns the report.

    `reason` must come through `halt_reason` (the doors do it). The latch goes first; if it
    cannot be written the handlers run all the same (their in-process and pushed stops go
    out), and then HaltIncomplete (503) names what failed, with the report in its details.
    """
    started = time.perf_counter()
    failures: list[str] = []
    if latch:
        try:
            _latch(reason=reason, user=user)
        except DatabaseError as exc:
            log.exception("the kill switch could not be latched; stopping everything all the same")
            failures.append(f"latch not written: {type(exc).__name__}: {exc}".strip())
    handlers = halt_handlers()
    names = list(handlers) if subsystems is None else subsystems
    unknown = [name for name in names if name not in handlers]
    if unknown:
        raise AppError("unknown_subsystem", f"no halt handler registered for {unknown[0]!r}")
    reports: list[dict] = []
    for name in names:
        t0 = time.perf_counter()
        try:
            report = handlers[name](reason)
        except Exception as exc:  # one failing subsystem must not stop the others from halting
            log.exception("halt handler %s failed", name)
            report = HaltReport(subsystem=name, detail=f"failed: {type(exc).__name__}: {exc}")
            failures.append(f"{name}: {type(exc).__name__}")
        report.elapsed_ms = (time.perf_counter() - t0) * 1000
        reports.append(report.to_dict())
    elapsed_ms = (time.perf_counter() - started) * 1000
    body = {
        "scope": scope,
        "latched": kill_switch_latched(),
        "reason": reason,
        "subsystems": reports,
        "stopped": sum(r["count"] for r in reports),
        "elapsed_ms": round(elapsed_ms, 2),
    }
    try:
        HaltEvent.objects.create(action=HaltEvent.Action.HALT, scope=scope, reason=reason[:300],
                                 user=user if getattr(user, "pk", None) else None, report=body,
                                 elapsed_ms=elapsed_ms)
    except DatabaseError as exc:
        log.exception("the halt event could not be recorded")
        failures.append(f"halt event not recorded: {type(exc).__name__}")
    if failures:
        raise HaltIncomplete(
            "halt_incomplete",
            "the halt could not be fully recorded (" + "; ".join(failures) + "); the stops that could be "
            "sent went out; retry, and check the database",
            details=body,
        )
    return body


def kill_switch_fire(*, reason: str | None = None, user=None) -> dict:
    """The top-bar kill switch: latch, then fan out to every registered subsystem."""
    who = getattr(user, "username", "") or "the system"
    text = halt_reason(reason, default=f"kill switch fired by {who}")
    return halt_subsystems(subsystems=None, reason=f"{REASON_KILL_SWITCH}: {text}", user=user, latch=True,
                           scope="kill-switch")


def bots_halt_all(*, reason: str | None = None, user=None) -> dict:
    """Stop every bot's sessions and latch the kill switch (POST /bots/halt-all). A bot trades
    only through its paper sessions: the paper subsystem is what there is to stop."""
    who = getattr(user, "username", "") or "the system"
    text = halt_reason(reason, default=f"halt-all by {who}")
    return halt_subsystems(subsystems=["paper"], reason=f"{REASON_KILL_SWITCH}: {text}", user=user, latch=True,
                           scope="bots")


def sessions_stop_all(*, reason: str | None = None, user=None) -> dict:
    """Stop every active session without latching (POST /paper/stop-all)."""
    who = getattr(user, "username", "") or "the system"
    text = halt_reason(reason, default=f"stop-all by {who}")
    return halt_subsystems(subsystems=["paper"], reason=f"{REASON_OPERATOR_STOP}: {text}", user=user, latch=False,
                           scope="paper")


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
