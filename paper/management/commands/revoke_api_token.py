"""`manage.py revoke_api_token PREFIX` or `manage.py revoke_api_token --user USER --all`.

PREFIX is a token's prefix as `GET /tokens` and the admin show it (or its start, or the whole
token). An unknown or ambiguous prefix, or an unknown user, exits 2 and revokes nothing.
Revoking a revoked token again changes nothing.
"""
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from paper.tokens import TOKEN_PREFIX, api_token_revoke, api_tokens_find, api_tokens_revoke_all

MIN_PREFIX = len(TOKEN_PREFIX) + 3  # "pt_" alone would name every token


class Command(BaseCommand):
    help = "Revoke an API token by its prefix, or every token of a user (--user USER --all)."

    def add_arguments(self, parser):
        parser.add_argument("prefix", nargs="?", help="the token's prefix (e.g. pt_AbCdEfGhI), or the whole token")
        parser.add_argument("--user", help="with --all: whose tokens to revoke")
        parser.add_argument("--all", action="store_true", help="revoke every active token of --user")

    def handle(self, *args, **opts):
        prefix, username, everything = opts["prefix"], opts["user"], opts["all"]
        if everything or username:
            if prefix or not (everything and username):
                raise CommandError("use either PREFIX, or --user USER --all", returncode=2)
            user = get_user_model().objects.filter(username=username).first()
            if user is None:
                raise CommandError(f"no user {username!r}", returncode=2)
            revoked = api_tokens_revoke_all(user=user)
            names = ", ".join(f"{t.prefix}… ({t.name})" for t in revoked) or "none were active"
            self.stdout.write(f"revoked {len(revoked)} API token(s) of {user.username}: {names}")
            return
        if not prefix:
            raise CommandError("name the token: PREFIX, or --user USER --all", returncode=2)
        if len(prefix) < MIN_PREFIX:
            raise CommandError(f"the prefix {prefix!r} is too short: give at least {MIN_PREFIX} characters", returncode=2)
        found = api_tokens_find(prefix=prefix)
        if not found:
            raise CommandError(f"no API token with prefix {prefix!r}", returncode=2)
        if len(found) > 1:
            listed = ", ".join(f"{t.prefix}… ({t.user.username}, {t.name})" for t in found)
            raise CommandError(f"the prefix {prefix!r} names {len(found)} tokens: {listed}; give more of it",
                               returncode=2)
        token = found[0]
        already = token.revoked_at is not None
        api_token_revoke(token=token)
        state = f"was already revoked at {token.revoked_at:%Y-%m-%d %H:%M:%S} UTC" if already else "revoked"
        self.stdout.write(f"API token {token.prefix}… ({token.name}) of {token.user.username} {state}")
