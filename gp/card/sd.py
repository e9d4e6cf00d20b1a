"""Security Domain command processing: card content management, keys, status, personalization.

Implements, for the Security Domain selected on a logical channel:

- INSTALL (GP CS v2.3.1 §11.5, §9.3 card content installation, §9.4 extradition, §9.5 registry
  update, §7.3.2 personalization), LOAD (§11.6, §9.3.5), DELETE (§11.2, §9.5 content removal),
  PUT KEY (§11.8, Amd D §7.2), STORE DATA (§11.11), GET STATUS (§11.4), SET STATUS (§11.10, §5
  life cycle transitions), GET DATA (§11.3).
- Delegated Management tokens (§C.4, AES token scheme §B.2.2: CMAC with the ISD's Token
  Verification key, KVN ``70``) and receipts (§C.5, §11.1.6: CMAC with the Receipt Generation
  key, KVN ``71``, of the SD holding the Receipt Generation privilege).

Status word policy where the spec only says "reject": the acting entity lacks the privilege or
authority → ``6982`` (security status not satisfied); the card, the target or the sequence is in
the wrong state → ``6985`` (conditions of use not satisfied); malformed data → ``6A80``; unknown
P1/P2 → ``6A86``; target absent → ``6A88``; memory exhausted → ``6A84``.  Handlers raise
:class:`CardError`; the dispatcher turns it into the status word and rolls the state back.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import algorithms

from gp import tlv
from gp.apdu import CommandAPDU
from gp.card.registry import descendants, has_authority, status_entries
from gp.card.state import (
    INITIAL_SEQUENCE_COUNTER,
    MAX_KEY_SETS,
    RECEIPT_KVN,
    TOKEN_KVN,
    Application,
    CardState,
    Key,
    KeySet,
    LoadFile,
)
from gp.commands import install as ins
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
from gp.commands.keys import DeleteKey, DeleteObject, KeyCheckError, PutKey, PutKeyResponse, parse_delete
from gp.commands.status import GetStatus, SetStatus, SetStatusScope, StatusScope, encode_entries
from gp.commands.store_data import DataStructure, Encryption, StoreData
from gp.commands.types import AID, CardLifeCycle, KeyType, LifeCycle, Privileges
from gp.errors import GPError, ParseError

__all__ = ["SD_LOAD_FILE_AID", "SD_MODULE_AID", "CardError", "ChannelContext", "process"]

SD_LOAD_FILE_AID = AID("A0000001515350")
SD_MODULE_AID = AID("A000000151535041")

SW_OK = 0x9000
SW_MORE = 0x6310
SW_MEMORY_FAILURE = 0x6581
SW_WRONG_LENGTH = 0x6700
SW_SECURITY = 0x6982
SW_CONDITIONS = 0x6985
SW_WRONG_DATA = 0x6A80
SW_NO_MEMORY = 0x6A84
SW_P1P2 = 0x6A86
SW_NOT_FOUND = 0x6A88
SW_INS = 0x6D00

_RESPONSE_BUDGET = 256 - 32  # room for an R-MAC and R-ENC padding in a short response
# Privileges only the ISD may grant (GP CS v2.3.1 §6.6.2: card-wide powers stay with the issuer).
_ISSUER_ONLY = (
    Privileges.AUTHORIZED_MANAGEMENT
    | Privileges.TOKEN_VERIFICATION
    | Privileges.GLOBAL_DELETE
    | Privileges.GLOBAL_LOCK
    | Privileges.GLOBAL_REGISTRY
    | Privileges.CARD_LOCK
    | Privileges.CARD_TERMINATE
    | Privileges.FINAL_APPLICATION
    | Privileges.RECEIPT_GENERATION
    | Privileges.CVM_MANAGEMENT
)


class CardError(Exception):
    """A command is refused with ``sw``; the card state is rolled back by the dispatcher."""

    def __init__(self, sw: int, reason: str = "") -> None:
        super().__init__(f"{sw:04X} {reason}")
        self.sw = sw
        self.reason = reason


@dataclass
class LoadInProgress:
    load_file_aid: AID
    sd_aid: AID
    digest: bytes
    size_hint: int
    next_block: int = 0
    buffer: bytearray = field(default_factory=bytearray)
    delegated: bool = False


@dataclass
class ChannelContext:
    """Transient per-channel state the SD commands use (cleared on reset, channel close, SELECT)."""

    load: LoadInProgress | None = None
    perso_target: AID | None = None
    store_next_block: int = 0
    status_pending: tuple[StatusScope, list[bytes]] | None = None
    decrypt: Callable[[bytes], bytes] | None = None  # sensitive-data decryption of the session
    authenticated: bool = False

    def clear(self) -> None:
        self.load = None
        self.perso_target = None
        self.store_next_block = 0
        self.status_pending = None


def _parse_error_sw(e: ParseError) -> int:
    return SW_P1P2 if e.offset in (2, 3) else SW_WRONG_DATA


def _require_auth(ctx: ChannelContext) -> None:
    if not ctx.authenticated:
        raise CardError(SW_SECURITY, "no authenticated secure channel session")


def _require_operational(state: CardState) -> None:
    if state.life_cycle in (CardLifeCycle.CARD_LOCKED, CardLifeCycle.TERMINATED):
        raise CardError(SW_CONDITIONS, f"card is {state.life_cycle.name}")


def _cmac(key: bytes, message: bytes) -> bytes:
    c = cmac.CMAC(algorithms.AES(key))
    c.update(message)
    return c.finalize()


# --- authorization: AM / DM tokens -------------------------------------------------------------


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


def _lv(b: bytes) -> bytes:
    return bytes([len(b)]) + b


def _check_memory(state: CardState, extra: int) -> None:
    if extra > state.memory_free():
        raise CardError(SW_NO_MEMORY, f"{extra} bytes needed, {state.memory_free()} free")


# --- INSTALL ---------------------------------------------------------------------------------


def _install(state: CardState, ctx: ChannelContext, sd: Application, cmd: CommandAPDU) -> bytes:
    _require_auth(ctx)
    try:
        icmd, _more = ins.parse_install(cmd)
    except ParseError as e:
        raise CardError(_parse_error_sw(e), e.problem) from None
    if isinstance(icmd, ins.InstallForPersonalization):
        return _install_for_personalization(state, ctx, sd, icmd)
    _require_operational(state)
    delegated = _authorize_management(state, sd, icmd.token_data(), icmd.token)
    if isinstance(icmd, ins.InstallForLoad):
        return _install_for_load(state, ctx, sd, icmd, delegated)
    if isinstance(icmd, ins.InstallForInstall):
        return _install_for_install(state, sd, icmd, delegated)
    if isinstance(icmd, ins.InstallForMakeSelectable):
        return _make_selectable(state, sd, icmd, delegated)
    if isinstance(icmd, ins.InstallForExtradition):
        return _extradite(state, sd, icmd, delegated)
    return _registry_update(state, sd, icmd, delegated)


def _check_grant(state: CardState, sd: Application, privileges: Privileges) -> None:
    problem = privileges.consistency_error()
    if problem:
        raise CardError(SW_WRONG_DATA, problem)
    if sd.aid != state.isd_aid and privileges & _ISSUER_ONLY:
        raise CardError(SW_SECURITY, "only the ISD grants card-wide privileges")


def _install_for_load(
    state: CardState, ctx: ChannelContext, sd: Application, icmd: ins.InstallForLoad, delegated: bool
) -> bytes:
    if icmd.load_file_aid in state.load_files or icmd.load_file_aid in state.applications:
        raise CardError(SW_CONDITIONS, "AID already present in the registry")
    target_aid = icmd.security_domain_aid or sd.aid
    target = state.applications.get(target_aid)
    if target is None or not target.is_security_domain:
        raise CardError(SW_NOT_FOUND, "associated Security Domain not found")
    if target.aid != sd.aid and not has_authority(state, sd, target.aid):
        raise CardError(SW_SECURITY, "cannot load for a Security Domain outside this hierarchy")
    if target.life_cycle.locked:
        raise CardError(SW_CONDITIONS, "associated Security Domain is locked")
    if icmd.load_file_hash and len(icmd.load_file_hash) not in (20, 32, 48, 64):
        raise CardError(SW_WRONG_DATA, "load file data block hash of unknown length")
    size_hint = icmd.parameters.size_hint()
    _check_memory(state, size_hint)
    ctx.load = LoadInProgress(icmd.load_file_aid, target.aid, icmd.load_file_hash, size_hint)
    ctx.load.delegated = delegated
    return b"\x00"


def _cap_modules(lfdb: bytes) -> list[AID]:
    """Applet AIDs from a Java Card CAP file's Applet component (JCVM spec §6.5), best effort."""
    modules: list[AID] = []
    pos = 0
    while pos + 3 <= len(lfdb):
        tag = lfdb[pos]
        size = int.from_bytes(lfdb[pos + 1 : pos + 3], "big")
        body = lfdb[pos + 3 : pos + 3 + size]
        if len(body) != size or not 1 <= tag <= 12:
            break
        if tag == 3 and body:
            i = 1
            for _ in range(body[0]):
                if i >= len(body):
                    break
                n = body[i]
                aid = body[i + 1 : i + 1 + n]
                if 5 <= len(aid) <= 16 and len(aid) == n:
                    modules.append(AID(aid))
                i += 1 + n + 2
        pos += 3 + size
    return modules


_HASHES = {20: hashlib.sha1, 32: hashlib.sha256, 48: hashlib.sha384, 64: hashlib.sha512}


def _load(state: CardState, ctx: ChannelContext, sd: Application, cmd: CommandAPDU) -> bytes:
    _require_auth(ctx)
    _require_operational(state)
    pending = ctx.load
    if pending is None:
        raise CardError(SW_CONDITIONS, "no INSTALL [for load] precedes LOAD")
    try:
        block = ins.Load.from_apdu(cmd)
    except ParseError as e:
        ctx.load = None
        raise CardError(_parse_error_sw(e), e.problem) from None
    if block.block_number != pending.next_block:
        ctx.load = None
        raise CardError(SW_P1P2, f"LOAD block {block.block_number}, expected {pending.next_block}")
    pending.buffer += block.data
    pending.next_block += 1
    if len(pending.buffer) > state.memory_free():
        ctx.load = None
        raise CardError(SW_NO_MEMORY, "load file does not fit")
    if not block.last:
        if pending.next_block > 0xFF:
            ctx.load = None
            raise CardError(SW_P1P2, "LOAD block numbers exhausted")
        return b""
    ctx.load = None
    try:
        items = tlv.parse_all(bytes(pending.buffer))
    except ParseError as e:
        raise CardError(SW_WRONG_DATA, f"load file: {e.problem}") from None
    lfdbs = [t for t in items if t.tag == 0xC4]
    if len(lfdbs) != 1 or any(t.tag not in (0xC4, 0xE2) for t in items) or items[-1].tag != 0xC4:
        raise CardError(SW_WRONG_DATA, "load file must be E2* C4")
    lfdb = lfdbs[0].value
    if pending.digest:
        digest = _HASHES[len(pending.digest)](lfdb).digest()
        if not hmac.compare_digest(digest, pending.digest):
            raise CardError(SW_WRONG_DATA, "load file data block hash does not match")
    if pending.load_file_aid in state.load_files or pending.load_file_aid in state.applications:
        raise CardError(SW_CONDITIONS, "AID already present in the registry")
    target = state.applications.get(pending.sd_aid)
    if target is None:
        raise CardError(SW_NOT_FOUND, "associated Security Domain vanished")
    digest = pending.digest or hashlib.sha256(lfdb).digest()
    state.load_files[pending.load_file_aid] = LoadFile(
        pending.load_file_aid, pending.sd_aid, _cap_modules(lfdb), lfdb, digest
    )
    return _confirmation(state, sd, pending.delegated, _lv(pending.load_file_aid) + _lv(pending.sd_aid))


def _install_for_install(
    state: CardState, sd: Application, icmd: ins.InstallForInstall, delegated: bool
) -> bytes:
    elf = state.load_files.get(icmd.load_file_aid)
    if elf is None:
        raise CardError(SW_NOT_FOUND, "executable load file not found")
    if icmd.module_aid not in elf.modules:
        raise CardError(SW_NOT_FOUND, "executable module not found in the load file")
    if icmd.application_aid in state.applications or icmd.application_aid in state.load_files:
        raise CardError(SW_CONDITIONS, "AID already present in the registry")
    privileges = icmd.privileges
    _check_grant(state, sd, privileges)
    is_sd_module = icmd.module_aid == SD_MODULE_AID
    if privileges.is_security_domain != is_sd_module:
        raise CardError(SW_WRONG_DATA, "Security Domain privilege and module disagree")
    if privileges & Privileges.CARD_RESET and not icmd.make_selectable:
        raise CardError(SW_WRONG_DATA, "Card Reset needs [for make selectable]")
    if privileges & Privileges.CARD_RESET and any(
        a.has(Privileges.CARD_RESET) for a in state.applications.values() if a.aid != state.isd_aid
    ):
        raise CardError(SW_CONDITIONS, "another application already has the Card Reset privilege")
    if sd.life_cycle.locked:
        raise CardError(SW_CONDITIONS, "Security Domain is locked")
    quota = (icmd.parameters.quota(0xC8) or 0) + (icmd.parameters.quota(0xD8) or 0)
    _check_memory(state, quota)
    lc = LifeCycle(0x07) if icmd.make_selectable else LifeCycle(0x03)
    state.applications[icmd.application_aid] = Application(
        icmd.application_aid,
        icmd.load_file_aid,
        icmd.module_aid,
        privileges,
        lc,
        sd.aid,
        icmd.parameters.encode(),
        reserved_memory=quota,
    )
    return _confirmation(state, sd, delegated, _lv(icmd.load_file_aid) + _lv(icmd.application_aid))


def _make_selectable(
    state: CardState, sd: Application, icmd: ins.InstallForMakeSelectable, delegated: bool
) -> bytes:
    app = state.applications.get(icmd.application_aid)
    if app is None or app.aid == state.isd_aid:
        raise CardError(SW_NOT_FOUND, "application not found")
    if not has_authority(state, sd, app.associated_sd):
        raise CardError(SW_SECURITY, "application not under this Security Domain")
    if not app.life_cycle.installed_only or app.life_cycle.locked:
        raise CardError(SW_CONDITIONS, "application is not in the INSTALLED state")
    extra = icmd.privileges & ~(
        Privileges.CARD_RESET | Privileges.CONTACTLESS_ACTIVATION | Privileges.CONTACTLESS_SELF_ACTIVATION
    )
    if extra:
        raise CardError(SW_WRONG_DATA, "make selectable may only add Card Reset / contactless privileges")
    app.privileges |= icmd.privileges
    app.life_cycle = LifeCycle(0x07)
    return _confirmation(state, sd, delegated, _lv(app.load_file_aid) + _lv(app.aid))


def _extradite(state: CardState, sd: Application, icmd: ins.InstallForExtradition, delegated: bool) -> bytes:
    target = state.applications.get(icmd.security_domain_aid)
    if target is None:
        raise CardError(SW_NOT_FOUND, "target Security Domain not found")
    if not target.is_security_domain:
        raise CardError(SW_WRONG_DATA, "extradition target is not a Security Domain")
    if target.life_cycle.locked:
        raise CardError(SW_CONDITIONS, "target Security Domain is locked")
    app = state.applications.get(icmd.aid)
    elf = state.load_files.get(icmd.aid)
    if app is None and elf is None:
        raise CardError(SW_NOT_FOUND, "application or load file not found")
    if app is not None:
        if app.aid == state.isd_aid:
            raise CardError(SW_CONDITIONS, "the ISD cannot be extradited")
        if not has_authority(state, sd, app.associated_sd):
            raise CardError(SW_SECURITY, "application not under this Security Domain")
        if app.is_security_domain and target.aid != app.aid:
            below, _ = descendants(state, app.aid)
            if any(d.aid == target.aid for d in below):
                raise CardError(SW_CONDITIONS, "extradition would create a cycle in the SD hierarchy")
        app.associated_sd = target.aid
    elif elf is not None:
        if elf.in_rom:
            raise CardError(SW_CONDITIONS, "load file in ROM cannot be extradited")
        if not has_authority(state, sd, elf.associated_sd):
            raise CardError(SW_SECURITY, "load file not under this Security Domain")
        if target.has(Privileges.DAP_VERIFICATION):
            raise CardError(SW_CONDITIONS, "load files cannot go to an SD with DAP Verification (§9.4.1)")
        elf.associated_sd = target.aid
    return _confirmation(state, sd, delegated, _lv(target.aid) + _lv(icmd.aid))


def _registry_update(
    state: CardState, sd: Application, icmd: ins.InstallForRegistryUpdate, delegated: bool
) -> bytes:
    if icmd.application_aid is None:
        raise CardError(SW_WRONG_DATA, "registry update needs an application AID")
    app = state.applications.get(icmd.application_aid)
    if app is None:
        raise CardError(SW_NOT_FOUND, "application not found")
    if app.aid == state.isd_aid and sd.aid != state.isd_aid:
        raise CardError(SW_SECURITY, "only the ISD updates its own entry")
    if not has_authority(state, sd, app.associated_sd) and app.aid != state.isd_aid:
        raise CardError(SW_SECURITY, "application not under this Security Domain")
    if icmd.privileges is not None:
        if icmd.privileges.is_security_domain != app.is_security_domain:
            raise CardError(SW_WRONG_DATA, "the Security Domain privilege cannot change")
        _check_grant(state, sd, icmd.privileges)
        app.privileges = icmd.privileges
    if icmd.security_domain_aid is not None:
        _extradite(state, sd, ins.InstallForExtradition(icmd.security_domain_aid, app.aid), delegated)
    return _confirmation(state, sd, delegated, _lv(app.aid))


def _install_for_personalization(
    state: CardState, ctx: ChannelContext, sd: Application, icmd: ins.InstallForPersonalization
) -> bytes:
    if state.life_cycle is CardLifeCycle.TERMINATED:
        raise CardError(SW_CONDITIONS, "card terminated")
    app = state.applications.get(icmd.application_aid)
    if app is None or app.aid == state.isd_aid:
        raise CardError(SW_NOT_FOUND, "application not found")
    if app.associated_sd != sd.aid:
        raise CardError(SW_SECURITY, "application is not associated with this Security Domain")
    if app.life_cycle.locked:
        raise CardError(SW_CONDITIONS, "application is locked")
    ctx.perso_target = app.aid
    ctx.store_next_block = 0
    return b"\x00"


# --- DELETE ----------------------------------------------------------------------------------


def _delete(
    state: CardState, ctx: ChannelContext, sd: Application, cmd: CommandAPDU, selected: set[AID]
) -> bytes:
    _require_auth(ctx)
    _require_operational(state)
    try:
        dcmd, _more = parse_delete(cmd)
    except ParseError as e:
        raise CardError(_parse_error_sw(e), e.problem) from None
    if isinstance(dcmd, DeleteKey):
        return _delete_key(sd, dcmd)
    dtbs = dcmd.token_data()
    delegated = _authorize_management(state, sd, dtbs, dcmd.token)
    return _delete_object(state, sd, dcmd, selected, delegated)


def _delete_key(sd: Application, dcmd: DeleteKey) -> bytes:
    found = False
    for kvn in list(sd.keys.sets):
        if dcmd.kvn is not None and kvn != dcmd.kvn:
            continue
        ks = sd.keys.sets[kvn]
        if dcmd.kid is None:
            del sd.keys.sets[kvn]
            found = True
            continue
        if dcmd.kid in ks.keys:
            del ks.keys[dcmd.kid]
            found = True
            if not ks.keys:
                del sd.keys.sets[kvn]
    if not found:
        raise CardError(SW_NOT_FOUND, "key not found")
    return b"\x00"


def _delete_object(
    state: CardState, sd: Application, dcmd: DeleteObject, selected: set[AID], delegated: bool
) -> bytes:
    aid = dcmd.aid
    if aid == state.isd_aid:
        raise CardError(SW_CONDITIONS, "the ISD cannot be deleted")
    app = state.applications.get(aid)
    elf = state.load_files.get(aid)
    if app is None and elf is None:
        raise CardError(SW_NOT_FOUND, "no such application or load file")
    owner = app.associated_sd if app is not None else elf.associated_sd  # type: ignore[union-attr]
    if not (sd.has(Privileges.GLOBAL_DELETE) or has_authority(state, sd, owner)):
        raise CardError(SW_SECURITY, "object not under this Security Domain")
    doomed_apps: list[Application] = []
    doomed_elfs: list[LoadFile] = []
    if app is not None:
        doomed_apps.append(app)
        if app.is_security_domain:
            below_apps, below_elfs = descendants(state, app.aid)
            if (below_apps or below_elfs) and not dcmd.related:
                raise CardError(SW_CONDITIONS, "Security Domain still has associated content")
            doomed_apps += below_apps
            doomed_elfs += below_elfs
    else:
        assert elf is not None
        if elf.in_rom:
            raise CardError(SW_CONDITIONS, "load file in ROM cannot be deleted")
        doomed_elfs.append(elf)
        instances = [a for a in state.applications.values() if a.load_file_aid == elf.aid]
        if instances and not dcmd.related:
            raise CardError(SW_CONDITIONS, "load file still has application instances")
        for inst in instances:
            doomed_apps.append(inst)
            if inst.is_security_domain:
                below_apps, below_elfs = descendants(state, inst.aid)
                if below_apps or below_elfs:
                    raise CardError(SW_CONDITIONS, "an instance is a Security Domain with content")
    # instances of load files being deleted go too (related deletion of an SD's load files)
    for lf in list(doomed_elfs):
        for inst in state.applications.values():
            if inst.load_file_aid == lf.aid and inst not in doomed_apps:
                raise CardError(SW_CONDITIONS, f"load file {lf.aid} has instances outside the deletion")
    if any(a.aid in selected for a in doomed_apps) or any(a.aid == sd.aid for a in doomed_apps):
        raise CardError(SW_CONDITIONS, "an application to delete is currently selected")
    for a in doomed_apps:
        state.applications.pop(a.aid, None)
    for lf in doomed_elfs:
        state.load_files.pop(lf.aid, None)
    return _confirmation(state, sd, delegated, _lv(aid))


# --- PUT KEY ---------------------------------------------------------------------------------


def _put_key(state: CardState, ctx: ChannelContext, sd: Application, cmd: CommandAPDU) -> bytes:
    _require_auth(ctx)
    if state.life_cycle is CardLifeCycle.TERMINATED:
        raise CardError(SW_CONDITIONS, "card terminated")
    target = sd
    if ctx.perso_target is not None:
        perso = state.applications.get(ctx.perso_target)
        if perso is None or not perso.is_security_domain:
            raise CardError(SW_CONDITIONS, "PUT KEY is only forwarded to a Security Domain")
        target = perso
    if state.life_cycle is CardLifeCycle.CARD_LOCKED and target.aid != state.isd_aid:
        raise CardError(SW_CONDITIONS, "card locked")
    decrypt = ctx.decrypt
    if decrypt is None:
        raise CardError(SW_SECURITY, "no session key to decrypt key components")
    try:
        pk = PutKey.from_apdu(cmd, decrypt=decrypt)
    except KeyCheckError as e:
        raise CardError(SW_SECURITY, str(e)) from None
    except ParseError as e:
        raise CardError(_parse_error_sw(e), e.problem) from None
    except GPError as e:
        raise CardError(SW_WRONG_DATA, str(e)) from None
    store = target.keys
    if pk.replace_version == 0:
        if pk.new_version in store.sets:
            raise CardError(SW_WRONG_DATA, f"key version {pk.new_version:02X} already exists")
        if len(store.sets) >= MAX_KEY_SETS:
            raise CardError(SW_NO_MEMORY, "no room for another key set")
        keyset = KeySet(pk.new_version)
    else:
        old = store.sets.get(pk.replace_version)
        if old is None:
            raise CardError(SW_NOT_FOUND, f"key version {pk.replace_version:02X} not found")
        if pk.new_version != pk.replace_version and pk.new_version in store.sets:
            raise CardError(SW_WRONG_DATA, f"key version {pk.new_version:02X} already exists")
        keyset = KeySet(pk.new_version, dict(old.keys))
        del store.sets[pk.replace_version]
    for i, ck in enumerate(pk.keys):
        kid = pk.first_kid + i
        keyset.keys[kid] = Key(kid, ck.key_type, ck.value)
    keyset.sequence_counter = INITIAL_SEQUENCE_COUNTER
    store.sets[keyset.kvn] = keyset
    return PutKeyResponse(keyset.kvn, tuple(ck.kcv() for ck in pk.keys)).encode()


# --- STORE DATA ------------------------------------------------------------------------------


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


# --- GET STATUS ------------------------------------------------------------------------------


def _get_status(
    state: CardState, ctx: ChannelContext, sd: Application, cmd: CommandAPDU
) -> tuple[bytes, int]:
    _require_auth(ctx)
    if state.life_cycle is CardLifeCycle.TERMINATED:
        raise CardError(SW_CONDITIONS, "card terminated")
    try:
        gs = GetStatus.from_apdu(cmd)
    except ParseError as e:
        raise CardError(_parse_error_sw(e), e.problem) from None
    if gs.next_occurrence:
        if ctx.status_pending is None or ctx.status_pending[0] is not gs.scope:
            raise CardError(SW_CONDITIONS, "no GET STATUS to continue")
        records = ctx.status_pending[1]
    else:
        entries = status_entries(state, sd, gs.scope, gs.aid_prefix)
        if not entries:
            ctx.status_pending = None
            raise CardError(SW_NOT_FOUND, "no matching entry")
        records = encode_entries(entries, gs.scope, tlv_format=gs.tlv_format, tag_list=gs.tag_list)
    out = b""
    taken = 0
    for r in records:
        if out and len(out) + len(r) > _RESPONSE_BUDGET:
            break
        out += r
        taken += 1
    rest = records[taken:]
    if rest:
        ctx.status_pending = (gs.scope, rest)
        return out, SW_MORE
    ctx.status_pending = None
    return out, SW_OK


# --- SET STATUS ------------------------------------------------------------------------------


_CARD_TRANSITIONS: dict[CardLifeCycle, set[CardLifeCycle]] = {
    CardLifeCycle.OP_READY: {CardLifeCycle.INITIALIZED, CardLifeCycle.SECURED, CardLifeCycle.TERMINATED},
    CardLifeCycle.INITIALIZED: {CardLifeCycle.SECURED, CardLifeCycle.TERMINATED},
    CardLifeCycle.SECURED: {CardLifeCycle.CARD_LOCKED, CardLifeCycle.TERMINATED},
    CardLifeCycle.CARD_LOCKED: {CardLifeCycle.SECURED, CardLifeCycle.TERMINATED},
    CardLifeCycle.TERMINATED: set(),
}


def _set_status(state: CardState, ctx: ChannelContext, sd: Application, cmd: CommandAPDU) -> bytes:
    _require_auth(ctx)
    if state.life_cycle is CardLifeCycle.TERMINATED:
        raise CardError(SW_CONDITIONS, "card terminated")
    try:
        ss = SetStatus.from_apdu(cmd)
    except ParseError as e:
        raise CardError(_parse_error_sw(e), e.problem) from None
    if ss.scope is SetStatusScope.CARD:
        return _set_card_status(state, sd, ss)
    if state.life_cycle is CardLifeCycle.CARD_LOCKED:
        raise CardError(SW_CONDITIONS, "card locked")
    target = state.applications.get(AID(ss.aid))
    if target is None:
        raise CardError(SW_NOT_FOUND, "application not found")
    if target.aid == state.isd_aid:
        raise CardError(SW_WRONG_DATA, "the ISD's state is the card's: use P1 80")
    lock_request = bool(ss.state & 0x80)
    may_lock = sd.has(Privileges.GLOBAL_LOCK) or has_authority(state, sd, target.associated_sd)
    if ss.scope is SetStatusScope.SECURITY_DOMAIN_AND_APPLICATIONS:
        if not target.is_security_domain:
            raise CardError(SW_WRONG_DATA, "P1 60 needs a Security Domain")
        if ss.state not in (0x80, 0x00):
            raise CardError(SW_WRONG_DATA, "P1 60 only locks (80) or unlocks (00)")
        if not may_lock:
            raise CardError(SW_SECURITY, "no authority to lock this Security Domain")
        if target.life_cycle.locked == lock_request:
            raise CardError(SW_CONDITIONS, "already in the requested lock state")
        below, _ = descendants(state, target.aid)
        for a in [target, *below]:
            a.life_cycle = a.life_cycle.with_locked(lock_request)
        return b""
    if lock_request:
        if ss.state != 0x80 and ss.state & 0x7F != target.life_cycle.state:
            raise CardError(SW_WRONG_DATA, "lock coding must be 80 or the current state with b8")
        if not may_lock:
            raise CardError(SW_SECURITY, "no authority to lock this application")
        if target.life_cycle.locked:
            raise CardError(SW_CONDITIONS, "already locked")
        target.life_cycle = target.life_cycle.with_locked(True)
        return b""
    if target.life_cycle.locked:
        if ss.state not in (0x00, target.life_cycle.state):
            raise CardError(SW_WRONG_DATA, "unlock coding must be 00 or the state before locking")
        if not may_lock:
            raise CardError(SW_SECURITY, "no authority to unlock this application")
        target.life_cycle = target.life_cycle.with_locked(False)
        return b""
    if ss.state == 0x00:
        raise CardError(SW_CONDITIONS, "not locked")
    # a forward state transition; off-card only for Security Domains (SELECTABLE -> PERSONALIZED)
    if not target.is_security_domain:
        raise CardError(SW_WRONG_DATA, "application-specific states are set by the application")
    if ss.state != 0x0F:
        raise CardError(SW_WRONG_DATA, f"no Security Domain state {ss.state:02X}")
    if not (sd.aid == target.aid or has_authority(state, sd, target.associated_sd)):
        raise CardError(SW_SECURITY, "no authority over this Security Domain")
    if target.life_cycle.state != 0x07:
        raise CardError(SW_CONDITIONS, "Security Domain is not SELECTABLE")
    target.life_cycle = LifeCycle(0x0F)
    return b""


def _set_card_status(state: CardState, sd: Application, ss: SetStatus) -> bytes:
    if ss.aid and ss.aid != state.isd_aid:
        raise CardError(SW_WRONG_DATA, "card life cycle changes name the ISD")
    try:
        new = CardLifeCycle(ss.state)
    except ValueError:
        raise CardError(SW_WRONG_DATA, f"no card life cycle state {ss.state:02X}") from None
    current = state.life_cycle
    is_isd = sd.aid == state.isd_aid
    if new is CardLifeCycle.TERMINATED:
        allowed = is_isd or sd.has(Privileges.CARD_TERMINATE)
    elif new is CardLifeCycle.CARD_LOCKED or current is CardLifeCycle.CARD_LOCKED:
        allowed = is_isd or sd.has(Privileges.CARD_LOCK)
    else:
        allowed = is_isd
    if not allowed:
        raise CardError(SW_SECURITY, "missing privilege for this card life cycle transition")
    if new not in _CARD_TRANSITIONS[current]:
        raise CardError(SW_CONDITIONS, f"{current.name} -> {new.name} is not a valid transition")
    state.life_cycle = new
    return b""


# --- GET DATA --------------------------------------------------------------------------------


def _get_data(state: CardState, sd: Application, cmd: CommandAPDU) -> bytes:
    try:
        gd = GetData.from_apdu(cmd)
    except ParseError as e:
        raise CardError(SW_WRONG_DATA, e.problem) from None
    is_isd = sd.aid == state.isd_aid
    if gd.tag == TAG_CPLC:
        return CPLC.parse(state.cplc).encode_tlv()
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


# --- entry point -----------------------------------------------------------------------------


def process(
    state: CardState, ctx: ChannelContext, sd: Application, cmd: CommandAPDU, selected: set[AID]
) -> tuple[bytes, int]:
    """Run one plain (already unwrapped) command on Security Domain ``sd``.

    Personalization routing ends with the first command that is neither STORE DATA nor PUT KEY
    (GP CS v2.3.1 §7.3.2); a LOAD sequence ends with anything but LOAD (§11.6.2).
    """
    insb = cmd.ins
    if insb not in (0xE2, 0xD8):
        ctx.perso_target = None
        ctx.store_next_block = 0
    if insb != 0xE8:
        ctx.load = None
    if insb != 0xF2:
        ctx.status_pending = None
    if state.life_cycle is CardLifeCycle.TERMINATED and insb != 0xCA:
        raise CardError(SW_CONDITIONS, "card terminated")
    proprietary_only = {0xE6, 0xE8, 0xE4, 0xD8, 0xE2, 0xF2, 0xF0}
    if insb in proprietary_only and not cmd.is_proprietary:
        raise CardError(0x6E00, "GP command with an interindustry class")
    if insb == 0xE6:
        return _install(state, ctx, sd, cmd), SW_OK
    if insb == 0xE8:
        return _load(state, ctx, sd, cmd), SW_OK
    if insb == 0xE4:
        return _delete(state, ctx, sd, cmd, selected), SW_OK
    if insb == 0xD8:
        return _put_key(state, ctx, sd, cmd), SW_OK
    if insb == 0xE2:
        return _store_data(state, ctx, sd, cmd), SW_OK
    if insb == 0xF2:
        return _get_status(state, ctx, sd, cmd)
    if insb == 0xF0:
        return _set_status(state, ctx, sd, cmd), SW_OK
    if insb == 0xCA:
        return _get_data(state, sd, cmd), SW_OK
    raise CardError(SW_INS, f"instruction {insb:02X} not supported")
