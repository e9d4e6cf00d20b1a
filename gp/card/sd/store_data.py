"""STORE DATA (GP Card Spec v2.3.1 §11.11): numbered blocks to the selected SD or the application
targeted by INSTALL [for personalization] (§7.3.2); encrypted data (P1 b6 b5) under the session's
sensitive-data key; IIN / CIN (tags ``42`` / ``45``) update the SD's data (§7.4.1.1).
On the ISD, the CASD DGIs (``7F21`` certificate store, ``7F49`` CA-KLOC key, ``0093`` revoked
serials; :mod:`gp.card.casd`) personalise the CASD and are not kept as personalization data.

Confidential key loading (``docs/key-loading-package.md`` §6): on the ISD, after INSTALL [for
personalization] named one of its SSDs, a STORE DATA sequence (structure ``00``) whose first block
starts with ``BF74`` is a key-loading package.  Its blocks are collected; the last one hands the
whole package to :func:`gp.card.sd.keyload.handle_key_package` (ECDH by the CASD, the OCE chain
checked by :func:`gp.card.casd.verify_oce_chain` with the CASD's revoked serials, the anti-replay
counter of :attr:`CardState.keyload_counters`), installs the key set in the SSD, records the
counter and answers ``86 10 <receipt>``.  A refusal changes nothing on the card.

SCP11a delivery (``docs/key-loading-package.md`` §8, :mod:`gp.keydelivery`): in an OCE session
(SCP11a/c, ``ctx.oce_session``) STORE DATA is accepted only after INSTALL [for personalization] of
an SSD, as one block (P1 ``89``) holding DGI ``00B9`` (KVN, type, length, KCVs) and DGI ``8113``
(the keys under AES-KW with the session's S-DEK); the key set is installed in the SSD and the
answer is ``KVN || KCVs``.  Anything else in such a session is ``6982``; a malformed template
``6A80``; keys that do not unwrap or match their KCVs ``6988``.
"""

from __future__ import annotations

from gp import keydelivery, keyload, tlv
from gp.apdu import CommandAPDU
from gp.card.casd import CASD_DGIS, CasdError, casd_key_agreement, store_casd_dgi, verify_oce_chain
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
from gp.card.sd.keyload import KeyPackageResult, handle_key_package, install_key_set, is_key_package
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
from gp.gpcert import CertificateError, parse_certificate


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
    if ctx.oce_session:
        return _key_set_delivery(state, ctx, target, sdata)
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
    if ctx.key_package is not None or (
        sd.aid == state.isd_aid
        and target.aid != state.isd_aid
        and sdata.structure is DataStructure.NONE
        and sdata.block_number == 0
        and is_key_package(data)
    ):
        return _key_package_block(state, ctx, target, sdata.block_number, data, sdata.last)
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


def _se_identifier(state: CardState) -> bytes:
    """The identity a key-loading package must name: the subject identifier of the CASD's own
    certificate (GP ``5F20``; for an X.509 certificate the common name, as hex bytes when it is
    hex, as the CA writes it), else — no certificate stored yet — the card's CIN."""
    casd = state.casd
    if casd is not None and casd.certificates:
        try:
            leaf = parse_certificate(casd.certificates[-1])
        except CertificateError:  # pragma: no cover - the store only takes parsed certificates
            return bytes(state.cin)
        if leaf.format == "gp":
            return leaf.subject_identifier
        from cryptography import x509
        from cryptography.x509.oid import NameOID

        names = x509.load_der_x509_certificate(leaf.raw).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if names:
            text = str(names[0].value).strip()
            try:
                return bytes.fromhex(text) or text.encode()
            except ValueError:
                return text.encode()
    return bytes(state.cin)


def _key_package_block(
    state: CardState, ctx: ChannelContext, target: Application, block: int, data: bytes, last: bool
) -> bytes:
    """One block of a key-loading package; on the last, verify, install, answer the receipt."""
    buffer = ctx.key_package if ctx.key_package is not None else bytearray()
    buffer += data
    if len(buffer) > keyload.MAX_PACKAGE_LENGTH:
        ctx.key_package = None
        ctx.store_next_block = 0
        raise CardError(SW_WRONG_DATA, "key-loading package too long")
    if not last:
        ctx.key_package = buffer
        ctx.store_next_block = (block + 1) & 0xFF
        return b""
    ctx.key_package = None
    ctx.store_next_block = 0
    casd = state.casd
    if casd is None:
        raise CardError(SW_NOT_FOUND, "this card has no CASD")
    aid_key = bytes(target.aid).hex().upper()
    result = handle_key_package(
        bytes(buffer),
        ecdh=lambda pk: casd_key_agreement(state, pk),
        se_id=_se_identifier(state),
        sd_aid=bytes(target.aid),
        last_counter=state.keyload_counters.get(aid_key, 0),
        # The chain verifier below finds the CA-KLOC key itself (P1 = 00 rule); this argument is
        # only what open_package hands it.
        ca_public_key=casd.ca_keys[0].public_key() if casd.ca_keys else casd.public_key(),
        verify_chain=lambda certs, _root: verify_oce_chain(state, list(certs)),
    )
    install_key_set(target, result)
    state.keyload_counters[aid_key] = result.counter
    return result.response


def _key_set_delivery(state: CardState, ctx: ChannelContext, target: Application, sdata: StoreData) -> bytes:
    """STORE DATA in an OCE session: a key set for the SSD named by INSTALL [for personalization]."""
    if ctx.perso_target is None or target.aid == state.isd_aid or not target.is_security_domain:
        raise CardError(SW_SECURITY, "an OCE session stores only a key set, into an SSD")
    if ctx.session_dek is None:  # pragma: no cover - set together with oce_session
        raise CardError(SW_SECURITY, "no session key to open the key set with")
    ctx.perso_target = None  # one delivery per INSTALL [for personalization]
    ctx.store_next_block = 0
    if (
        sdata.block_number != 0
        or not sdata.last
        or sdata.structure is not DataStructure.DGI
        or sdata.encryption is not Encryption.NONE
    ):
        raise CardError(SW_WRONG_DATA, "a key set is one STORE DATA block, P1 89, block 00")
    try:
        control = keydelivery.read_key_set_dgis(sdata.data)
        keys = keydelivery.open_key_set(control, dek=ctx.session_dek)
    except keydelivery.KeyDeliveryError as e:
        raise CardError(e.sw, e.code) from None
    result = KeyPackageResult(keys, control.kvn, 0, b"")
    install_key_set(target, result)
    return keydelivery.encode_response(control)
