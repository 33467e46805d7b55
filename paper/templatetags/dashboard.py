"""Dashboard filters: times in UTC with relative time, money, quantities, metrics, status badges.

Presentation only: every value arrives computed; these only decide how it reads.
"""
from __future__ import annotations

import math
from datetime import UTC, datetime

from django import template
from django.utils import timezone
from django.utils.html import format_html

register = template.Library()

DASH = "—"

# Metric keys by how they read: fractions as %, ratios with 2 decimals, counts, money.
PERCENT_METRICS = {"total_return", "cagr", "max_drawdown", "win_rate", "exposure"}
MONEY_METRICS = {"total_fees", "final_equity", "total_pnl", "ending_equity", "starting_cash"}
COUNT_METRICS = {"num_trades", "num_fills", "bars", "num_bars"}

STATUS_CLASSES = {
    "queued": "badge-muted", "running": "badge-live", "success": "badge-ok",
    "completed": "badge-ok", "halted": "badge-bad", "failed": "badge-bad", "aborted": "badge-warn",
    "unknown": "badge-bad", "passed": "badge-ok",
    # order statuses
    "accepted": "badge-live", "partially_filled": "badge-live", "filled": "badge-ok",
    "canceled": "badge-muted", "expired": "badge-muted", "rejected": "badge-bad",
}
# status_reason codes (paper/sessions.py) and how a badge names them.
REASON_BADGES = (
    ("risk_halt", "risk halt", "badge-bad"),
    ("kill_switch", "kill switch", "badge-kill"),
    ("operator_stop", "operator stop", "badge-muted"),
    ("worker_lost", "worker lost", "badge-bad"),
    ("resume_mismatch", "resume mismatch", "badge-bad"),
    ("exception", "exception", "badge-bad"),
)


def _number(value) -> float | None:
    if value is None or isinstance(value, bool) or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _as_datetime(value) -> datetime | None:
    if isinstance(value, datetime):
        return value if timezone.is_aware(value) else value.replace(tzinfo=UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def relative(moment: datetime, now: datetime | None = None) -> str:
    """'just now', '3 min ago', '2 h ago', '5 d ago', or 'in 4 min' for the future."""
    seconds = ((now or timezone.now()) - moment).total_seconds()
    ahead, seconds = seconds < 0, abs(seconds)
    if seconds < 45:
        return "just now"
    if seconds < 3600:
        span = f"{max(1, round(seconds / 60))} min"
    elif seconds < 86400 * 2:
        span = f"{seconds / 3600:.0f} h"
    elif seconds < 86400 * 365:
        span = f"{seconds / 86400:.0f} d"
    else:
        span = f"{seconds / (86400 * 365):.1f} y"
    return f"in {span}" if ahead else f"{span} ago"


@register.filter
def when(value) -> str:
    """'2026-11-21 09:15 UTC (3 min ago)' in a <time> element; '—' for no time."""
    moment = _as_datetime(value)
    if moment is None:
        return DASH
    moment = moment.astimezone(UTC)
    return format_html('<time datetime="{}" title="{}">{} UTC <span class="ago">({})</span></time>',
                       moment.isoformat(), moment.strftime("%Y-%m-%d %H:%M:%S UTC"),
                       moment.strftime("%Y-%m-%d %H:%M"), relative(moment))


@register.filter
def utc(value) -> str:
    """'2026-11-21 09:15:02 UTC', without the relative part (for tables of many rows)."""
    moment = _as_datetime(value)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else DASH


@register.filter
def epoch(value) -> int | None:
    """Unix seconds, for the charts."""
    moment = _as_datetime(value)
    return int(moment.timestamp()) if moment else None


@register.filter
def money(value) -> str:
    """1234.5 -> '1,234.50' (the quote currency, e.g. USD for ETH-USD)."""
    number = _number(value)
    return DASH if number is None else f"{number:,.2f}"


@register.filter
def pnl(value) -> str:
    """Signed money: '+1,234.50' / '-12.00'."""
    number = _number(value)
    return DASH if number is None else f"{number:+,.2f}"


@register.filter
def pnl_class(value) -> str:
    number = _number(value)
    if not number:
        return "flat"
    return "gain" if number > 0 else "loss"


@register.filter
def qty(value) -> str:
    """Quantities to 8 decimals at most, trailing zeros dropped: '0.5', '1,234.12345678'."""
    number = _number(value)
    if number is None:
        return DASH
    text = f"{number:,.8f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


@register.filter
def price(value) -> str:
    """Prices with 2 to 4 decimals: '3,012.50', '0.1234'."""
    number = _number(value)
    if number is None:
        return DASH
    text = f"{number:,.4f}"
    whole, _, decimals = text.partition(".")
    return f"{whole}.{decimals.rstrip('0').ljust(2, '0')}"


@register.filter
def pct(value, digits: int = 2) -> str:
    """A fraction as a percentage: 0.1234 -> '12.34%'."""
    number = _number(value)
    return DASH if number is None else f"{number * 100:.{int(digits)}f}%"


@register.filter
def num(value, digits: int = 2) -> str:
    number = _number(value)
    return DASH if number is None else f"{number:,.{int(digits)}f}"


@register.filter
def count(value) -> str:
    number = _number(value)
    return DASH if number is None else f"{int(number):,}"


@register.filter
def metric(value, key: str) -> str:
    """A metric formatted by its name (engine metric keys, paper/engine/metrics.py)."""
    if key in PERCENT_METRICS:
        return pct(value)
    if key in MONEY_METRICS:
        return money(value)
    if key in COUNT_METRICS:
        return count(value)
    if isinstance(value, bool) or value is None:
        return DASH if value is None else ("yes" if value else "no")
    if isinstance(value, int | float):
        return num(value)
    return str(value)


@register.filter
def duration(seconds) -> str:
    """How long something ran: the runbook's own wording, so the CLI and the pages agree."""
    from paper.runbook import duration_text

    number = _number(seconds)
    return DASH if number is None else duration_text(number)


@register.filter
def status_badge(status) -> str:
    status = str(status or "unknown")
    return format_html('<span class="badge {}">{}</span>', STATUS_CLASSES.get(status, "badge-muted"), status)


@register.filter
def reason_badge(reason) -> str:
    """A badge for a status_reason that needs one (risk halt, kill switch, ...); '' otherwise."""
    reason = str(reason or "")
    for code, words, css in REASON_BADGES:
        if reason.startswith(code):
            return format_html('<span class="badge {}" title="{}">{}</span>', css, reason, words)
    return ""


@register.filter
def data_badge(data_source) -> str:
    """Synthetic prices are never real ones: say so wherever they are shown."""
    if data_source == "synthetic":
        return format_html('<span class="badge badge-synthetic" title="{}">synthetic</span>',
                           "prices from the seeded synthetic generator, not market data")
    return format_html('<span class="badge badge-muted">{}</span>', data_source or "stored")


@register.filter
def words(key) -> str:
    """'max_drawdown' -> 'max drawdown'."""
    return str(key).replace("_", " ")


@register.filter
def get_item(mapping, key):
    return mapping.get(key) if hasattr(mapping, "get") else None
