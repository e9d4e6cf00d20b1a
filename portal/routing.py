from __future__ import annotations

from django.urls import path

from portal import consumers

websocket_urlpatterns = [
    path("ws/o/<slug:org>/events/", consumers.OrgEventsConsumer.as_asgi()),
]
