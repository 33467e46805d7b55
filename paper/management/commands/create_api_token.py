"""`manage.py create_api_token USER [--name N]`: print a new API token for USER.

Only the raw token goes to stdout, so `TOKEN=$(manage.py create_api_token alice)` works.
"""
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from paper.tokens import api_token_create


class Command(BaseCommand):
    help = "Create an API token for a user and print it (it is shown only once)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="default", help="a label to tell the user's tokens apart")

    def handle(self, *args, **opts):
        User = get_user_model()
        user = User.objects.filter(username=opts["username"]).first()
        if user is None:
            raise CommandError(f"no user {opts['username']!r}", returncode=2)
        token, raw = api_token_create(user=user, name=opts["name"])
        # The note goes to stderr: stdout must carry nothing but the token.
        self.stderr.write(f"created API token {token.name!r} ({token.prefix}…) for {user.username}; it is shown only once")
        self.stdout.write(raw)
