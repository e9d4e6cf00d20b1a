"""Reads of the devices app, always through ``visible_to``."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from devices.models import Device, SecureElement, SecurityDomain
from tenants.access import Action, Actor, visible_to


def device_list(*, actor: Actor) -> Any:
    return visible_to(Device, actor, Action.DEVICES_VIEW).select_related(
        "manufacturer", "holder", "subscriber"
    )


def device_hardware(
    *, actor: Actor, device: Device
) -> tuple[list[SecureElement], dict[Any, list[SecurityDomain]]]:
    """The device's secure elements and, per SE, the security domains the actor may see."""
    ses = list(
        visible_to(SecureElement, actor, Action.DEVICES_VIEW)
        .filter(device=device)
        .select_related("issuer", "supplier", "device")
    )
    sds = (
        visible_to(SecurityDomain, actor, Action.DEVICES_VIEW)
        .filter(secure_element__in=ses)
        .select_related("owner", "parent")
        .order_by("-is_isd", "aid")
    )
    by_se: dict[Any, list[SecurityDomain]] = defaultdict(list)
    for sd in sds:
        by_se[sd.secure_element_id].append(sd)
    return ses, dict(by_se)


def sd_tree(sds: list[SecurityDomain]) -> list[tuple[int, SecurityDomain]]:
    """Depth-first (depth, SD) rows for display; SDs whose parent is hidden hang from the root."""
    ids = {sd.pk for sd in sds}
    children: dict[Any, list[SecurityDomain]] = defaultdict(list)
    for sd in sds:
        children[sd.parent_id if sd.parent_id in ids else None].append(sd)
    rows: list[tuple[int, SecurityDomain]] = []

    def walk(parent: Any, depth: int) -> None:
        for sd in children.get(parent, []):
            rows.append((depth, sd))
            walk(sd.pk, depth + 1)

    walk(None, 0)
    return rows
