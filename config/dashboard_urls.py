"""URL routes of the operator dashboard: home (sessions) at `/`, everything else under `/ui/`.

The REST API keeps the site root's other paths (/bots, /paper, /kill-switch, /docs); see config/urls.py.
"""
from django.contrib.auth import views as auth_views
from django.urls import path

from bots import views as bots
from paper import views as paper
from paper.views import LOGIN_URL
from risk import views as risk

app_name = "dashboard"

urlpatterns = [
    path("", paper.sessions, name="home"),
    path("ui/login/", auth_views.LoginView.as_view(template_name="dashboard/login.html", next_page="/",
                                                   redirect_authenticated_user=True), name="login"),
    path("ui/logout/", auth_views.LogoutView.as_view(next_page=LOGIN_URL), name="logout"),
    # sessions
    path("ui/sessions/", paper.sessions, name="sessions"),
    path("ui/sessions/<str:run_id>/", paper.session_detail, name="session"),
    path("ui/sessions/<str:run_id>/stop/", paper.session_stop_view, name="session-stop"),
    path("ui/sessions/<str:run_id>/artifacts/<path:name>", paper.session_artifact, name="session-artifact"),
    # bots
    path("ui/bots/", bots.bots, name="bots"),
    path("ui/bots/new/", bots.bot_new, name="bot-new"),
    path("ui/bots/<int:bot_id>/", bots.bot_page, name="bot"),
    path("ui/bots/<int:bot_id>/edit/", bots.bot_edit, name="bot-edit"),
    path("ui/bots/<int:bot_id>/backtest/", bots.bot_backtest, name="bot-backtest"),
    path("ui/bots/<int:bot_id>/paper/", bots.bot_paper, name="bot-paper"),
    # the runbook's computations
    path("ui/health/", paper.health, name="health"),
    path("ui/alerts/", paper.alerts, name="alerts"),
    path("ui/promotion/", paper.promotion, name="promotion"),
    # the kill switch
    path("ui/kill-switch/", risk.kill_switch, name="kill-switch"),
    path("ui/kill-switch/rearm/", risk.kill_switch_rearm_view, name="kill-switch-rearm"),
    # fragments HTMX polls or swaps
    path("ui/fragments/topbar-status/", paper.topbar_status, name="topbar-status"),
    path("ui/fragments/sessions-rows/", paper.sessions_rows, name="sessions-rows"),
    path("ui/fragments/strategy-params/", bots.strategy_params, name="strategy-params"),
]
