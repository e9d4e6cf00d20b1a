"""GET DATA on a Security Domain (GP Card Spec v2.3.1 §11.3, Table 11-25): CPLC (``9F7F``), Card
Recognition Data (``66``, §H), IIN / CIN, Key Information Template (``E0``, §11.3.3.1), sequence
counter (``C1``, Amendment D v1.2 §6.2.2.1) and confirmation counter (``C2``, §C.5); on the ISD
the SCP11 certificate store (``BF21`` with an ``A6`` key reference, Amd F v1.4 §7.2,
:mod:`gp.card.casd`).
"""

from __future__ import annotations

import functools

from gp import tlv
from gp.apdu import CommandAPDU
from gp.card.casd import CasdError, certificate_store_answer
from gp.card.sd.common import (
    SW_NOT_FOUND,
    SW_WRONG_DATA,
    CardError,
)
from gp.card.state import (
    Application,
    CardState,
)
from gp.commands.get_data import (
    CPLC,
    TAG_CARD_DATA,
    TAG_CIN,
    TAG_CONFIRMATION_COUNTER,
    TAG_CPLC,
    TAG_IIN,
    TAG_KEY_INFORMATION,
    TAG_SEQUENCE_COUNTER,
    CardRecognitionData,
    GetData,
    KeyInformation,
    encode_key_information,
)
from gp.errors import ParseError

TAG_CERTIFICATE_STORE = 0xBF21


@functools.lru_cache(maxsize=16)
def _cplc_tlv(cplc: bytes) -> bytes:
    """GET DATA 9F7F: the stored CPLC, checked and wrapped (it changes only with a new card)."""
    return CPLC.parse(cplc).encode_tlv()


def _get_data(state: CardState, sd: Application, cmd: CommandAPDU) -> bytes:
    """GET DATA; every answer but the sequence counter (``C1``, stepped by each INITIALIZE UPDATE)
    depends on the state and the acting SD only and is memoised in ``state.responses``, which
    every mutating command empties (:meth:`CardState.changed`)."""
    tag = (cmd.p1 << 8) | cmd.p2
    if tag == TAG_CERTIFICATE_STORE:
        if sd.aid != state.isd_aid:
            raise CardError(SW_NOT_FOUND, "no certificate store on this SD")
        try:
            return certificate_store_answer(state, cmd.data)
        except CasdError as e:
            raise CardError(e.sw, e.reason) from None
    if cmd.data:
        return _answer(state, sd, cmd)  # refused: GET DATA takes no command data
    if tag == TAG_SEQUENCE_COUNTER:
        return _answer(state, sd, cmd)
    key = (0xCA, sd.aid, tag)
    memo = state.responses.get(key)
    if memo is None:
        memo = state.responses[key] = _answer(state, sd, cmd)
    return memo


def _answer(state: CardState, sd: Application, cmd: CommandAPDU) -> bytes:
    try:
        gd = GetData.from_apdu(cmd)
    except ParseError as e:
        raise CardError(SW_WRONG_DATA, e.problem) from None
    is_isd = sd.aid == state.isd_aid
    if gd.tag == TAG_CPLC:
        return _cplc_tlv(state.cplc)
    if gd.tag == TAG_CARD_DATA:
        return CardRecognitionData(i_param=state.i_param).encode()
    if gd.tag == TAG_IIN:
        value = state.iin if is_isd else sd.iin
        if value is None:
            raise CardError(SW_NOT_FOUND, "no IIN")
        return tlv.encode(TAG_IIN, value)
    if gd.tag == TAG_CIN:
        value = state.cin if is_isd else sd.cin
        if value is None:
            raise CardError(SW_NOT_FOUND, "no CIN")
        return tlv.encode(TAG_CIN, value)
    if gd.tag == TAG_KEY_INFORMATION:
        info = [
            KeyInformation(k.kid, ks.kvn, ((k.key_type, len(k.value)),))
            for ks in sorted(sd.keys.sets.values(), key=lambda s: s.kvn)
            for k in sorted(ks.keys.values(), key=lambda k: k.kid)
        ]
        return encode_key_information(info)
    if gd.tag == TAG_SEQUENCE_COUNTER:
        kvn = sd.keys.default_scp03_kvn()
        if kvn is None:
            raise CardError(SW_NOT_FOUND, "no SCP03 key set")
        return tlv.encode(TAG_SEQUENCE_COUNTER, sd.keys.sets[kvn].sequence_counter.to_bytes(3, "big"))
    if gd.tag == TAG_CONFIRMATION_COUNTER:
        return tlv.encode(TAG_CONFIRMATION_COUNTER, state.confirmation_counter.to_bytes(2, "big"))
    raise CardError(SW_NOT_FOUND, f"no data object {gd.tag:04X}")
