"""REST operations for the kill switch: fire it (fan out to every subsystem and latch), re-arm, read.

Also the halt request and report schemas that /bots/halt-all and /paper/stop-all share.
"""
from datetime import datetime

from django.http import HttpRequest
from ninja import Field, Router, Schema

from config.api import BODY, CSRF, STRICT_INPUT, responses
from config.auth import auth_user
from risk.registry import halt_handlers
from risk.services import REASON_MAX, kill_switch_fire, kill_switch_rearm, kill_switch_state

router = Router(tags=["kill switch"])


class HaltIn(Schema):
    model_config = STRICT_INPUT

    reason: str | None = Field(None, description=(
        f"why; never refused: control characters are removed, whitespace collapsed and at most {REASON_MAX} "
        "characters kept"))


class SubsystemHaltOut(Schema):
    subsystem: str
    stopped: list[str]
    count: int
    elapsed_ms: float
    detail: str


class HaltReportOut(Schema):
    scope: str
    latched: bool
    reason: str
    subsystems: list[SubsystemHaltOut]
    stopped: int = Field(description="how many things were stopped, over all subsystems")
    elapsed_ms: float


class KillSwitchOut(Schema):
    latched: bool
    latched_at: datetime | None
    latched_by: str
    reason: str
    rearmed_at: datetime | None
    rearmed_by: str
    subsystems: list[str] = Field(description="the registered halt handlers a fire fans out to")


def _state() -> dict:
    switch = kill_switch_state()
    return {
        "latched": switch.latched,
        "latched_at": switch.latched_at,
        "latched_by": switch.latched_by,
        "reason": switch.reason,
        "rearmed_at": switch.rearmed_at,
        "rearmed_by": switch.rearmed_by,
        "subsystems": sorted(halt_handlers()),
    }


@router.post("/kill-switch", response=responses(HaltReportOut, *BODY, CSRF))
def kill_switch_post(request: HttpRequest, payload: HaltIn | None = None):
    """Latch, then stop everything every registered subsystem runs; new sessions get 423 until re-armed.

    It answers once every session is closed in the ledger (no bar, order or fill of theirs accepted
    after); their goodbye frames follow as they wake. Any authenticated user may fire it. If the latch
    or a stop cannot be written, 503 `halt_incomplete` says which (the stops that could go out did)."""
    return kill_switch_fire(reason=payload.reason if payload else None, user=auth_user(request))


@router.get("/kill-switch", response=responses(KillSwitchOut))
def kill_switch_get(request: HttpRequest):
    return _state()


@router.post("/kill-switch/rearm", response=responses(KillSwitchOut, CSRF))
def kill_switch_rearm_post(request: HttpRequest):
    """Re-arm: new sessions may start again. Needs a staff user (403 `forbidden` otherwise)."""
    kill_switch_rearm(user=auth_user(request))
    return _state()
