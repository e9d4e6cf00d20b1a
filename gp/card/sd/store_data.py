"""STORE DATA (GP Card Spec v2.3.1 §11.11): numbered blocks to the selected SD or the application
targeted by INSTALL [for personalization] (§7.3.2); encrypted data (P1 b6 b5) under the session's
sensitive-data key; IIN / CIN (tags ``42`` / ``45``) update the SD's data (§7.4.1.1).
On the ISD, the CASD DGIs (``7F21`` certificate store, ``7F49`` CA-KLOC key, ``0093`` revoked
serials; :mod:`gp.card.casd`) personalise the CASD and are not kept as personalization data.
"""

from __future__ import annotations

from gp import tlv
from gp.apdu import CommandAPDU
from gp.card.casd import CASD_DGIS, CasdError, store_casd_dgi
from gp.card.sd.common import (
    SW_CONDITIONS,
    SW_NOT_FOUND,
    SW_P1P2,
    SW_SECURITY,
    SW_WRONG_DATA,
    CardError,
    ChannelContext,
    _check_memory,
    _parse_error_sw,
    _require_auth,
)
from gp.card.state import (
    Application,
    CardState,
)
from gp.commands.get_data import (
    TAG_CIN,
    TAG_IIN,
)
from gp.commands.store_data import DataStructure, Encryption, StoreData
from gp.commands.types import CardLifeCycle
from gp.errors import GPError, ParseError


def _store_data(state: CardState, ctx: ChannelContext, sd: Application, cmd: CommandAPDU) -> bytes:
    _require_auth(ctx)
    if state.life_cycle is CardLifeCycle.TERMINATED:
        raise CardError(SW_CONDITIONS, "card terminated")
    try:
        sdata = StoreData.from_apdu(cmd)
    except ParseError as e:
        raise CardError(_parse_error_sw(e), e.problem) from None
    target = state.applications.get(ctx.perso_target) if ctx.perso_target is not None else sd
    if target is None:
        raise CardError(SW_NOT_FOUND, "personalization target vanished")
    if state.life_cycle is CardLifeCycle.CARD_LOCKED and target.aid != state.isd_aid:
        raise CardError(SW_CONDITIONS, "card locked")
    if target.life_cycle.locked:
        raise CardError(SW_CONDITIONS, "target is locked")
    if sdata.block_number != ctx.store_next_block:
        ctx.store_next_block = 0
        raise CardError(SW_P1P2, f"STORE DATA block {sdata.block_number}, expected {ctx.store_next_block}")
    data = sdata.data
    if sdata.encryption is Encryption.ENCRYPTED and data:
        if ctx.decrypt is None:
            raise CardError(SW_SECURITY, "no session to decrypt with")
        try:
            data = ctx.decrypt(data)
        except GPError as e:
            raise CardError(SW_WRONG_DATA, str(e)) from None
    try:
        records = StoreData(sdata.block_number, data, sdata.last, sdata.structure).records()
    except ParseError as e:
        raise CardError(SW_WRONG_DATA, f"STORE DATA content: {e.problem}") from None
    if (
        target.aid == state.isd_aid
        and sdata.structure is DataStructure.DGI
        and records
        and any(getattr(r, "tag", None) in CASD_DGIS for r in records)
    ):
        kept = []
        for rec in records:
            if rec.tag in CASD_DGIS:
                try:
                    store_casd_dgi(state, rec.tag, rec.value)
                except CasdError as e:
                    raise CardError(e.sw, e.reason) from None
            else:
                kept.append(rec.encode())
        data = b"".join(kept)
        if not data:
            ctx.store_next_block = 0 if sdata.last else (sdata.block_number + 1) & 0xFF
            return b""
    _check_memory(state, len(data))
    if target.is_security_domain and sdata.structure is DataStructure.BER_TLV and records:
        for rec in records:
            if isinstance(rec, tlv.TLV) and rec.tag == TAG_IIN:
                if target.aid == state.isd_aid:
                    state.iin = rec.value
                target.iin = rec.value
            elif isinstance(rec, tlv.TLV) and rec.tag == TAG_CIN:
                if target.aid == state.isd_aid:
                    state.cin = rec.value
                target.cin = rec.value
    target.personalization.append((int(sdata.structure), data))
    ctx.store_next_block = 0 if sdata.last else (sdata.block_number + 1) & 0xFF
    return b""
