"""Reads of provider switches, through the access rule (404 for what is not yours)."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from devices.models import Device
from portal.errors import NotFoundError
from switches.models import Switch
from tenants.access import Action, Actor, get_visible, visible_to

VIEW = Action.CONTRACTS_VIEW


def switch_list(*, actor: Actor) -> QuerySet[Switch]:
    return (
        visible_to(Switch, actor, VIEW)
        .select_related("device", "new_provider", "old_provider", "new_contract", "old_contract")
        .order_by("-created_at", "id")
    )


def switch_get(*, actor: Actor, pk: Any) -> Switch:
    return get_visible(Switch, actor, VIEW, pk=pk)


def device_for_switch(*, actor: Actor, serial: Any) -> Device:
    """A device the actor sees (subscriber: its own; issuer: its SEs'); otherwise 404."""
    if not isinstance(serial, str) or not 0 < len(serial) <= 64:
        from switches.errors import SwitchRequestInvalid

        raise SwitchRequestInvalid(
            "device must be the device's serial number.", fields={"device": ["invalid"]}
        )
    device = visible_to(Device, actor, Action.DEVICES_VIEW).filter(serial=serial).first()
    if device is None:
        raise NotFoundError("No such device.", fields={"device": ["not found"]})
    return device
