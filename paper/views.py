"""Dashboard pages for paper sessions, the runbook pages, and what every dashboard page shares.

Views validate input, call ledger/selectors, paper/sessions or paper/runbook, and render.
"""
from __future__ import annotations

import io
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from django import forms
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.csrf import csrf_failure as django_csrf_failure
from django.views.decorators.http import require_GET, require_POST

from bots.permissions import run_may_change
from bots.selectors import bot_list
from config.errors import AppError
from ledger import selectors as ledger
from ledger.models import PaperTradingRun, RunStatus
from paper import artifact_contract, artifact_files, runbook
from paper.artifact_scan import ScanTimeout, paper_root, root_scan
from paper.sessions import session_stop
from risk.services import REARM_POLICY, kill_switch_may_rearm, kill_switch_state

LOGIN_URL = "/ui/login/"
SESSION_ROWS = 100  # the sessions list shows the newest this many
LEDGER_ROWS = 200  # orders and fills tables: the latest this many
FRAME_ROWS = 100  # frames rendered into the log before the socket takes over
CHART_POINTS = 5000  # equity points sent to the chart, evenly thinned beyond this
ARTIFACT_TYPES = {
    ".json": "application/json",
    ".md": "text/markdown; charset=utf-8",
    ".csv": "text/csv; charset=utf-8",
    ".png": "image/png",
}
METRIC_ORDER = ("total_return", "cagr", "sharpe", "sortino", "max_drawdown", "win_rate", "profit_factor",
                "exposure", "num_trades", "num_fills", "total_fees", "final_equity", "bars")


# --- shared by every dashboard view -----------------------------------------------------------

def is_htmx(request: HttpRequest) -> bool:
    # django-htmx's middleware sets request.htmx (truthy for HTMX requests).
    return bool(getattr(request, "htmx", False))


def operator_required(view):
    """login_required(login_url="/ui/login/"); an HTMX call whose session has ended sends the
    whole page to the login form (HX-Redirect) instead of swapping the form into a fragment."""
    guarded = login_required(view, login_url=LOGIN_URL)

    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs):
        if not request.user.is_authenticated and is_htmx(request):
            page = urlsplit(request.headers.get("HX-Current-URL", "")).path or "/"
            return HttpResponse(status=401, headers={"HX-Redirect": f"{LOGIN_URL}?{urlencode({'next': page})}"})
        return guarded(request, *args, **kwargs)

    return wrapper


def back(request: HttpRequest) -> HttpResponse:
    """Where a plain (non-HTMX) form POST returns to: the page it came from, on this site."""
    referer = request.META.get("HTTP_REFERER", "")
    if referer and url_has_allowed_host_and_scheme(referer, allowed_hosts={request.get_host()}):
        return redirect(referer)
    return redirect("/")


def topbar_state(user) -> dict:
    """What the top bar shows on every page: the latch (and whether `user` may re-arm it), live
    session counts, active alerts ("?" while the artifact root's scan is too slow to wait for)."""
    try:
        snapshot = root_scan("alerts", runbook.alerts, now=datetime.now(UTC),
                             stale_minutes=runbook.DEFAULT_STALE_MINUTES)
        alerts = len(snapshot["alerts"])
    except ScanTimeout:
        alerts = "?"
    return {
        "switch": kill_switch_state(),
        "can_rearm": user is not None and user.is_authenticated and kill_switch_may_rearm(user),
        "rearm_policy": REARM_POLICY,
        "running": ledger.runs_list(status=RunStatus.RUNNING).count(),
        "queued": ledger.runs_list(status=RunStatus.QUEUED).count(),
        "alerts": alerts,
    }


def page(request: HttpRequest, template: str, context: dict, *, status: int = 200) -> HttpResponse:
    """Render a full page (base.html with its top bar)."""
    return render(request, template, {**context, "topbar": topbar_state(request.user)}, status=status)


def not_found(request: HttpRequest, message: str) -> HttpResponse:
    """A dashboard 404, in HTML where the dashboard is (the site's handler404 answers JSON)."""
    if is_htmx(request):
        return render(request, "dashboard/error_fragment.html", {"message": message}, status=404)
    return page(request, "dashboard/not_found.html", {"message": message}, status=404)


def forbidden(request: HttpRequest, message: str) -> HttpResponse:
    """A dashboard 403 with the reason: the error fragment for HTMX (the page flashes it), else a page."""
    if is_htmx(request):
        return render(request, "dashboard/error_fragment.html", {"message": message}, status=403)
    return page(request, "dashboard/forbidden.html", {"message": message}, status=403)


def unavailable(request: HttpRequest, message: str) -> HttpResponse:
    """A dashboard 503 with the reason (a scan of the artifact root that took too long)."""
    if is_htmx(request):
        return render(request, "dashboard/error_fragment.html", {"message": message}, status=503)
    return page(request, "dashboard/unavailable.html", {"message": message}, status=503)


CSRF_REFUSED = ("The server refused the request: the page's security token (CSRF) is missing or stale. "
                "Reload the page and try again.")


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """settings.CSRF_FAILURE_VIEW. An HTMX request gets the reason as the error fragment the
    dashboard shows at the top of the page; any other request (a plain form, the admin) Django's page."""
    if is_htmx(request):
        return render(request, "dashboard/error_fragment.html", {"message": CSRF_REFUSED}, status=403)
    return django_csrf_failure(request, reason=reason)


def _run_or_none(run_id: str) -> PaperTradingRun | None:
    try:
        return ledger.run_get(run_id=run_id)
    except AppError:
        return None


# --- the top bar --------------------------------------------------------------------------------

@operator_required
@require_GET
def topbar_status(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/topbar_status.html", {"topbar": topbar_state(request.user)})


# --- sessions list ------------------------------------------------------------------------------

class SessionFilters(forms.Form):
    status = forms.ChoiceField(choices=[("", "any status"), *RunStatus.choices], required=False)
    bot = forms.ModelChoiceField(queryset=bot_list(), required=False, empty_label="any bot")
    date = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}),
                           help_text="started on (UTC)")


def _session_rows(request: HttpRequest) -> dict:
    filters = SessionFilters(request.GET)
    filters.is_valid()  # an invalid filter is shown next to its input and ignored
    chosen = filters.cleaned_data
    bot = chosen.get("bot")
    runs = ledger.runs_list(status=chosen.get("status") or None, bot_id=bot.pk if bot else None)
    if chosen.get("date"):
        runs = runs.filter(started_at__date=chosen["date"])
    return {
        "filters": filters,
        "filtered": any(chosen.get(k) for k in ("status", "bot", "date")),
        "runs": list(runs.select_related("bot", "owner")[:SESSION_ROWS]),
        "total": runs.count(),
        "query": request.GET.urlencode(),
    }


@operator_required
@require_GET
def sessions(request: HttpRequest) -> HttpResponse:
    return page(request, "paper/sessions.html", _session_rows(request))


@operator_required
@require_GET
def sessions_rows(request: HttpRequest) -> HttpResponse:
    return render(request, "paper/sessions_rows.html", _session_rows(request))


# --- one session --------------------------------------------------------------------------------

def _chart_points(run: PaperTradingRun) -> list[dict]:
    """The ledger's equity curve as chart points, evenly thinned to CHART_POINTS (last kept)."""
    rows = list(ledger.run_equity(run=run).values_list("ts", "equity"))
    stride = max(1, -(-len(rows) // CHART_POINTS))
    picked = rows[::stride]
    if rows and (len(rows) - 1) % stride:
        picked.append(rows[-1])
    return [{"time": int(ts.timestamp()), "value": equity} for ts, equity in picked]


def _fill_markers(fills) -> list[dict]:
    return [{"time": int(f.filled_at.timestamp()), "side": f.side, "qty": f.qty, "price": f.price}
            for f in sorted(fills, key=lambda f: (f.filled_at, f.pk))]


def _positions(run: PaperTradingRun, last_frame: dict | None) -> list[dict]:
    """Open positions from the ledger's fills, with the last frame's marks where it has them."""
    marks = (last_frame or {}).get("positions") or {}
    return [{"symbol": symbol, **book, **{k: marks.get(symbol, {}).get(k) for k in ("market_value", "unrealized_pnl")}}
            for symbol, book in ledger.run_positions(run=run).items()]


def _artifacts(run: PaperTradingRun) -> list[dict]:
    # "exists" as the download sees it: a regular file, no link followed (session_artifact).
    folder = paper_root() / run.id
    return [{"name": name, "exists": artifact_files.is_regular(folder, name)} for name in artifact_contract.CANONICAL_FILES]


def metric_rows(metrics: dict | None) -> list[tuple[str, object]]:
    """(key, value) pairs, the headline metrics first, then the other plain values by name."""
    metrics = metrics or {}
    known = [(k, metrics[k]) for k in METRIC_ORDER if k in metrics]
    return known + [(k, v) for k, v in sorted(metrics.items())
                    if k not in METRIC_ORDER and isinstance(v, int | float | str | bool)]


@operator_required
@require_GET
def session_detail(request: HttpRequest, run_id: str) -> HttpResponse:
    run = _run_or_none(run_id)
    if run is None:
        return not_found(request, f"There is no paper session {run_id!r}.")
    frames = list(ledger.run_frames(run=run).reverse()[:FRAME_ROWS])[::-1]
    fills = list(ledger.run_fills(run=run).reverse()[:LEDGER_ROWS])
    plan = (run.config_snapshot or {}).get("session") or {}
    return page(request, "paper/session_detail.html", {
        "run": run,
        "can_stop": run_may_change(request.user, run),
        "plan": plan,
        "bars_total": plan.get("n_bars"),
        "equity": run.ending_equity if run.ending_equity is not None else run.starting_cash,
        "positions": _positions(run, frames[-1].payload if frames else None),
        "orders": list(ledger.run_orders(run=run).reverse()[:LEDGER_ROWS]),
        "order_count": ledger.run_orders(run=run).count(),
        "fills": fills,
        "frames": frames,
        "last_seq": frames[-1].seq if frames else 0,
        "chart_points": _chart_points(run),
        "fill_markers": _fill_markers(fills),
        "metrics": metric_rows(run.metrics),
        "artifacts": _artifacts(run),
        "ws_path": run.ws_path,
        "ledger_rows": LEDGER_ROWS,
    })


@operator_required
@require_POST
def session_stop_view(request: HttpRequest, run_id: str) -> HttpResponse:
    try:
        report = session_stop(run_id=run_id, user=request.user)
    except AppError as exc:
        if exc.status == 403:
            return forbidden(request, exc.message)
        if not is_htmx(request):
            return not_found(request, exc.message)
        return render(request, "dashboard/error_fragment.html", {"message": exc.message}, status=exc.status)
    if not is_htmx(request):
        return back(request)
    return render(request, "paper/stop_result.html", {"report": report, "run_id": run_id})


@operator_required
@require_GET
def session_artifact(request: HttpRequest, run_id: str, name: str) -> HttpResponse:
    """One canonical artifact file of a session folder; nothing else under the root is served."""
    if name not in artifact_contract.CANONICAL_FILES:
        return not_found(request, f"{name!r} is not a session artifact.")
    run = _run_or_none(run_id)
    if run is None:
        return not_found(request, f"There is no paper session {run_id!r}.")
    # Read as artifact_files reads: the session folder and every name in it as they are (a
    # symlink, even to a file inside the root, is refused), regular files only, at most their
    # kind's limit, no open that waits (a FIFO, /proc/kmsg). The bytes are in memory anyway:
    # config/asgi.py reads a synchronous stream whole before sending it.
    try:
        data = artifact_files.read_file(paper_root() / run.id, name)
    except (OSError, ValueError):
        return not_found(request, f"{name} has not been written for session {run.id} yet.")
    return FileResponse(io.BytesIO(data), content_type=ARTIFACT_TYPES[Path(name).suffix],
                        filename=Path(name).name)


# --- the runbook pages: the same computations as `manage.py run --paper-sessions-*` -------------

@operator_required
@require_GET
def health(request: HttpRequest) -> HttpResponse:
    try:
        health, records = root_scan("health", lambda root: (runbook.health(root, now=datetime.now(UTC)),
                                                            runbook.sessions_scan(root)))
    except ScanTimeout as exc:
        return unavailable(request, exc.message)
    return page(request, "paper/health.html", {"health": health, "records": list(reversed(records))[:SESSION_ROWS]})


class AlertsForm(forms.Form):
    stale_minutes = forms.FloatField(min_value=0.01, max_value=525_600, initial=runbook.DEFAULT_STALE_MINUTES,
                                     required=False, help_text="a running session with no heartbeat for longer is stale")


@operator_required
@require_GET
def alerts(request: HttpRequest) -> HttpResponse:
    form = AlertsForm(request.GET or None)
    stale = runbook.DEFAULT_STALE_MINUTES
    if form.is_bound and form.is_valid() and form.cleaned_data["stale_minutes"] is not None:
        stale = form.cleaned_data["stale_minutes"]
    try:
        snapshot = root_scan("alerts", runbook.alerts, now=datetime.now(UTC), stale_minutes=stale)
    except ScanTimeout as exc:
        return unavailable(request, exc.message)
    return page(request, "paper/alerts.html", {"form": form, "alerts": snapshot})


class PromotionForm(forms.Form):
    min_bars = forms.IntegerField(min_value=0, required=False)
    min_trades = forms.IntegerField(min_value=0, required=False)
    min_sharpe = forms.FloatField(min_value=-100, max_value=100, required=False)
    max_drawdown = forms.FloatField(min_value=0, max_value=1, required=False, help_text="a fraction: 0.35 = 35%")


@operator_required
@require_GET
def promotion(request: HttpRequest) -> HttpResponse:
    form = PromotionForm(request.GET or None)
    overrides = {}
    if form.is_bound and form.is_valid():
        overrides = {k: v for k, v in form.cleaned_data.items() if v is not None}
    try:
        contract = runbook.PromotionContract(**overrides)
    except runbook.RunbookError as exc:
        form.add_error(None, str(exc))
        contract = runbook.PromotionContract()
    try:
        report = root_scan("promotion", runbook.promotion, contract=contract)
    except ScanTimeout as exc:
        return unavailable(request, exc.message)
    return page(request, "paper/promotion.html", {"form": form, "promotion": report})
