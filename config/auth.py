"""How API callers prove who they are: an API token (Bearer or X-API-Key) or a browser session.

Every operation accepts any of the three; the first that recognises the caller wins.
"""
from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest
from ninja.errors import HttpError
from ninja.security import APIKeyCookie, APIKeyHeader, HttpBearer
from ninja.utils import check_csrf

from paper.tokens import api_token_verify


class BearerToken(HttpBearer):
    """`Authorization: Bearer pt_...`."""

    def authenticate(self, request: HttpRequest, token: str):
        return api_token_verify(token)


class ApiKeyToken(APIKeyHeader):
    """`X-API-Key: pt_...`, for clients that cannot set Authorization."""

    param_name = "X-API-Key"

    def authenticate(self, request: HttpRequest, key: str | None):
        return api_token_verify(key)


class SessionCsrfAuth(APIKeyCookie):
    """The dashboard's Django session; unsafe methods need a valid CSRF token.

    Unlike ninja's SessionAuth, CSRF is checked only for a logged-in session: a caller
    with no session at all is anonymous (401), not a forged browser request (403).
    """

    param_name = settings.SESSION_COOKIE_NAME

    def _get_key(self, request: HttpRequest) -> str | None:
        return request.COOKIES.get(self.param_name)

    def authenticate(self, request: HttpRequest, key: str | None):
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return None
        if self.csrf and not getattr(request, "_ninja_csrf_exempt", False) and check_csrf(request):
            raise HttpError(403, "CSRF check failed: send the csrftoken cookie's value in X-CSRFToken")
        return user


# Tokens first: a script that also carries a session cookie is not held to CSRF.
API_AUTH = [BearerToken(), ApiKeyToken(), SessionCsrfAuth(csrf=True)]


def auth_user(request: HttpRequest):
    """The user an operation runs as (what the auth callbacks returned)."""
    return getattr(request, "auth", None)
