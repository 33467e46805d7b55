"""API tokens for scripts: create one (shown once), verify a presented one, revoke one.

Only a token's sha256 is stored, so a leaked database does not leak usable tokens.
"""
from __future__ import annotations

import functools
import hashlib
import secrets
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Q, QuerySet
from django.utils import timezone

from config.errors import NotFound
from paper.models import ApiToken

User = get_user_model()

TOKEN_PREFIX = "pt_"
PREFIX_LENGTH = 12  # the first characters of a token, stored and shown to tell tokens apart
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
    token = ApiToken.objects.create(user=user, name=name[:100], prefix=raw[:PREFIX_LENGTH], token_hash=_hash(raw))
    return token, raw


def api_token_verify(raw: str | None):
    """The active user a raw token belongs to, or None (unknown, revoked, inactive user).

    Every API request runs this, so it is one hand-written query (the ORM took ~0.7 ms more per
    request to build the same join): the user row, with the token's id and whether its last use
    is older than LAST_USED_RESOLUTION alongside.
    """
    if not raw or len(raw) > MAX_TOKEN_LENGTH:
        return None
    now = timezone.now()
    user = next(iter(User.objects.raw(_VERIFY_SQL(), [now - LAST_USED_RESOLUTION, _hash(raw)])), None)
    if user is None:
        return None
    if user.token_last_used_stale:
        # Conditional update: concurrent requests with the same token write at most once.
        ApiToken.objects.filter(pk=user.token_id).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
        ).update(last_used_at=now)
    return user


@functools.cache
def _VERIFY_SQL() -> str:  # noqa: N802 (a constant, built once the tables' names are known)
    q = connection.ops.quote_name
    users, tokens = q(User._meta.db_table), q(ApiToken._meta.db_table)
    user_id = q(ApiToken._meta.get_field("user").column)
    return (
        f"SELECT u.*, t.id AS token_id, (t.last_used_at IS NULL OR t.last_used_at < %s) AS token_last_used_stale "
        f"FROM {users} u JOIN {tokens} t ON t.{user_id} = u.id "
        f"WHERE t.token_hash = %s AND t.revoked_at IS NULL AND u.is_active"
    )


def api_token_revoke(*, token: ApiToken) -> ApiToken:
    """Revoke a token; revoking twice keeps the first revocation time."""
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
    return token


def api_tokens_of(*, user) -> QuerySet[ApiToken]:
    """A user's tokens, newest first (revoked ones included, so a revocation can be seen)."""
    return ApiToken.objects.filter(user=user).order_by("-created_at", "-pk")


def api_token_for(*, user, token_id: int) -> ApiToken:
    """The token `user` may manage: their own, or anyone's for staff. Others' are not found (404),
    so a caller learns nothing about tokens that are not theirs."""
    qs = ApiToken.objects.select_related("user").filter(pk=token_id)
    if not getattr(user, "is_staff", False):
        qs = qs.filter(user=user)
    token = qs.first()
    if token is None:
        mine = "" if getattr(user, "is_staff", False) else " of yours"
        raise NotFound("token_not_found", f"no API token {token_id}{mine}")
    return token


def api_tokens_find(*, prefix: str) -> list[ApiToken]:
    """Tokens by their prefix (as `GET /tokens` and the admin show it, or its start), or by the
    whole raw token. Longer than a prefix and not a token: nothing."""
    qs = ApiToken.objects.select_related("user").order_by("pk")
    if not prefix or len(prefix) > MAX_TOKEN_LENGTH:
        return []
    if len(prefix) > PREFIX_LENGTH:
        return list(qs.filter(token_hash=_hash(prefix)))
    return list(qs.filter(prefix__startswith=prefix))


def api_tokens_revoke_all(*, user) -> list[ApiToken]:
    """Revoke every active token of `user`; returns the ones revoked now."""
    tokens = list(ApiToken.objects.filter(user=user, revoked_at__isnull=True))
    for token in tokens:
        api_token_revoke(token=token)
    return tokens


def api_token_kept(*, user, name: str, path) -> tuple[ApiToken, str, bool]:
    """One long-lived token of `user` named `name` whose raw value is kept in the file `path`
    (mode 0600), for a process that must show the same token at every start (`manage.py serve`'s
    demo token). Returns (row, raw token, reused).

    The database still holds only the hash. If the file holds a token that is active, `user`'s
    and named `name`, it is reused. Otherwise a new one is created and written there, and every
    other active token of `user` with that name is revoked, so exactly one is valid.
    """
    import os
    from pathlib import Path

    from django.db import transaction

    path = Path(path)
    try:
        raw = path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        raw = ""
    if len(raw) > PREFIX_LENGTH:  # by its hash: a prefix is no token
        kept = [t for t in api_tokens_find(prefix=raw)
                if t.user_id == user.pk and t.name == name[:100] and t.revoked_at is None]
        if kept:
            if path.stat().st_mode & 0o077:
                path.chmod(0o600)
            return kept[0], raw, True
    with transaction.atomic():
        token, raw = api_token_create(user=user, name=name)
        for old in ApiToken.objects.filter(user=user, name=name[:100], revoked_at__isnull=True).exclude(pk=token.pk):
            api_token_revoke(token=old)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # a stale temporary file keeps its old mode through O_CREAT
        with os.fdopen(fd, "w") as f:
            f.write(raw + "\n")
        os.replace(tmp, path)
    return token, raw, False
