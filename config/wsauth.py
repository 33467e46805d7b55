"""WebSocket auth: a Django session cookie (browsers) or an API token (scripts).

Tokens come in an `Authorization: Bearer` header or a `?token=` query parameter. A socket
authenticated by token keeps it in its scope (`auth_token`): the consumer re-checks it while the
socket is open, so a revoked or expired token ends its socket (paper/consumers.py).

Refusals happen after the handshake, with a close code a client can tell apart (the list is in
paper/consumers.py): before it, daphne could only answer a bare HTTP 403.
"""
from __future__ import annotations

from urllib.parse import parse_qs, urlparse

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
                    scope = dict(scope, user=token_user, auth_method="token", auth_token=raw)
        elif user is not None:
            scope = dict(scope, auth_method="session")
        return await super().__call__(scope, receive, send)


class OriginPolicy:
    """A present Origin must be an allowed host (browsers). A missing Origin is only
    accepted with token auth: without a cookie there is no cross-site hijacking to fear.

    A socket with a disallowed Origin never reaches the session or token lookup nor the
    consumer: it is accepted, sent an error frame and closed with 4403 (channels' own validator
    refused before the handshake, an HTTP 403 a client could not tell from the others)."""

    def __init__(self, inner):
        from paper.consumers import ForeignOriginConsumer

        self.validator = AllowedHostsOriginValidator(inner)  # its allowed hosts and matching rules
        self.refusal = ForeignOriginConsumer.as_asgi()
        self.inner = inner

    async def __call__(self, scope, receive, send):
        origins = [value for name, value in scope.get("headers", []) if name == b"origin"]
        if not origins:
            return await self.inner(dict(scope, origin_absent=True), receive, send)
        if not self._allowed(origins[-1]):  # the last one, as channels' validator reads it
            return await self.refusal(scope, receive, send)
        return await self.inner(scope, receive, send)

    def _allowed(self, origin: bytes) -> bool:
        try:
            return self.validator.valid_origin(urlparse(origin.decode("latin-1")))
        except ValueError:  # "http://[::1", a port out of range: not an origin we serve
            return False


def SessionOrTokenAuth(inner):
    return OriginPolicy(AuthMiddlewareStack(TokenAuthMiddleware(inner)))
