"""Delegated Management tokens and receipts for card content management (GP Card Spec v2.3.1).

- Authorized / Delegated Management (§9.1.3, §6.6.1): the acting SD's privilege decides whether a
  token is needed; tokens (§C.4) are verified with the AES scheme of §B.2.2: CMAC with the
  Token Verification key (KVN ``70``) of the ISD or the SD holding that privilege.
- Confirmations with receipts (§C.5, §11.1.6, Table 11-14): CMAC with the Receipt Generation key
  (KVN ``71``) of the SD holding the Receipt Generation privilege, and the card's confirmation
  counter.
"""

from __future__ import annotations

import hmac

from gp.card.sd.common import (
    SW_SECURITY,
    CardError,
    _cmac,
)
from gp.card.state import (
    RECEIPT_KVN,
    TOKEN_KVN,
    Application,
    CardState,
)
from gp.commands import install as ins
from gp.commands.types import KeyType, Privileges


def _authorize_management(state: CardState, sd: Application, dtbs: bytes, token: bytes) -> bool:
    """Card content management by ``sd`` (GP CS v2.3.1 §9.1.3); True when a token was verified."""
    if sd.aid == state.isd_aid or sd.has(Privileges.AUTHORIZED_MANAGEMENT):
        return False
    if not sd.has(Privileges.DELEGATED_MANAGEMENT):
        raise CardError(SW_SECURITY, "SD has neither Authorized nor Delegated Management")
    verifier = next(
        (
            a
            for a in state.applications.values()
            if a.aid == state.isd_aid or a.has(Privileges.TOKEN_VERIFICATION)
        ),
        state.isd,
    )
    key = verifier.keys.key(TOKEN_KVN, 1) or state.isd.keys.key(TOKEN_KVN, 1)
    if key is None or key.key_type is not KeyType.AES:
        raise CardError(SW_SECURITY, "no token verification key on the card")
    if not token or not hmac.compare_digest(_cmac(key.value, dtbs), token):
        raise CardError(SW_SECURITY, "delegated management token missing or wrong")
    return True


def _confirmation(state: CardState, sd: Application, delegated: bool, operation_data: bytes) -> bytes:
    """``00`` or a confirmation with receipt (GP CS v2.3.1 Table 11-14, §C.5)."""
    generator: Application | None = None
    if sd.has(Privileges.RECEIPT_GENERATION):
        generator = sd
    elif delegated:
        generator = next(
            (a for a in state.applications.values() if a.has(Privileges.RECEIPT_GENERATION)), None
        )
    if generator is None:
        return b"\x00"
    key = generator.keys.key(RECEIPT_KVN, 1)
    if key is None or key.key_type is not KeyType.AES:
        return b"\x00"
    state.confirmation_counter = min(state.confirmation_counter + 1, 0xFFFF)
    iin = state.iin if generator.aid == state.isd_aid else (generator.iin or b"")
    cin = state.cin if generator.aid == state.isd_aid else (generator.cin or b"")
    conf = ins.Confirmation(b"", state.confirmation_counter, iin + cin)
    receipt = _cmac(key.value, conf.confirmation_data() + operation_data)
    return ins.Confirmation(receipt, conf.counter, conf.sd_unique_data).encode()
