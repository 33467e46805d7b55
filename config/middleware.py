"""Dependency outages on the HTML side: a 503 that says which dependency is down, never a traceback.

The REST API answers its own 503 JSON (config.api); this catches what reaches Django from a
dashboard or admin view (and anything else a view raises) when PostgreSQL or Redis is down.
"""
from __future__ import annotations

import html
import logging

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5


def unavailable_dependency(exc: BaseException) -> str | None:
    """'database' or 'redis' when `exc` means that dependency is unreachable, else None."""
    if isinstance(exc, OperationalError | InterfaceError):
        return "database"
    try:
        import redis
    except ImportError:  # pragma: no cover - redis is a dependency
        return None
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return "redis"
    return None


class DependencyUnavailableMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        what = unavailable_dependency(exc)
        if what is None:
            return None
        log.warning("%s unavailable for %s %s: %s", what, request.method, request.path, exc)
        code = f"{what}_unavailable"
        name = "The database (PostgreSQL)" if what == "database" else "Redis"
        detail = f"{name} is unavailable, retry shortly ({type(exc).__name__}: {exc})"
        if request.path.startswith(("/ui/", "/admin/")) or request.path == "/":
            body = (f"<!doctype html><title>503 {code}</title><h1>Service unavailable</h1>"
                    f"<p>{html.escape(detail)}</p><p>This page will work again once it is back.</p>")
            response = HttpResponse(body, status=503)
        else:
            response = JsonResponse({"code": code, "detail": detail}, status=503)
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
