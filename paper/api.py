"""REST operations for paper sessions: list and read runs, their ledger rows and frames; stop them.

Reads go through ledger/selectors.py; stops through paper/sessions.py and risk/services.py.
"""
from datetime import UTC, datetime
from typing import Annotated, Any

from django.http import HttpRequest
from ninja import Field, Query, Router, Schema
from ninja import Path as PathParam
from ninja.pagination import paginate

from config.api import BODY, CSRF, FORBIDDEN, Out, Page, responses
from config.auth import auth_user
from ledger import selectors
from ledger.models import RunStatus
from paper import runbook
from paper.artifact_scan import root_scan
from paper.models import ApiToken
from paper.sessions import session_stop
from paper.tokens import api_token_for, api_token_revoke, api_tokens_of
from risk.api import HaltIn, HaltReportOut
from risk.services import sessions_stop_all

router = Router(tags=["paper"])

# A run id as ledger.models.new_run_id makes them (and as the frames socket's route accepts them).
RunId = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9_.-]{1,40}$", description="e.g. 20261121T081500Z-3f9a2c1b")]


# --- schemas -------------------------------------------------------------------------------------

class RunOut(Out):
    id: str
    bot_id: int
    owner: str = Field(validation_alias="owner_name",
                       description="the username of who started it ('' for a replay or a run from before owners)")
    status: str
    status_reason: str
    equity: float = Field(description="ending equity so far, or the starting cash before the first bar")
    total_pnl: float | None
    num_fills: int
    starting_cash: float
    duration_minutes: float | None
    pace: float
    symbol: str
    timeframe: str
    mode: str
    data_source: str
    data_label: str = Field(description="'synthetic' or 'stored': synthetic prices are never real ones")
    seed: int
    bars_processed: int
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    updated_at: datetime
    ws: str = Field(validation_alias="ws_path", description="the run's frames socket")


class PositionOut(Out):
    qty: float
    avg_price: float


class RunDetailOut(RunOut):
    positions: dict[str, PositionOut] = Field(description="open positions from the recorded fills")
    halt: dict | None
    metrics: dict[str, Any]
    config_hash: str
    error_type: str
    error_message: str
    stop_requested: str
    request_id: str


class FillOut(Out):
    fill_id: str
    order_id: str
    symbol: str
    side: str
    qty: float
    price: float
    fee: float
    liquidity: str
    bar_index: int
    filled_at: datetime


class OrderOut(Out):
    order_id: str
    symbol: str
    side: str
    type: str
    qty: float
    limit_price: float | None
    stop_price: float | None
    tif: str
    status: str
    filled_qty: float
    avg_fill_price: float | None
    reason: str
    bar_index: int
    created_at: datetime
    updated_at: datetime


class EquityPointOut(Out):
    bar_index: int
    ts: datetime
    equity: float
    cash: float
    position: float


class FrameOut(Out):
    seq: int
    stage: str
    message: str
    created_at: datetime
    payload: dict[str, Any] = Field(description="the frame exactly as sent on the WebSocket")


class StopOut(Schema):
    stopped: list[str]
    count: int
    elapsed_ms: float = Field(description="until the sessions were closed in the ledger (no bar, order or fill after)")
    detail: str | None = None


# --- operations ----------------------------------------------------------------------------------
# A run's rows are read as dicts of their schema's columns (`.values()`): a page of 100 fills took
# ~2.2 ms of CPU as model instances and ~0.8 ms this way.
# /paper/stop-all is declared before /paper/{run_id} so that POST never reaches a run id.

@router.post("/paper/stop-all", response=responses(HaltReportOut, *BODY, CSRF))
def paper_stop_all(request: HttpRequest, payload: HaltIn | None = None):
    """Stop every active session. Does not latch: new sessions may start right after."""
    return sessions_stop_all(reason=payload.reason if payload else None, user=auth_user(request))


# --- the runbook's computations (paper/runbook.py), the same as the operator commands --------------
# Declared before /paper/{run_id} so these names are never read as run ids.

@router.get("/paper/health", response=responses(dict[str, Any]))
def paper_health(request: HttpRequest):
    """Counts by status, the latest session and the latest visible issue (artifact root).
    503 (scan_timeout) if the scan takes longer than PAPER_SCAN_TIMEOUT_SECONDS."""
    return root_scan("health", runbook.health, now=datetime.now(UTC))


@router.get("/paper/alerts", response=responses(dict[str, Any], 422))
def paper_alerts(request: HttpRequest, stale_minutes: float = Query(60.0, gt=0, le=525_600)):
    """PAPER_SESSION_FAILED / _ABORTED / _STALE (and _UNREADABLE) alerts, as a JSON snapshot.
    503 (scan_timeout) if the scan takes longer than PAPER_SCAN_TIMEOUT_SECONDS."""
    return root_scan("alerts", runbook.alerts, now=datetime.now(UTC), stale_minutes=stale_minutes)


@router.get("/paper/promotion", response=responses(dict[str, Any], 422))
def paper_promotion(
    request: HttpRequest,
    min_bars: int | None = Query(None, ge=0),
    min_trades: int | None = Query(None, ge=0),
    min_sharpe: float | None = Query(None, ge=-100, le=100),
    max_drawdown: float | None = Query(None, ge=0, le=1),
):
    """Ready candidates and blocked sessions against the promotion contract (thresholds included)."""
    overrides = {k: v for k, v in {"min_bars": min_bars, "min_trades": min_trades, "min_sharpe": min_sharpe,
                                   "max_drawdown": max_drawdown}.items() if v is not None}
    return root_scan("promotion", runbook.promotion, contract=runbook.PromotionContract(**overrides))


@router.get("/paper", response=responses(list[RunOut], 422))
@paginate(Page)
def paper_list(request: HttpRequest, status: RunStatus | None = None,
               bot_id: int | None = Query(None, ge=1, le=2**63 - 1)):
    return selectors.runs_list(status=status, bot_id=bot_id)


@router.get("/paper/{run_id}", response=responses(RunDetailOut, 404, 422))
def paper_get(request: HttpRequest, run_id: RunId):
    return selectors.run_detail(run_id=run_id)


@router.post("/paper/{run_id}/stop", response=responses(StopOut, CSRF, FORBIDDEN, 404, 422))
def paper_stop(request: HttpRequest, run_id: RunId):
    """Stop a session. When this answers it is closed in the ledger (aborted: no bar, order or fill of
    it accepted after); the session then writes its cancelled orders, metrics and goodbye frame.
    403 unless you started it or own its bot (or are staff); /paper/stop-all stops every session."""
    return session_stop(run_id=run_id, user=auth_user(request))


@router.get("/paper/{run_id}/fills", response=responses(list[FillOut], 404, 422))
@paginate(Page)
def paper_fills(request: HttpRequest, run_id: RunId):
    return selectors.run_fills_counted(run_id=run_id).values(*FillOut.model_fields)


@router.get("/paper/{run_id}/orders", response=responses(list[OrderOut], 404, 422))
@paginate(Page)
def paper_orders(request: HttpRequest, run_id: RunId):
    return selectors.run_orders(run=selectors.run_must_exist(run_id=run_id)).values(*OrderOut.model_fields)


@router.get("/paper/{run_id}/equity", response=responses(list[EquityPointOut], 404, 422))
@paginate(Page)
def paper_equity(request: HttpRequest, run_id: RunId):
    return selectors.run_equity(run=selectors.run_must_exist(run_id=run_id)).values(*EquityPointOut.model_fields)


@router.get("/paper/{run_id}/frames", response=responses(list[FrameOut], 404, 422))
@paginate(Page)
def paper_frames(request: HttpRequest, run_id: RunId, after_seq: int | None = Query(None, ge=0, le=2**31 - 1)):  # the seq column is 32-bit
    """Frames in seq order; `?after_seq=N` resumes after the last one a client has."""
    return selectors.run_frames(run=selectors.run_must_exist(run_id=run_id), after_seq=after_seq).values(
        *FrameOut.model_fields)


# --- API tokens: list your own, revoke one ---------------------------------------------------------
# Tokens are made with `manage.py create_api_token USER` (the raw token is shown once, there).

tokens_router = Router(tags=["tokens"])


class TokenOut(Schema):
    id: int
    name: str
    prefix: str = Field(description="the token's first characters, to tell tokens apart (never the token)")
    user: str
    created_at: datetime
    last_used_at: datetime | None = Field(description="to the minute")
    revoked_at: datetime | None

    @staticmethod
    def resolve_user(token: ApiToken) -> str:
        return token.user.username


TokenId = Annotated[int, PathParam(ge=1, le=2**63 - 1)]


@tokens_router.get("/tokens", response=responses(list[TokenOut], 422))
@paginate(Page)
def tokens_list(request: HttpRequest):
    """The caller's own API tokens, newest first, revoked ones included."""
    return api_tokens_of(user=auth_user(request)).select_related("user")


@tokens_router.delete("/tokens/{int:token_id}", response=responses(TokenOut, CSRF, 404, 422))
def tokens_revoke(request: HttpRequest, token_id: TokenId):
    """Revoke a token: your own, or anyone's if you are staff (others' tokens are 404 to you).
    Revoking a revoked token changes nothing and answers the same. A request made with the revoked
    token is refused (401) from then on, this one included if it revoked itself."""
    return api_token_revoke(token=api_token_for(user=auth_user(request), token_id=token_id))
