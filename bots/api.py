"""REST operations for bots: CRUD, backtests, starting a paper session, and halting every bot.

Operations validate input, call bots/services, paper/sessions or risk/services, and render.
"""
import math
from datetime import date, datetime
from typing import Any, Literal

from django.http import HttpRequest
from ninja import Field, Router, Schema, Status
from ninja.pagination import paginate
from pydantic import field_validator, model_validator

from bots import selectors
from bots.services import backtest_run, bot_create, bot_delete, bot_get, bot_update
from config.api import STRICT_INPUT, ErrorOut, Page
from config.auth import auth_user
from paper.sessions import SessionRequest, session_start
from risk.api import HaltIn, HaltReportOut
from risk.services import halt_subsystems

router = Router(tags=["bots"])


def _json_checked(value: Any, path: str) -> Any:
    """Free-form JSON (params, risk, execution) reaches JSONField and PostgreSQL's jsonb,
    which refuse NaN, Infinity and NUL characters with a server error: refuse them here."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{path} must be a finite number")
    if isinstance(value, str) and "\x00" in value:
        raise ValueError(f"{path} must not contain NUL characters")
    if isinstance(value, dict):
        for key, item in value.items():
            _json_checked(key, path)
            _json_checked(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _json_checked(item, f"{path}[{i}]")
    return value


# --- schemas -------------------------------------------------------------------------------------

class BotIn(Schema):
    model_config = STRICT_INPUT

    name: str
    strategy: str
    symbols: list[str]
    timeframe: str = "1d"
    params: dict[str, Any] = {}
    risk: dict[str, Any] = {}
    execution: dict[str, Any] = {}

    @field_validator("*")
    @classmethod
    def _finite(cls, value, info):
        return _json_checked(value, info.field_name)


class BotPatchIn(Schema):
    model_config = STRICT_INPUT

    name: str | None = None
    strategy: str | None = None
    symbols: list[str] | None = None
    timeframe: str | None = None
    params: dict[str, Any] | None = None
    risk: dict[str, Any] | None = None
    execution: dict[str, Any] | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _not_null(cls, value, info):
        # Absent means "leave as is"; an explicit null would wipe the field, so it is refused.
        if value is None:
            raise ValueError(f"{info.field_name} may be omitted but not null")
        return _json_checked(value, info.field_name)


class BotOut(Schema):
    id: int
    name: str
    strategy: str
    symbols: list[str]
    timeframe: str
    params: dict[str, Any]
    risk: dict[str, Any]
    execution: dict[str, Any]
    config_hash: str
    created_at: datetime
    updated_at: datetime


class BacktestRefOut(Schema):
    id: int
    created_at: datetime
    sharpe: float | None
    config_hash: str
    total_return: float | None
    num_bars: int
    data_source: str


class GateOut(Schema):
    ok: bool
    condition: str
    message: str
    backtest_id: int | None


class BotDetailOut(BotOut):
    sharpe: float | None = Field(description="the newest backtest's sharpe, of any config")
    backtest_runs: list[BacktestRefOut] = Field(description=f"newest first, at most {selectors.BACKTEST_REFS}")
    gate: GateOut


class BacktestIn(Schema):
    model_config = STRICT_INPUT

    start: date | None = None
    end: date | None = None
    symbol: str | None = None
    data_source: Literal["stored", "synthetic"] = "stored"
    seed: int = Field(0, ge=0, lt=2**63)
    starting_cash: float = Field(100_000.0, gt=0, le=1e12)

    @model_validator(mode="after")
    def _ordered(self):
        if self.start and self.end and self.end < self.start:
            raise ValueError("end must not be before start")
        return self


class BacktestOut(Schema):
    id: int
    bot_id: int
    config_hash: str
    symbol: str
    timeframe: str
    data_source: str
    start: datetime | None
    end: datetime | None
    num_bars: int
    seed: int
    starting_cash: float
    status: str
    halt: dict | None
    sharpe: float | None
    total_return: float | None
    num_fills: int
    metrics: dict[str, Any]
    duration_ms: float
    created_at: datetime


class PaperIn(Schema):
    model_config = STRICT_INPUT

    starting_cash: float = Field(gt=0)
    duration_minutes: float = Field(gt=0)
    symbol: str | None = None
    pace: float = Field(1.0, gt=0, description="bars per bar interval; >1 runs faster than real time")
    data_source: Literal["synthetic", "stored"] = "synthetic"
    seed: int | None = Field(None, ge=0, lt=2**63)
    start: date | None = Field(None, description="first bar's date (stored data)")
    warmup_bars: int | None = Field(None, ge=0, le=10_000)


class PaperStartOut(Schema):
    paper_run_id: str
    status: str
    ws: str


# --- operations ----------------------------------------------------------------------------------
# /bots/halt-all is declared before /bots/{bot_id}, and bot ids are ints, so it is never a bot.

@router.post("/bots/halt-all", response={200: HaltReportOut, 422: ErrorOut})
def bots_halt_all(request: HttpRequest, payload: HaltIn | None = None):
    """Stop every bot's sessions and latch the kill switch (the top bar's first fan-out)."""
    user = auth_user(request)
    reason = f"kill_switch: {(payload.reason if payload else None) or f'halt-all by {user.username}'}"
    return halt_subsystems(subsystems=["bots"], reason=reason, user=user, latch=True, scope="bots")


@router.get("/bots", response=list[BotOut])
@paginate(Page)
def bots_list(request: HttpRequest):
    return selectors.bot_list()


@router.post("/bots", response={201: BotDetailOut, 400: ErrorOut, 422: ErrorOut})
def bots_create(request: HttpRequest, payload: BotIn):
    bot = bot_create(**payload.model_dump())
    return Status(201, selectors.bot_detail(bot=bot))


@router.get("/bots/{int:bot_id}", response={200: BotDetailOut, 404: ErrorOut})
def bots_get(request: HttpRequest, bot_id: int):
    return selectors.bot_detail(bot=bot_get(bot_ref=bot_id))


@router.put("/bots/{int:bot_id}", response={200: BotDetailOut, 400: ErrorOut, 404: ErrorOut, 422: ErrorOut})
def bots_replace(request: HttpRequest, bot_id: int, payload: BotIn):
    bot = bot_update(bot=bot_get(bot_ref=bot_id), **payload.model_dump())
    return selectors.bot_detail(bot=bot)


@router.patch("/bots/{int:bot_id}", response={200: BotDetailOut, 400: ErrorOut, 404: ErrorOut, 422: ErrorOut})
def bots_update(request: HttpRequest, bot_id: int, payload: BotPatchIn):
    bot = bot_update(bot=bot_get(bot_ref=bot_id), **payload.model_dump(exclude_unset=True))
    return selectors.bot_detail(bot=bot)


@router.delete("/bots/{int:bot_id}", response={204: None, 404: ErrorOut, 409: ErrorOut})
def bots_delete(request: HttpRequest, bot_id: int):
    bot_delete(bot=bot_get(bot_ref=bot_id))
    return Status(204, None)


@router.post("/bots/{int:bot_id}/backtests", response={201: BacktestOut, 400: ErrorOut, 404: ErrorOut, 422: ErrorOut})
def bots_backtest(request: HttpRequest, bot_id: int, payload: BacktestIn | None = None):
    payload = payload or BacktestIn()
    run = backtest_run(bot=bot_get(bot_ref=bot_id), **payload.model_dump())
    return Status(201, run)


@router.get("/bots/{int:bot_id}/backtests", response={200: list[BacktestOut], 404: ErrorOut})
@paginate(Page)
def bots_backtests(request: HttpRequest, bot_id: int):
    return selectors.bot_backtests(bot=bot_get(bot_ref=bot_id))


@router.post(
    "/bots/{int:bot_id}/paper",
    response={201: PaperStartOut, 404: ErrorOut, 409: ErrorOut, 422: ErrorOut, 423: ErrorOut},
)
def bots_paper_start(request: HttpRequest, bot_id: int, payload: PaperIn):
    """Start a paper session. 409 names the gate condition that refused it; 423 while the kill switch is latched."""
    bot = bot_get(bot_ref=bot_id)
    run = session_start(
        bot=bot,
        request=SessionRequest(**payload.model_dump()),
        user=auth_user(request),
        # PaperTradingRun.request_id holds 100 characters; a longer header must not be a 500.
        request_id=request.headers.get("X-Request-ID", "")[:100],
    )
    return Status(201, {"paper_run_id": run.id, "status": run.status, "ws": f"/ws/paper/{run.id}"})
