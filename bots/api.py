"""REST operations for bots: CRUD, backtests, starting a paper session, and halting every bot.

Operations validate input, call bots/services, paper/sessions or risk/services, and render.
"""
import math
import re
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, Literal

from django.http import HttpRequest
from ninja import Field, Path, Router, Schema, Status
from ninja.pagination import paginate
from pydantic import (
    BeforeValidator,
    ConfigDict,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from bots import selectors
from bots.models import Bot
from bots.permissions import bot_change_assert
from bots.services import backtest_run, bot_create, bot_delete, bot_get, bot_update
from config.api import (
    BODY,
    CSRF,
    FORBIDDEN,
    STRICT_INPUT,
    ApiDate,
    JsonInt,
    Page,
    StrictFloat,
    responses,
)
from config.auth import auth_user
from config.errors import AppError, Conflict
from paper.engine.bars import TIMEFRAME_SECONDS, timeframe_seconds
from paper.engine.botconfig import MAX_SYMBOLS, STRATEGY_MAX_LENGTH, SYMBOL_RE
from paper.engine.broker import ExecutionConfig
from paper.engine.strategy import registered_strategies
from paper.sessions import SessionRequest, session_start
from risk.api import HaltIn, HaltReportOut
from risk.limits import MAX_ORDERS_PER_MINUTE, RiskBlock
from risk.services import bots_halt_all as bots_halt_all_service

router = Router(tags=["bots"])


# --- schemas -------------------------------------------------------------------------------------
# The request schemas state the rules a client can know in advance (the names, enums, patterns and
# bounds below); what depends on other fields or on stored state (fast < slow, a symbol of the bot,
# stored bars in range, the paper gate) is refused with 409/422 and a reason.

BUILTIN_STRATEGIES = tuple(registered_strategies())
QTY_STEP_MIN = 1e-12
# `package.module:Class` or `package.module.Class` (a paper.engine.strategy.Strategy subclass); the
# paths paper.engine.botconfig.STRATEGY_RE accepts that name a class.
_IDENT = "[A-Za-z_][A-Za-z0-9_]*"
DOTTED_PATH = rf"^{_IDENT}(?:(?:\.{_IDENT}){{1,15}}(?::{_IDENT})?|:{_IDENT})$"
# A bot name (bots.services): 1 to 100 characters, not blank, no control characters.
_PRINTABLE = r"[^\x00-\x1f\x7f-\x9f]"
NAME_PATTERN = rf"^{_PRINTABLE}*[^\s\x00-\x1f\x7f-\x9f]{_PRINTABLE}*$"


def _strategy_ref(value):
    if isinstance(value, str) and (value in BUILTIN_STRATEGIES or len(value) <= STRATEGY_MAX_LENGTH
                                   and re.match(DOTTED_PATH, value)):
        return value
    raise ValueError(f"unknown strategy {value!r}: use one of {', '.join(BUILTIN_STRATEGIES)}, "
                     "or a dotted path package.module:Class")


StrategyRef = Annotated[
    str,
    BeforeValidator(_strategy_ref),
    WithJsonSchema({
        "anyOf": [{"type": "string", "enum": list(BUILTIN_STRATEGIES)},
                  {"type": "string", "pattern": DOTTED_PATH, "maxLength": STRATEGY_MAX_LENGTH}],
        "description": "a built-in strategy, or a dotted path to a Strategy subclass in one of the server's "
                       "PAPER_STRATEGY_PACKAGES",
    }),
]
Timeframe = Literal[tuple(TIMEFRAME_SECONDS)]
Symbol = Annotated[str, Field(pattern=SYMBOL_RE.pattern, description="e.g. ETH-USD")]
Symbols = Annotated[list[Symbol], Field(min_length=1, max_length=MAX_SYMBOLS, json_schema_extra={"uniqueItems": True})]
BotName = Annotated[str, Field(min_length=1, max_length=100, pattern=NAME_PATTERN)]
# Strategy params are a strategy's pydantic fields: identifiers, holding numbers, flags, short text
# (or a short list of those).
ParamName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
PARAM_TEXT_MAX, PARAM_LIST_MAX = 1000, 100
_PARAM_SCALAR = [{"type": "integer"}, {"type": "number"}, {"type": "boolean"},
                 {"type": "string", "maxLength": PARAM_TEXT_MAX, "pattern": "^[^\\x00]*$"}, {"type": "null"}]


def _param_value(value, *, nested: bool = False):
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value
    if isinstance(value, str):
        if "\x00" in value or len(value) > PARAM_TEXT_MAX:
            raise ValueError(f"must be text of at most {PARAM_TEXT_MAX} characters, without NUL")
        return value
    if isinstance(value, list) and not nested:
        if len(value) > PARAM_LIST_MAX:
            raise ValueError(f"a list of at most {PARAM_LIST_MAX} values")
        return [_param_value(item, nested=True) for item in value]
    raise ValueError("must be a number, a boolean, text, null or a list of those")


ParamValue = Annotated[Any, BeforeValidator(_param_value), WithJsonSchema(
    {"anyOf": [*_PARAM_SCALAR, {"type": "array", "maxItems": PARAM_LIST_MAX, "items": {"anyOf": _PARAM_SCALAR}}]})]
Params = Annotated[dict[ParamName, ParamValue], Field(
    max_length=64, json_schema_extra={"additionalProperties": False},
    description="the strategy's parameters by name; each built-in's are listed in its Params schema (unknown "
                "names, and values out of range or out of order, e.g. fast >= slow, are refused with 422)")]


class RiskIn(RiskBlock):
    """The risk block as the API takes it: risk.limits.RiskBlock (every limit optional and bounded,
    unknown keys refused), with JSON-typed numbers as the service validates it."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)

    max_orders_per_minute: JsonInt(gt=0, le=MAX_ORDERS_PER_MINUTE) | None = Field(
        None, description="orders placed in any trailing 60 s of bar time")


class ExecutionIn(ExecutionConfig):
    """The execution block as the API takes it: paper.engine.broker.ExecutionConfig, JSON-typed,
    with a lower bound on qty_step (the engine's quantity / step overflowed to infinity, a 500, for
    a step of 5e-324: found by schemathesis)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)

    qty_step: float = Field(1e-8, ge=QTY_STEP_MIN, le=1e6, description="quantities are rounded down to this step")


def _unique_symbols(symbols):
    if symbols is not None and len(set(symbols)) != len(symbols):
        raise ValueError("symbols must be unique")
    return symbols


def _block(value):
    return value.model_dump(exclude_none=True) if isinstance(value, RiskIn) else value.model_dump()


class BotIn(Schema):
    model_config = STRICT_INPUT

    name: BotName
    strategy: StrategyRef
    symbols: Symbols
    timeframe: Timeframe = "1d"
    params: Params = {}
    risk: RiskIn = Field(default_factory=RiskIn, description="every limit is optional")
    execution: ExecutionIn = Field(default_factory=ExecutionIn)

    _symbols = field_validator("symbols")(_unique_symbols)

    def service_kwargs(self) -> dict:
        return {**self.model_dump(exclude={"risk", "execution"}), "risk": _block(self.risk),
                "execution": _block(self.execution)}


class BotPatchIn(Schema):
    """Only the fields sent change; each may be omitted but not null."""

    model_config = STRICT_INPUT

    name: BotName = None
    strategy: StrategyRef = None
    symbols: Symbols = None
    timeframe: Timeframe = None
    params: Params = None
    risk: RiskIn = None
    execution: ExecutionIn = None

    _symbols = field_validator("symbols")(_unique_symbols)

    @field_validator("*", mode="before")
    @classmethod
    def _not_null(cls, value, info):
        # Absent means "leave as is"; an explicit null would wipe the field, so it is refused.
        if value is None:
            raise ValueError(f"{info.field_name} may be omitted but not null")
        return value

    def service_kwargs(self) -> dict:
        changes = self.model_dump(exclude_unset=True, exclude={"risk", "execution"})
        for block in ("risk", "execution"):
            if block in self.model_fields_set:
                changes[block] = _block(getattr(self, block))
        return changes


class BotOut(Schema):
    id: int
    name: str
    owner: str = Field(description="the username of its owner, who may change it (staff may too); '' for a bot "
                                   "from before owners, which only staff may change")
    strategy: str
    symbols: list[str]
    timeframe: str
    params: dict[str, Any]
    risk: dict[str, Any]
    execution: dict[str, Any]
    config_hash: str
    created_at: datetime
    updated_at: datetime

    @staticmethod
    def resolve_owner(bot) -> str:
        return bot["owner"] if isinstance(bot, dict) else bot.owner_name


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


# A backtest runs inside the request: the API refuses synthetic ranges longer than a (leap) year
# of minute bars, about 4 s of engine and ledger time. Longer ones: `manage.py backtest`, which
# has the engine's own cap (bots.services.MAX_SYNTHETIC_BARS).
API_SYNTHETIC_BARS = 366 * 24 * 60


class BacktestIn(Schema):
    model_config = STRICT_INPUT

    start: ApiDate | None = None
    end: ApiDate | None = Field(None, description="YYYY-MM-DD, not before start; synthetic data: default start + 365 days")
    symbol: Symbol | None = Field(None, description="one of the bot's symbols (default: its first)")
    data_source: Literal["stored", "synthetic"] = "stored"
    seed: JsonInt(ge=0, lt=2**63) = 0
    starting_cash: StrictFloat = Field(100_000.0, gt=0, le=1e12)

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

    starting_cash: StrictFloat = Field(gt=0, le=1e12)
    duration_minutes: StrictFloat = Field(gt=0, le=60 * 24 * 31, description="at most 31 days")
    symbol: Symbol | None = Field(None, description="one of the bot's symbols (default: its first)")
    pace: StrictFloat = Field(1.0, ge=0.001, le=1e6, description="bars per bar interval; >1 runs faster than real time")
    data_source: Literal["synthetic", "stored"] = "synthetic"
    seed: JsonInt(ge=0, lt=2**63) | None = None
    start: ApiDate | None = Field(None, description="first bar's date (stored data)")
    warmup_bars: JsonInt(ge=0, le=10_000) | None = None


class PaperStartOut(Schema):
    paper_run_id: str
    status: str
    ws: str


# --- operations ----------------------------------------------------------------------------------
# /bots/halt-all is declared before /bots/{bot_id}, and bot ids are ints, so it is never a bot.

BotId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@contextmanager
def _rules_are_422():
    """The services answer 400 for input that breaks a rule (an invalid bot config); to the API
    that is 422, like every other well-formed body it refuses (400 is a body that is not JSON)."""
    try:
        yield
    except AppError as exc:
        if exc.status == 400:
            exc.status = 422
        raise


def _name_free(name: str | None, bot_id: int | None = None) -> None:
    if name is not None and Bot.objects.filter(name=name).exclude(pk=bot_id).exists():
        raise Conflict("bot_name_taken", f"a bot named {name!r} already exists",
                       details=[{"field": "name", "message": "a bot with this name already exists"}])


def _synthetic_bar_count(bot: Bot, payload: BacktestIn) -> int:
    """How many bars a synthetic backtest would generate (bots.services.backtest_bars' defaults:
    from 2024-01-01, for 365 days)."""
    step = timeframe_seconds(bot.timeframe)
    start = datetime.combine(payload.start or date(2024, 1, 1), time(0), tzinfo=UTC)
    if payload.end is not None:
        end = datetime.combine(payload.end, time(23, 59, 59), tzinfo=UTC)
    else:
        end = start + timedelta(days=365)
    return int((end - start).total_seconds() // step) + 1


@router.post("/bots/halt-all", response=responses(HaltReportOut, *BODY, CSRF))
def bots_halt_all(request: HttpRequest, payload: HaltIn | None = None):
    """Stop every bot's sessions and latch the kill switch (the top bar's first fan-out)."""
    return bots_halt_all_service(reason=payload.reason if payload else None, user=auth_user(request))


@router.get("/bots", response=responses(list[BotOut], 422))
@paginate(Page)
def bots_list(request: HttpRequest):
    return selectors.bot_list()


@router.post("/bots", response=responses({201: BotDetailOut}, *BODY, CSRF, 409))
def bots_create(request: HttpRequest, payload: BotIn):
    """Create a bot. 409 if the name is taken; 422 names each field a rule refuses."""
    _name_free(payload.name)
    with _rules_are_422():
        bot = bot_create(**payload.service_kwargs(), owner=auth_user(request))
    return Status(201, selectors.bot_detail(bot=bot))


@router.get("/bots/{int:bot_id}", response=responses(BotDetailOut, 404, 422))
def bots_get(request: HttpRequest, bot_id: BotId):
    return selectors.bot_detail(bot=bot_get(bot_ref=bot_id))


@router.put("/bots/{int:bot_id}", response=responses(BotDetailOut, *BODY, CSRF, FORBIDDEN, 404, 409))
def bots_replace(request: HttpRequest, bot_id: BotId, payload: BotIn):
    """Replace the bot's config. 403 unless it is yours (or you are staff)."""
    bot = bot_get(bot_ref=bot_id)
    bot_change_assert(user=auth_user(request), bot=bot, action="change")
    _name_free(payload.name, bot.pk)
    with _rules_are_422():
        bot = bot_update(bot=bot, **payload.service_kwargs())
    return selectors.bot_detail(bot=bot)


@router.patch("/bots/{int:bot_id}", response=responses(BotDetailOut, *BODY, CSRF, FORBIDDEN, 404, 409))
def bots_update(request: HttpRequest, bot_id: BotId, payload: BotPatchIn):
    """Change the fields sent. 403 unless the bot is yours (or you are staff)."""
    bot = bot_get(bot_ref=bot_id)
    bot_change_assert(user=auth_user(request), bot=bot, action="change")
    _name_free(payload.name, bot.pk)
    with _rules_are_422():
        bot = bot_update(bot=bot, **payload.service_kwargs())
    return selectors.bot_detail(bot=bot)


@router.delete("/bots/{int:bot_id}", response=responses({204: None}, CSRF, FORBIDDEN, 404, 409, 422))
def bots_delete(request: HttpRequest, bot_id: BotId):
    """Delete a bot and its backtests. 403 unless it is yours (or you are staff); 409 if it has paper
    runs (the ledger keeps them)."""
    bot = bot_get(bot_ref=bot_id)
    bot_change_assert(user=auth_user(request), bot=bot, action="delete")
    bot_delete(bot=bot)
    return Status(204, None)


@router.post("/bots/{int:bot_id}/backtests", response=responses({201: BacktestOut}, *BODY, CSRF, FORBIDDEN, 404))
def bots_backtest(request: HttpRequest, bot_id: BotId, payload: BacktestIn | None = None):
    """Backtest the bot now, inside the request. Synthetic ranges are capped at one year of minute
    bars (422 `too_many_bars`); stored data must cover the range (422 `no_bars`). 403 unless the bot is
    yours (or you are staff)."""
    payload = payload or BacktestIn()
    bot = bot_get(bot_ref=bot_id)
    bot_change_assert(user=auth_user(request), bot=bot, action="backtest")
    if payload.data_source == "synthetic":
        n = _synthetic_bar_count(bot, payload)
        if n > API_SYNTHETIC_BARS:
            raise AppError("too_many_bars", f"a synthetic backtest through the API takes at most {API_SYNTHETIC_BARS:,} "
                           f"bars (a year of minute bars); {n:,} {bot.timeframe} bars were asked for: shorten "
                           "the range, or run `manage.py backtest` for longer ones", status=422,
                           details=[{"field": "body.end", "message": f"at most {API_SYNTHETIC_BARS:,} bars"}])
    with _rules_are_422():
        run = backtest_run(bot=bot, **payload.model_dump())
    return Status(201, run)


@router.get("/bots/{int:bot_id}/backtests", response=responses(list[BacktestOut], 404, 422))
@paginate(Page)
def bots_backtests(request: HttpRequest, bot_id: BotId):
    return selectors.bot_backtests(bot=bot_get(bot_ref=bot_id))


@router.post("/bots/{int:bot_id}/paper", response=responses({201: PaperStartOut}, *BODY, CSRF, FORBIDDEN, 404, 409,
                                                                 423))
def bots_paper_start(request: HttpRequest, bot_id: BotId, payload: PaperIn):
    """Start a paper session. 403 unless the bot is yours (or you are staff); 409 names the gate condition
    that refused it; 423 while the kill switch is latched."""
    bot = bot_get(bot_ref=bot_id)
    bot_change_assert(user=auth_user(request), bot=bot, action="start a paper session of")
    with _rules_are_422():
        run = session_start(
            bot=bot,
            request=SessionRequest(**payload.model_dump()),
            user=auth_user(request),
            # PaperTradingRun.request_id holds 100 characters; a longer header must not be a 500.
            request_id=request.headers.get("X-Request-ID", "")[:100],
        )
    return Status(201, {"paper_run_id": run.id, "status": run.status, "ws": f"/ws/paper/{run.id}"})
