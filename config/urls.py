"""URL routes: the admin, then the REST API at the site root (docs at /docs, schema at /openapi.json).

Unknown URLs outside the admin get the API's JSON 404.
"""
from django.contrib import admin
from django.urls import include, path

from bots.api import router as bots_router
from config.api import api
from paper.api import router as paper_router
from paper.api import tokens_router
from risk.api import router as risk_router

# The routers mount here, not in config/api.py: each <app>/api.py imports the shared schemas
# and pagination from config.api, and mounting there would make that an import cycle.
api.add_router("", bots_router)
api.add_router("", paper_router)
api.add_router("", risk_router)
api.add_router("", tokens_router)

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("config.dashboard_urls")),  # the operator dashboard: / and /ui/...
    path("", api.urls),
]

handler404 = "config.api.url_not_found"
