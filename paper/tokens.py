"""API tokens for scripts: create one (shown once), verify a presented one, revoke one.

Only a token's sha256 is stored, so a leaked database does not leak usable tokens.
"""
from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from paper.models import ApiToken

TOKEN_PREFIX = "pt_"
# A token is ~46 characters; anything much longer is not ours and is not worth hashing.
MAX_TOKEN_LENGTH = 200
# last_used_at is for "is this token still in use?", not an audit log: one write a minute
# per token keeps a busy script from turning every read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def api_token_create(*, user, name: str = "default") -> tuple[ApiToken, str]:
    """A new token for `user`; returns (row, raw token). The raw token is never stored."""
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(user=user, name=name[:100], prefix=raw[:12], token_hash=_hash(raw))
    return token, raw


def api_token_verify(raw: str | None):
    """The active user a raw token belongs to, or None (unknown, revoked, inactive user)."""
    if not raw or len(raw) > MAX_TOKEN_LENGTH:
        return None
    token = (
        ApiToken.objects.select_related("user")
        .filter(token_hash=_hash(raw), revoked_at__isnull=True)
        .first()
    )
    if token is None or not token.user.is_active:
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        # Conditional update: concurrent requests with the same token write at most once.
        ApiToken.objects.filter(pk=token.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
        ).update(last_used_at=now)
    return token.user


def api_token_revoke(*, token: ApiToken) -> ApiToken:
    """Revoke a token; revoking twice keeps the first revocation time."""
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
    return token
