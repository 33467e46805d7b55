"""ASGI entry point served by daphne: Django over HTTP, the frame sockets over WebSocket.

Sockets need an authenticated user (session or token) and an allowed Origin.
"""
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_asgi = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from config.wsauth import SessionOrTokenAuth  # noqa: E402
from paper.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi,
        "websocket": SessionOrTokenAuth(URLRouter(websocket_urlpatterns)),
    }
)
