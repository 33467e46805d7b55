"""Dashboard pages for bots: list, detail, author and edit, backtest, and starting a paper session.

Views validate with bots/forms.py, call bots/services or paper/sessions, and render.
"""
from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from bots.forms import DEFAULT_STRATEGY, BacktestForm, BotForm, PaperSessionForm, add_service_errors
from bots.models import BacktestRun, Bot
from bots.permissions import POLICY, bot_change_assert, bot_may_change
from bots.selectors import bot_backtests, bot_detail, bot_list
from bots.services import backtest_run, bot_create, bot_get, bot_update
from config.errors import AppError, Forbidden
from ledger.selectors import runs_list
from paper.sessions import SessionRequest, session_start
from paper.views import forbidden, is_htmx, metric_rows, not_found, operator_required, page

BACKTEST_ROWS = 20
SESSION_ROWS = 20
# What to do about each gate refusal (bots/services.py GATE_CONDITIONS), in plain words.
GATE_HINTS = {
    "no_backtest": "Run a backtest of this bot (above), then start the session again.",
    "config_changed": "The bot changed since its last backtest: backtest the current config, then start again.",
    "backtest_too_old": "Run a fresh backtest, then start again.",
    "zero_sharpe": "The latest backtest has a zero or undefined sharpe: change the bot or the "
                   "backtest period and backtest again.",
}
LATCHED_HINT = "Re-arm the kill switch in the top bar, then start the session again."


def _bot_or_none(bot_id) -> Bot | None:
    try:
        return bot_get(bot_ref=int(bot_id))
    except (AppError, TypeError, ValueError):
        return None


def _refusal(request: HttpRequest, bot: Bot, action: str) -> HttpResponse | None:
    """A 403 page (or fragment) with the reason when `request.user` may not `action` the bot, else None."""
    try:
        bot_change_assert(user=request.user, bot=bot, action=action)
    except Forbidden as exc:
        return forbidden(request, exc.message)
    return None


def _equity_points(backtest: BacktestRun | None) -> list[dict]:
    if backtest is None:
        return []
    return [{"time": int(ts), "value": equity} for ts, equity in backtest.equity]


def _bot_context(bot: Bot, *, user, backtest_form=None, session_form=None, refusal=None) -> dict:
    detail = bot_detail(bot=bot)
    backtests = list(bot_backtests(bot=bot)[:BACKTEST_ROWS])
    latest = backtests[0] if backtests else None
    return {
        "bot": bot,
        "can_change": bot_may_change(user, bot),
        "policy": POLICY,
        "gate": detail["gate"],
        "backtests": backtests,
        "latest": latest,
        "latest_points": _equity_points(latest),
        "latest_metrics": metric_rows(latest.metrics if latest else None),
        "sessions": list(runs_list(bot_id=bot.pk)[:SESSION_ROWS]),
        "backtest_form": backtest_form or BacktestForm(bot=bot),
        "session_form": session_form or PaperSessionForm(bot=bot),
        "refusal": refusal,
    }


@operator_required
@require_GET
def bots(request: HttpRequest) -> HttpResponse:
    return page(request, "bots/bots.html", {"bots": [bot_detail(bot=bot) for bot in bot_list()]})


@operator_required
@require_GET
def bot_page(request: HttpRequest, bot_id: int) -> HttpResponse:
    bot = _bot_or_none(bot_id)
    if bot is None:
        return not_found(request, f"There is no bot {bot_id}.")
    return page(request, "bots/bot_detail.html", _bot_context(bot, user=request.user))


@operator_required
@require_http_methods(["GET", "POST"])
def bot_new(request: HttpRequest) -> HttpResponse:
    form = BotForm(request.POST if request.method == "POST" else None)
    if form.is_bound and form.is_valid():
        try:
            bot = bot_create(**form.service_kwargs(), owner=request.user)
        except AppError as exc:
            form.add_service_errors(exc.details, exc.message)
        else:
            return redirect("dashboard:bot", bot_id=bot.pk)
    return page(request, "bots/bot_form.html", {"form": form, "bot": None}, status=422 if form.errors else 200)


@operator_required
@require_http_methods(["GET", "POST"])
def bot_edit(request: HttpRequest, bot_id: int) -> HttpResponse:
    bot = _bot_or_none(bot_id)
    if bot is None:
        return not_found(request, f"There is no bot {bot_id}.")
    refused = _refusal(request, bot, "change")
    if refused:
        return refused
    form = BotForm(request.POST if request.method == "POST" else None, bot=bot)
    if form.is_bound and form.is_valid():
        try:
            bot_update(bot=bot, **form.service_kwargs())
        except AppError as exc:
            form.add_service_errors(exc.details, exc.message)
        else:
            return redirect("dashboard:bot", bot_id=bot.pk)
    return page(request, "bots/bot_form.html", {"form": form, "bot": bot}, status=422 if form.errors else 200)


@operator_required
@require_GET
def strategy_params(request: HttpRequest) -> HttpResponse:
    """The params fieldset for the chosen strategy (the bot form swaps it in on change)."""
    bot = _bot_or_none(request.GET.get("bot")) if request.GET.get("bot") else None
    form = BotForm(bot=bot, strategy=request.GET.get("strategy") or DEFAULT_STRATEGY)
    return render(request, "bots/params_fieldset.html", {"form": form})


@operator_required
@require_POST
def bot_backtest(request: HttpRequest, bot_id: int) -> HttpResponse:
    bot = _bot_or_none(bot_id)
    if bot is None:
        return not_found(request, f"There is no bot {bot_id}.")
    refused = _refusal(request, bot, "backtest")
    if refused:
        return refused
    form = BacktestForm(request.POST, bot=bot)
    status = 422
    if form.is_valid():
        choice = form.cleaned_data
        try:
            backtest_run(bot=bot, data_source=choice["data_source"], symbol=choice["symbol"] or None,
                         start=choice["start"], end=choice["end"], starting_cash=choice["starting_cash"],
                         seed=choice["seed"])
        except AppError as exc:
            add_service_errors(form, exc.details, exc.message)
            status = exc.status
        else:
            status = 200
    if not is_htmx(request):
        if status == 200:
            return redirect("dashboard:bot", bot_id=bot.pk)
        return page(request, "bots/bot_detail.html", _bot_context(bot, user=request.user, backtest_form=form),
                    status=status)
    context = _bot_context(bot, user=request.user, backtest_form=form)
    return render(request, "bots/backtest_panel.html", {**context, "oob": status == 200}, status=status)


@operator_required
@require_POST
def bot_paper(request: HttpRequest, bot_id: int) -> HttpResponse:
    """Start a live paper session; the gate's refusal (409) or the latched kill switch (423) is
    shown in the form, in plain words."""
    bot = _bot_or_none(bot_id)
    if bot is None:
        return not_found(request, f"There is no bot {bot_id}.")
    refused = _refusal(request, bot, "start a paper session of")
    if refused:
        return refused
    form = PaperSessionForm(request.POST, bot=bot)
    refusal, status = None, 422
    if form.is_valid():
        choice = form.cleaned_data
        session = SessionRequest(starting_cash=choice["starting_cash"], duration_minutes=choice["duration_minutes"],
                                 symbol=choice["symbol"] or None, pace=choice["pace"],
                                 data_source=choice["data_source"])
        try:
            run = session_start(bot=bot, request=session, user=request.user)
        except AppError as exc:
            status = exc.status
            if exc.status == 409:
                condition = (exc.details or {}).get("condition") if isinstance(exc.details, dict) else None
                refusal = {"title": "The paper gate refused this session.",
                           "message": exc.message.removeprefix("paper metadata gate: "),
                           "hint": GATE_HINTS.get(condition, ""), "condition": condition}
            elif exc.status == 423:
                refusal = {"title": "The kill switch is latched.", "message": exc.message, "hint": LATCHED_HINT,
                           "condition": "kill_switch_latched"}
            else:
                add_service_errors(form, exc.details, exc.message)
        else:
            url = reverse("dashboard:session", args=[run.id])
            if is_htmx(request):
                return HttpResponse(f'Session <a href="{url}">{run.id}</a> started.', headers={"HX-Redirect": url})
            return redirect(url)
    if not is_htmx(request):
        return page(request, "bots/bot_detail.html",
                    _bot_context(bot, user=request.user, session_form=form, refusal=refusal), status=status)
    return render(request, "bots/paper_panel.html",
                  {"bot": bot, "session_form": form, "refusal": refusal, "can_change": True}, status=status)
