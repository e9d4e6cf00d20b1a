"""Live events over WebSockets. A user joins only the groups of organisations it belongs to."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from portal.errors import NotFoundError
from portal.events import org_group
from tenants.access import Action, resolve_actor


class OrgEventsConsumer(AsyncJsonWebsocketConsumer):
    """``ws/o/<org>/events/``: every event concerning the organisation, as JSON, live."""

    group: str | None = None

    async def connect(self) -> None:
        org_slug = self.scope["url_route"]["kwargs"]["org"]
        try:
            actor = await database_sync_to_async(resolve_actor)(self.scope.get("user"), org_slug)
        except NotFoundError:
            await self.close(code=4404)
            return
        if not actor.can(Action.AUDIT_VIEW):
            await self.close(code=4403)
            return
        self.group = org_group(actor.org.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def org_event(self, message: dict[str, Any]) -> None:
        await self.send_json(message["event"])
