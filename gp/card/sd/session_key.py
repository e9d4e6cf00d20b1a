"""DERIVE SESSION KEY (proprietary ``80 5A``; :mod:`gp.sessionkeys`, docs/session-keys.md §3): the
selected Security Domain derives a session key for a service and epoch from its service master key.

The master key is the key of KID ``01`` in the key set named by P1 (``00``: KVN ``72``), put there
by the SD's owner with PUT KEY in its own SCP03 session; the set must hold that key alone, so an
SCP03 key set is never used as a KDF key. The master key itself never leaves the card: the answer is
the derived 16-byte key. Works plain or inside a secure channel session (answered wrapped then).
"""

from __future__ import annotations

from gp.apdu import CommandAPDU
from gp.card.sd.common import (
    SW_CONDITIONS,
    SW_NOT_FOUND,
    SW_P1P2,
    SW_WRONG_DATA,
    CardError,
    ChannelContext,
    _require_operational,
)
from gp.card.state import Application, CardState
from gp.commands.types import KeyType
from gp.errors import ParseError
from gp.sessionkeys import MASTER_KEY_KID, MASTER_KEY_KVN, DeriveSessionKey, derive_session_key


def _derive_session_key(state: CardState, ctx: ChannelContext, sd: Application, cmd: CommandAPDU) -> bytes:
    _require_operational(state)
    if cmd.p2 != 0x00 or cmd.p1 > 0x7F:
        raise CardError(SW_P1P2, "P1 is the master key version (00..7F), P2 must be 00")
    try:
        request = DeriveSessionKey.parse(cmd.p1, cmd.data)
    except ParseError as e:
        raise CardError(SW_WRONG_DATA, e.problem) from None
    kvn = request.kvn or MASTER_KEY_KVN
    keyset = sd.keys.sets.get(kvn)
    key = keyset.keys.get(MASTER_KEY_KID) if keyset is not None else None
    if keyset is None or key is None:
        raise CardError(SW_NOT_FOUND, f"no service master key at KVN {kvn:02X}")
    if set(keyset.keys) != {MASTER_KEY_KID} or key.key_type is not KeyType.AES:
        raise CardError(SW_CONDITIONS, f"key set {kvn:02X} is not a service master key (one AES key, KID 01)")
    se_id = state.cplc[12:16]  # the CPLC IC serial number (gp.commands.CPLC: bytes 12-15)
    return derive_session_key(key.value, service=request.service, epoch=request.epoch, se_id=se_id)
