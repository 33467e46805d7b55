"""The top bar's kill switch: fire it (stop everything, latch) and re-arm it, from the dashboard.

Both call risk/services.py and answer with the fragments the top bar swaps in. Any operator may
fire it; re-arming needs a staff user (403 with the reason otherwise).
"""
from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST

from config.errors import Forbidden
from paper.views import back, is_htmx, operator_required, page, topbar_state
from risk.services import kill_switch_fire, kill_switch_rearm


@operator_required
@require_POST
def kill_switch(request: HttpRequest) -> HttpResponse:
    """Latch, then fan out to every halt handler; the answer says what stopped and how long it took."""
    report = kill_switch_fire(reason=f"fired from the dashboard by {request.user.username}", user=request.user)
    if not is_htmx(request):
        return back(request)
    return render(request, "risk/kill_switch_report.html", {"report": report, "topbar": topbar_state(request.user)})


@operator_required
@require_POST
def kill_switch_rearm_view(request: HttpRequest) -> HttpResponse:
    try:
        kill_switch_rearm(user=request.user)
    except Forbidden as exc:
        if is_htmx(request):
            return render(request, "dashboard/error_fragment.html", {"message": exc.message}, status=exc.status)
        return page(request, "dashboard/forbidden.html", {"message": exc.message}, status=exc.status)
    if not is_htmx(request):
        return back(request)
    return render(request, "risk/rearmed.html", {"topbar": topbar_state(request.user)})
