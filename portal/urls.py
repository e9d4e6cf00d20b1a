from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from jobs.agent_views import exchange_view
from portal.views import healthz

urlpatterns = [
    path("api/v1/", include("portal.urls_api")),
    path("agent/v1/exchange", exchange_view, name="agent-exchange"),
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("", include("portal.urls_pages")),
]

handler404 = "portal.api.json_404"
handler500 = "portal.api.json_500"
handler400 = "portal.api.json_400"
