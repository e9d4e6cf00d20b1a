"""Reconciling the database with what a card's registry says (read_status; DESIGN §7).

The card is the truth. What the reading SD may see (the ISD sees everything, an SSD its own
content) is compared with the records of that SE:
- SDs and applications on the card but not recorded are recorded — attributed to the owner of
  their associated SD (the issuer for ones associated with the ISD), flagged ``unattributed``;
- recorded ones the card no longer holds are forgotten (their key sets destroyed);
- life cycles and privileges are taken from the card.
Returns a summary for the audit trail.
"""

from __future__ import annotations

from typing import Any

from devices.models import SDLifeCycle, SecurityDomain
from jobs.compiler.inventory import CardInventory
from jobs.models import Application, Job

_SD_LC = {0x03: SDLifeCycle.INSTALLED, 0x07: SDLifeCycle.SELECTABLE, 0x0F: SDLifeCycle.PERSONALIZED}


def _sd_life_cycle(entry: Any) -> str:
    if entry.locked:
        return SDLifeCycle.LOCKED
    return _SD_LC.get(entry.life_cycle_coding & 0x7F, SDLifeCycle.PERSONALIZED)


def _app_life_cycle(entry: Any) -> str:
    if entry.locked:
        return "LOCKED"
    return {0x03: "INSTALLED", 0x07: "SELECTABLE"}.get(entry.life_cycle_coding & 0x7F, "PERSONALIZED")


def reconcile_inventory(job: Job, inventory: CardInventory) -> dict[str, list[str]]:
    from jobs.effects import _forget_sd  # the same forgetting as delete_security_domain

    se = job.secure_element
    changes: dict[str, list[str]] = {"added": [], "removed": [], "updated": []}
    reader = SecurityDomain.objects.filter(secure_element=se, aid=job.params.get("sd", "")).first()
    full_view = reader is None or reader.is_isd
    recorded = {sd.aid: sd for sd in SecurityDomain.objects.filter(secure_element=se, is_isd=False)}
    isd = SecurityDomain.objects.filter(secure_element=se, is_isd=True).first()
    on_card = {e.aid.hex().upper(): e for e in inventory.security_domains}
    if full_view and inventory.complete and 0x40 in inventory.scopes_read:
        for aid, sd in recorded.items():
            if aid not in on_card and sd.pk != getattr(reader, "pk", None):
                _forget_sd(sd)
                changes["removed"].append(f"sd:{aid}")
        for aid, entry in on_card.items():
            if aid in recorded or (isd is not None and aid == isd.aid):
                continue
            parent = (
                SecurityDomain.objects.filter(
                    secure_element=se, aid=(entry.associated_sd_aid or b"").hex().upper()
                ).first()
                or isd
            )
            SecurityDomain.objects.create(
                secure_element=se,
                aid=aid,
                parent=parent,
                owner=parent.owner if parent else se.issuer,
                privileges=entry.privileges.names() if entry.privileges else [],
                life_cycle=_sd_life_cycle(entry),
            )
            changes["added"].append(f"sd:{aid} (unattributed)")
    for aid, entry in on_card.items():
        sd = recorded.get(aid)
        if sd is not None and sd.life_cycle != _sd_life_cycle(entry):
            sd.life_cycle = _sd_life_cycle(entry)
            sd.save(update_fields=["life_cycle"])
            changes["updated"].append(f"sd:{aid} {sd.life_cycle}")
    # Applications the reader can see.
    apps_on_card = {e.aid.hex().upper(): e for e in inventory.applications}
    apps = Application.objects.filter(secure_element=se)
    if not full_view and reader is not None:
        apps = apps.filter(security_domain=reader)
    if inventory.complete and 0x40 in inventory.scopes_read:
        for app in apps:
            if app.aid not in apps_on_card:
                app.delete()
                changes["removed"].append(f"app:{app.aid}")
    known = {a.aid: a for a in Application.objects.filter(secure_element=se)}
    for aid, entry in apps_on_card.items():
        lc = _app_life_cycle(entry)
        if aid in known:
            if known[aid].life_cycle != lc:
                known[aid].life_cycle = lc
                known[aid].save(update_fields=["life_cycle"])
                changes["updated"].append(f"app:{aid} {lc}")
            continue
        assoc = (entry.associated_sd_aid or b"").hex().upper()
        sd = SecurityDomain.objects.filter(secure_element=se, aid=assoc).first() or reader or isd
        if sd is None:
            continue
        Application.objects.create(
            secure_element=se,
            security_domain=sd,
            aid=aid,
            owner=sd.owner,
            life_cycle=lc,
            load_file_aid=entry.load_file_aid.hex().upper() if entry.load_file_aid else "",
        )
        changes["added"].append(f"app:{aid}")
    return changes
