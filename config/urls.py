"""URL routes: the admin now; the REST API and dashboard mount here as they land."""
from django.contrib import admin
from django.urls import path

urlpatterns = [
    path("admin/", admin.site.urls),
]
