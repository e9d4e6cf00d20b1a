"""The payload commands of each job kind, built with :mod:`gp.commands` (GP Card Spec v2.3.1).

Every function returns the *plain* commands of one job step (a list of :class:`PayloadCommand`);
:mod:`jobs.compiler.session` wraps them in an SCP03 session of the Security Domain that acts.
Each command carries the status words that let a script go on; a precomputed script cannot branch,
so the expectations say what a well-going step answers and the agent stops at anything else.

Job kinds and the SD whose session runs them:

- :func:`create_security_domain` — ISD session.  INSTALL [for install and make selectable]
  from the SD load file / module (GPCS §11.5.2.3.2, §9.3.4), INSTALL [for personalization] of the
  new SD (§11.5.2.3.6, §7.3.2), PUT KEY of its first SCP03 key set (§11.8, Amd D §7.2.2: key
  components encrypted with the static Key-DEK *of the session's SD* — the ISD — as the card
  decrypts them with its session's sensitive-data key, Amd D §6.2.8), then GET STATUS ``40`` of the
  new AID (§11.4) as the presence check.
- :func:`verify_keys` — a session of the new SD with the new keys: GET DATA key information
  template ``00E0`` (§11.3.3.1).  The session opening is the proof; the template shows the KVNs.
- :func:`rotate_keys` — session of the SD with its current keys: PUT KEY adding (P1 ``00``) or
  replacing (P1 = old KVN) a key set (§11.8.2.1), then GET DATA ``00E0``.
- :func:`delete_key_version` — DELETE key by KVN (``D2``, §11.2.2.1 Table 11-24), then ``00E0``.
- :func:`delete_security_domain` / :func:`delete_application` — DELETE ``4F`` AID (P2 ``80`` for
  the related objects, §11.2.2), then GET STATUS ``40`` of the AID (``6A88`` once it is gone).
- :func:`install_application` — INSTALL [for install and make selectable] + GET STATUS ``40``.
- :func:`load_file` — INSTALL [for load] (§11.5.2.3.1, with the SHA-256 Load File Data Block
  hash) + LOAD blocks (§11.6, numbered from 00, last block flagged) + GET STATUS ``10``.
- :func:`personalize_application` — INSTALL [for personalization] + STORE DATA blocks (§11.11:
  P2 block number from 00, P1 b8 on the last block, whole DGIs / TLVs per block; optionally
  encrypted with the SD's static Key-DEK, P1 b7..b6 = 11).
- :func:`set_status` — SET STATUS lock / unlock (§11.10, P1 ``40`` or ``60``) + GET STATUS ``40``.
- :func:`read_status` — GET STATUS ``80`` / ``40`` / ``10`` with bounded "next occurrence"
  continuations (see its docstring), GET DATA CPLC ``9F7F`` and key information ``00E0``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from gp import tlv
from gp.commands import (
    AID,
    DGI,
    ClearKey,
    DataStructure,
    DeleteKey,
    DeleteObject,
    Encryption,
    GetData,
    GetStatus,
    InstallForInstall,
    InstallForLoad,
    InstallForPersonalization,
    InstallParameters,
    KeyType,
    LoadParameters,
    Privileges,
    PutKey,
    SetStatus,
    StatusScope,
    StoreData,
    load_blocks,
)
from gp.scp03 import StaticKeys, encrypt_dek
from jobs.compiler.session import CompilerError, PayloadCommand

__all__ = [
    "DEFAULT_SD_INSTALL_PARAMS",
    "FILLER_DGI",
    "SD_LOAD_FILE_AID",
    "SD_MODULE_AID",
    "TAG_CPLC",
    "TAG_KEY_INFORMATION",
    "create_security_domain",
    "delete_application",
    "delete_key_version",
    "delete_security_domain",
    "install_application",
    "load_file",
    "personalize_application",
    "read_status",
    "rotate_keys",
    "set_status",
    "verify_keys",
]

# The Security Domain executable load file and module (GPCS v2.3.1 §9.3.4: SDs are installed from
# an ELF already on the card; these are the AIDs gp.card and most cards use).
SD_LOAD_FILE_AID = AID("A0000001515350")
SD_MODULE_AID = AID("A000000151535041")

# Application-specific install parameters (C9 value) of a new SD: tag '81' = SCP identifier and
# "i" parameter the SD supports (GPCS v2.3.1 §11.5.2.3.7 SD install parameters): SCP03, i = 70
# (pseudo-random card challenge, R-MAC, R-ENC; Amd D Table 5-1).
DEFAULT_SD_INSTALL_PARAMS = bytes.fromhex("81020370")

TAG_KEY_INFORMATION = 0x00E0
TAG_CPLC = 0x9F7F

# Tessera convention: a filler DGI pads an encrypted STORE DATA block to the AES block size
# (Amd D §6.2.8 encrypts whole blocks); receiving applications ignore it.
FILLER_DGI = 0x7FFF

MAX_STORE_DATA_BLOCK = 223  # + C-DECRYPTION padding (to 224) + 8-byte C-MAC fits a short Lc
MAX_ENCRYPTED_STORE_DATA_BLOCK = 205  # + filler (<= 18) -> 224 after DEK padding
MAX_LOAD_BLOCK = 239  # gp.commands.load_blocks' default: 240 after padding + C-MAC

_OK = ("9000",)
_OK_OR_ABSENT = ("9000", "6A88")
_STATUS = ("9000", "6310", "6A88")
# GET STATUS "next occurrence" when nothing is pending: 6985 on gp.card, 6A88 on some cards.
_STATUS_NEXT = ("9000", "6310", "6A88", "6985")


def _cmd(apdu: object, label: str, expect: tuple[str, ...] = _OK) -> PayloadCommand:
    return PayloadCommand(apdu.encode(), expect, label)  # type: ignore[attr-defined]


def _key_set(keys: StaticKeys) -> tuple[ClearKey, ...]:
    """Key-ENC, Key-MAC, Key-DEK at KIDs 1, 2, 3 (Amd D §6.1)."""
    return tuple(ClearKey(KeyType.AES, k) for k in (keys.enc, keys.mac, keys.dek))


def _check_kvn(kvn: int) -> None:
    if not 1 <= kvn <= 0x7F:
        raise CompilerError(f"key version {kvn:#x} outside 01..7F")


def _presence(aid: AID, what: str, expect: tuple[str, ...] = _OK) -> PayloadCommand:
    return _cmd(GetStatus(StatusScope.APPLICATIONS, aid).to_apdu(), f"GET STATUS {what}", expect)


def _key_information() -> PayloadCommand:
    return _cmd(GetData(TAG_KEY_INFORMATION).to_apdu(), "GET DATA key information")


# --- Security Domains and keys -------------------------------------------------------------------


def create_security_domain(
    *,
    isd_keys: StaticKeys,
    ssd_aid: bytes,
    privileges: Privileges,
    new_keys: StaticKeys,
    new_kvn: int,
    install_params: bytes = DEFAULT_SD_INSTALL_PARAMS,
) -> list[PayloadCommand]:
    """Create a Supplementary Security Domain and give it its first key set (ISD session).

    ``isd_keys`` are the keys of the session that runs the script: their Key-DEK encrypts the new
    key components.  ``privileges`` must include :attr:`Privileges.SECURITY_DOMAIN`.
    """
    aid = AID(ssd_aid)
    if not privileges.is_security_domain:
        raise CompilerError("a Security Domain needs the Security Domain privilege")
    problem = privileges.consistency_error()
    if problem:
        raise CompilerError(problem)
    _check_kvn(new_kvn)
    install = InstallForInstall(
        SD_LOAD_FILE_AID, SD_MODULE_AID, aid, privileges, InstallParameters(install_params)
    )
    put = PutKey(new_kvn, _key_set(new_keys))
    return [
        _cmd(install.to_apdu(), "INSTALL [for install and make selectable] SD"),
        _cmd(InstallForPersonalization(aid).to_apdu(), "INSTALL [for personalization] SD"),
        _cmd(put.to_apdu(dek=isd_keys.dek), "PUT KEY new key set"),
        _presence(aid, "new SD"),
    ]


def verify_keys(*, kvn: int | None = None) -> list[PayloadCommand]:
    """Run in a session opened with the NEW keys on the new SD: reads its key information template.

    ``kvn`` is only used in the label; the session itself (EXTERNAL AUTHENTICATE ``9000``) is the
    proof that the card holds the keys.
    """
    label = "GET DATA key information" + (f" (KVN {kvn:02X})" if kvn is not None else "")
    return [_cmd(GetData(TAG_KEY_INFORMATION).to_apdu(), label)]


def rotate_keys(
    *,
    sd_keys: StaticKeys,
    new_keys: StaticKeys,
    new_kvn: int,
    replace: bool,
    current_kvn: int | None = None,
) -> list[PayloadCommand]:
    """PUT KEY of a new key set in a session of the SD opened with ``sd_keys`` (its current keys).

    ``replace=False`` adds ``new_kvn`` next to the current set (make-before-break: verify it with
    :func:`verify_keys`, then :func:`delete_key_version` the old one); ``replace=True`` replaces
    ``current_kvn`` by ``new_kvn`` in one command.
    """
    _check_kvn(new_kvn)
    replace_version = 0
    if replace:
        if current_kvn is None:
            raise CompilerError("replacing a key set needs current_kvn")
        _check_kvn(current_kvn)
        replace_version = current_kvn
    put = PutKey(new_kvn, _key_set(new_keys), replace_version=replace_version)
    verb = f"replacing KVN {replace_version:02X}" if replace else "adding"
    return [
        _cmd(put.to_apdu(dek=sd_keys.dek), f"PUT KEY {verb} KVN {new_kvn:02X}"),
        _key_information(),
    ]


def delete_key_version(*, kvn: int) -> list[PayloadCommand]:
    """DELETE every key of key set ``kvn`` of the session's SD (run after verifying the new set)."""
    _check_kvn(kvn)
    return [_cmd(DeleteKey(kvn=kvn).to_apdu(), f"DELETE key set KVN {kvn:02X}"), _key_information()]


def delete_security_domain(*, aid: bytes, related: bool = True) -> list[PayloadCommand]:
    """DELETE an SD (and, with ``related``, everything associated with it); then check it is gone."""
    target = AID(aid)
    return [
        _cmd(DeleteObject(target, related=related).to_apdu(), "DELETE SD"),
        _presence(target, "deleted SD", _OK_OR_ABSENT),
    ]


# --- applications --------------------------------------------------------------------------------


def install_application(
    *,
    load_file_aid: bytes,
    module_aid: bytes,
    instance_aid: bytes,
    privileges: Privileges = Privileges.NONE,
    params: bytes = b"",
) -> list[PayloadCommand]:
    """INSTALL [for install and make selectable] an instance; ``params`` is the C9 value."""
    if privileges.is_security_domain:
        raise CompilerError("use create_security_domain for Security Domains")
    problem = privileges.consistency_error()
    if problem:
        raise CompilerError(problem)
    instance = AID(instance_aid)
    install = InstallForInstall(
        AID(load_file_aid), AID(module_aid), instance, privileges, InstallParameters(params)
    )
    return [
        _cmd(install.to_apdu(), "INSTALL [for install and make selectable]"),
        _presence(instance, "new instance"),
    ]


def load_file(
    *, load_file_aid: bytes, sd_aid: bytes | None, data: bytes, block_size: int = MAX_LOAD_BLOCK
) -> list[PayloadCommand]:
    """INSTALL [for load] + LOAD blocks of the Load File Data Block ``data`` (the ``C4`` content).

    ``sd_aid`` is the SD to associate the load file with (None: the session's SD).
    """
    if not 1 <= block_size <= MAX_LOAD_BLOCK:
        raise CompilerError(f"LOAD block size must be 1..{MAX_LOAD_BLOCK}")
    if not data:
        raise CompilerError("empty load file")
    elf = AID(load_file_aid)
    install = InstallForLoad(
        elf,
        AID(sd_aid) if sd_aid is not None else None,
        hashlib.sha256(data).digest(),
        LoadParameters.with_sizes(code=len(data)),
    )
    out = [_cmd(install.to_apdu(), "INSTALL [for load]")]
    blocks = load_blocks(data, block_size=block_size)
    out += [_cmd(b.to_apdu(), f"LOAD block {b.block_number}/{len(blocks) - 1}") for b in blocks]
    out.append(_cmd(GetStatus(StatusScope.LOAD_FILES_AND_MODULES, elf).to_apdu(), "GET STATUS new load file"))
    return out


def _encode_record(record: DGI | tlv.TLV) -> bytes:
    return record.encode()


def _pad_with_filler(block: bytes) -> bytes:
    pad = -len(block) % 16
    if pad == 0:
        return block
    if pad < 3:
        pad += 16
    return block + DGI(FILLER_DGI, bytes(pad - 3)).encode()


def personalize_application(
    *,
    instance_aid: bytes,
    dgis_or_tlvs: Sequence[DGI | tlv.TLV],
    encrypt_with: StaticKeys | None = None,
    block_size: int | None = None,
) -> list[PayloadCommand]:
    """INSTALL [for personalization] + STORE DATA blocks holding whole records.

    ``dgis_or_tlvs``: all :class:`gp.commands.DGI` (structure DGI) or all :class:`gp.tlv.TLV`
    (structure BER-TLV).  Records are packed greedily into blocks of at most ``block_size`` bytes,
    never split (receivers parse each block on its own).  ``encrypt_with``: the keys of the SD
    running the session; its static Key-DEK encrypts each block (Amd D §6.2.8, STORE DATA P1
    b7..b6 = 11), DGIs only, padded with a :data:`FILLER_DGI` record to 16 bytes.
    """
    target = AID(instance_aid)
    records = list(dgis_or_tlvs)
    if not records:
        raise CompilerError("nothing to personalise")
    if all(isinstance(r, DGI) for r in records):
        structure = DataStructure.DGI
    elif all(isinstance(r, tlv.TLV) for r in records):
        structure = DataStructure.BER_TLV
        if encrypt_with is not None:
            raise CompilerError("encrypted personalisation is supported for DGIs only")
    else:
        raise CompilerError("records must be all DGIs or all TLVs")
    limit = MAX_ENCRYPTED_STORE_DATA_BLOCK if encrypt_with is not None else MAX_STORE_DATA_BLOCK
    size = limit if block_size is None else block_size
    if not 16 <= size <= limit:
        raise CompilerError(f"STORE DATA block size must be 16..{limit}")
    blocks: list[bytes] = []
    current = b""
    for record in records:
        raw = _encode_record(record)
        if len(raw) > size:
            raise CompilerError(f"a record of {len(raw)} bytes does not fit a {size}-byte block")
        if current and len(current) + len(raw) > size:
            blocks.append(current)
            current = b""
        current += raw
    blocks.append(current)
    if len(blocks) > 256:
        raise CompilerError("STORE DATA sequence longer than 256 blocks")
    encryption = Encryption.ENCRYPTED if encrypt_with is not None else Encryption.NONE
    out = [_cmd(InstallForPersonalization(target).to_apdu(), "INSTALL [for personalization]")]
    for i, block in enumerate(blocks):
        if encrypt_with is not None:
            block = encrypt_dek(encrypt_with.dek, _pad_with_filler(block))
        last = i == len(blocks) - 1
        sd = StoreData(i, block, last=last, structure=structure, encryption=encryption)
        out.append(_cmd(sd.to_apdu(), f"STORE DATA block {i}{' (last)' if last else ''}"))
    return out


def delete_application(*, aid: bytes, related: bool = False) -> list[PayloadCommand]:
    """DELETE an application instance (or a load file; ``related`` also its instances)."""
    target = AID(aid)
    return [
        _cmd(DeleteObject(target, related=related).to_apdu(), "DELETE"),
        _presence(target, "deleted object", _OK_OR_ABSENT),
    ]


def set_status(*, aid: bytes, lock: bool, scope: str = "application") -> list[PayloadCommand]:
    """Lock or unlock an application / SD (``scope="application"``, P1 ``40``) or an SD with its
    applications (``scope="sd_and_apps"``, P1 ``60``); then read its entry back."""
    if scope not in ("application", "sd_and_apps"):
        raise CompilerError(f"scope {scope!r} is not 'application' or 'sd_and_apps'")
    target = AID(aid)
    with_apps = scope == "sd_and_apps"
    cmd = (
        SetStatus.lock(target, with_applications=with_apps)
        if lock
        else SetStatus.unlock(target, with_applications=with_apps)
    )
    return [
        _cmd(cmd.to_apdu(), f"SET STATUS {'lock' if lock else 'unlock'}"),
        _presence(target, "after SET STATUS"),
    ]


def read_status(*, max_next: int = 3) -> list[PayloadCommand]:
    """The card's content as the session's SD may see it, plus CPLC and key information.

    GET STATUS ``80`` (ISD), ``40`` (applications and SDs) and ``10`` (load files and modules),
    each followed by ``max_next`` GET STATUS "next occurrence" (P2 b1) commands.  A precomputed
    script cannot branch on ``6310``, so the continuations are always sent; each accepts
    ``9000`` / ``6310`` (more entries) and ``6A88`` / ``6985`` (nothing to continue — the last
    answer already ended with ``9000``), so the script goes on gracefully.  When the last
    continuation still answers ``6310`` the inventory is marked incomplete and the engine reads
    again with a larger ``max_next``.  Then GET DATA ``9F7F`` (CPLC) and ``00E0`` (key information).
    """
    if not 0 <= max_next <= 16:
        raise CompilerError("max_next must be 0..16")
    out: list[PayloadCommand] = []
    for scope, what in (
        (StatusScope.ISD, "ISD"),
        (StatusScope.APPLICATIONS, "applications and SDs"),
        (StatusScope.LOAD_FILES_AND_MODULES, "load files and modules"),
    ):
        out.append(_cmd(GetStatus(scope).to_apdu(), f"GET STATUS {what}", _STATUS))
        if scope is StatusScope.ISD:
            continue  # one entry at most
        for i in range(max_next):
            nxt = GetStatus(scope, next_occurrence=True).to_apdu()
            out.append(_cmd(nxt, f"GET STATUS {what} (next {i + 1})", _STATUS_NEXT))
    out.append(_cmd(GetData(TAG_CPLC).to_apdu(), "GET DATA CPLC", _OK_OR_ABSENT))
    out.append(_cmd(GetData(TAG_KEY_INFORMATION).to_apdu(), "GET DATA key information", _OK_OR_ABSENT))
    return out
