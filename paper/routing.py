"""WebSocket routes of the paper app."""
from django.urls import re_path

from paper.consumers import NoRouteConsumer, PaperFramesConsumer

websocket_urlpatterns = [
    re_path(r"^ws/paper/(?P<paper_run_id>[A-Za-z0-9_.-]{1,40})/?$", PaperFramesConsumer.as_asgi()),
    # Anything else is closed with 4404, not the router's "No route found" traceback.
    re_path(r"", NoRouteConsumer.as_asgi()),
]
