"""WebSocket auth: a Django session cookie (browsers) or an API token (scripts).

Tokens come in an `Authorization: Bearer` header or a `?token=` query parameter.
"""
from __future__ import annotations

from urllib.parse import parse_qs

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from channels.security.websocket import AllowedHostsOriginValidator


@database_sync_to_async
def _user_for_token(raw: str):
    from paper.tokens import api_token_verify

    return api_token_verify(raw)


def _token_from_scope(scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"authorization" and value.lower().startswith(b"bearer "):
            return value[7:].decode("latin-1").strip()
        if name == b"x-api-key":
            return value.decode("latin-1").strip()
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return (query.get("token") or [""])[0]


class TokenAuthMiddleware(BaseMiddleware):
    async def __call__(self, scope, receive, send):
        user = scope.get("user")
        if user is None or not user.is_authenticated:
            raw = _token_from_scope(scope)
            if raw:
                token_user = await _user_for_token(raw)
                if token_user is not None:
                    scope = dict(scope, user=token_user, auth_method="token")
        elif user is not None:
            scope = dict(scope, auth_method="session")
        return await super().__call__(scope, receive, send)


class OriginPolicy:
    """A present Origin must be an allowed host (browsers). A missing Origin is only
    accepted with token auth: without a cookie there is no cross-site hijacking to fear."""

    def __init__(self, inner):
        self.checked = AllowedHostsOriginValidator(inner)
        self.inner = inner

    async def __call__(self, scope, receive, send):
        if any(name == b"origin" for name, _ in scope.get("headers", [])):
            return await self.checked(scope, receive, send)
        return await self.inner(dict(scope, origin_absent=True), receive, send)


def SessionOrTokenAuth(inner):
    return OriginPolicy(AuthMiddlewareStack(TokenAuthMiddleware(inner)))
