"""Reading a card back over its own GET STATUS, and the database's view of the same SE."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gp.card import SoftCard
from gp.commands import GetStatus, StatusScope, parse_status_response
from gp.scp03 import StaticKeys
from tests.e2e.conftest import Gateway, Stack
from tests.gp.cardkit import Terminal

ISD_AID = "A000000151000000"


def card_state(gw: Gateway) -> dict[str, Any]:
    """Open the (stopped) gateway's card, authenticate with the ISD keys and list its SDs with
    GET STATUS; key versions per SD from the card's registry."""
    assert gw.card_path is not None and Path(gw.card_path).exists()
    card = SoftCard.open(str(gw.card_path))
    keys = StaticKeys(
        bytes.fromhex(gw.isd_keys["enc"]),
        bytes.fromhex(gw.isd_keys["mac"]),
        bytes.fromhex(gw.isd_keys["dek"]),
    )
    term = Terminal(card).open(keys, aid=bytes.fromhex(ISD_AID), kvn=int(gw.isd_keys["kvn"]))
    rsp = term.send(GetStatus(StatusScope.APPLICATIONS).to_apdu())
    assert rsp.sw in (0x9000, 0x6A88), f"GET STATUS answered {rsp.sw:04X}"
    entries = parse_status_response(rsp.data, StatusScope.APPLICATIONS) if rsp.sw == 0x9000 else []
    sds = sorted(
        e.aid.hex().upper() if hasattr(e.aid, "hex") else bytes(e.aid).hex().upper()
        for e in entries
        if e.privileges is not None and e.privileges.is_security_domain
    )
    registry = card.registry
    kvns = {bytes(aid).hex().upper(): sorted(v) for aid, v in registry.key_versions.items()}
    return {"sds": sds, "kvns": {aid: kvns.get(aid, []) for aid in sds}}


def db_state(stack: Stack, gw: Gateway) -> dict[str, Any]:
    """The SDs recorded on the gateway's SE (ISD excluded) and the KVNs of their live key sets."""
    return stack.query(
        "from devices.models import SecurityDomain\n"
        f"sds = SecurityDomain.objects.filter(secure_element__device_id='{gw.device_id}', is_isd=False)\n"
        "out = {'sds': sorted(s.aid for s in sds), 'kvns': {s.aid: sorted(k.kvn for k in "
        "s.key_sets.exclude(status__in=['destroyed', 'retired'])) for s in sds},\n"
        "       'owners': {s.aid: s.owner.slug for s in sds}}\n"
    )


def audit_count(stack: Stack, job_id: str, **details: Any) -> int:
    """Audit events of ``job_id`` whose details contain ``details``."""
    return int(
        stack.query(
            "from audit.models import AuditEvent\n"
            f"out = AuditEvent.objects.filter(target_id='{job_id}', details__contains={details!r}).count()\n"
        )
    )
