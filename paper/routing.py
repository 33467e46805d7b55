"""WebSocket routes of the paper app."""
from django.urls import re_path

from paper.consumers import PaperFramesConsumer

websocket_urlpatterns = [
    re_path(r"^ws/paper/(?P<paper_run_id>[A-Za-z0-9_.-]{1,40})/?$", PaperFramesConsumer.as_asgi()),
]
