"""Who may do what: each rule answers its status word and changes nothing."""

from __future__ import annotations

import hashlib
import os

import pytest
from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import algorithms

from gp.card import SD_LOAD_FILE_AID, SD_MODULE_AID, SoftCard
from gp.commands import (
    CardLifeCycle,
    ClearKey,
    Confirmation,
    DeleteKey,
    DeleteObject,
    GetStatus,
    InstallForInstall,
    InstallForLoad,
    InstallForPersonalization,
    KeyType,
    Load,
    LoadParameters,
    Privileges,
    PutKey,
    SetStatus,
    StatusScope,
    StoreData,
    load_blocks,
    parse_status_response,
)
from gp.scp03 import HostSession, StaticKeys
from tests.gp.cardkit import (
    APP,
    APP_ELF,
    APP_MODULE,
    ISD,
    ISD_KEYS,
    SSD,
    SSD_KEYS,
    Terminal,
    cap_file,
    new_card,
)

AES = KeyType.AES
TOKEN_KEY = b"\x77" * 16
RECEIPT_KEY = b"\x88" * 16


def keyset(keys: StaticKeys, kvn: int, replace: int = 0) -> PutKey:
    return PutKey(
        kvn, tuple(ClearKey(AES, k) for k in (keys.enc, keys.mac, keys.dek)), replace_version=replace
    )


def make_ssd(
    isd: Terminal, privileges: Privileges = Privileges.AUTHORIZED_MANAGEMENT, aid: bytes = SSD
) -> None:
    isd.ok(
        InstallForInstall(
            SD_LOAD_FILE_AID, SD_MODULE_AID, aid, Privileges.SECURITY_DOMAIN | privileges
        ).to_apdu()
    )
    isd.ok(InstallForPersonalization(aid).to_apdu())
    isd.ok(keyset(SSD_KEYS, 0x30).to_apdu(dek=ISD_KEYS.dek))


def load_app(t: Terminal, sd: bytes | None = None) -> None:
    lfdb = cap_file()
    t.ok(InstallForLoad(APP_ELF, sd).to_apdu())
    for b in load_blocks(lfdb):
        t.ok(b.to_apdu())


def refused(card: SoftCard, t: Terminal, apdu, sw: int) -> None:
    before = card.state_dict()
    rsp = t.send(apdu)
    assert rsp.sw == sw, f"expected {sw:04X}, got {rsp.sw:04X}"
    assert card.state_dict() == before


@pytest.fixture
def card() -> SoftCard:
    return new_card()


@pytest.fixture
def isd(card: SoftCard) -> Terminal:
    return Terminal(card).open()


def test_card_content_management_needs_an_authenticated_session(card):
    t = Terminal(card)
    t.select(ISD)
    for apdu in (
        InstallForLoad(APP_ELF).to_apdu(),
        DeleteObject(SSD).to_apdu(),
        GetStatus(StatusScope.ISD).to_apdu(),
        SetStatus.card(CardLifeCycle.INITIALIZED).to_apdu(),
        StoreData(0, b"\x42\x01\x01").to_apdu(),
    ):
        refused(card, t, apdu, 0x6982)


def test_install_refuses_unknown_files_duplicates_and_bad_privileges(card, isd):
    refused(card, isd, InstallForInstall(APP_ELF, APP_MODULE, APP).to_apdu(), 0x6A88)
    load_app(isd)
    refused(card, isd, InstallForInstall(APP_ELF, AID_X, APP).to_apdu(), 0x6A88)
    refused(card, isd, InstallForInstall(APP_ELF, APP_MODULE, ISD).to_apdu(), 0x6985)
    refused(
        card,
        isd,
        InstallForInstall(APP_ELF, APP_MODULE, APP, Privileges.AUTHORIZED_MANAGEMENT).to_apdu(),
        0x6A80,
    )
    refused(
        card, isd, InstallForInstall(APP_ELF, APP_MODULE, APP, Privileges.SECURITY_DOMAIN).to_apdu(), 0x6A80
    )
    refused(card, isd, InstallForLoad(APP_ELF).to_apdu(), 0x6985)
    # missing mandatory C9 install parameters
    apdu = InstallForInstall(APP_ELF, APP_MODULE, APP).to_apdu()
    raw = bytearray(apdu.encode())
    bad = bytes(raw).replace(bytes.fromhex("0002C900"), bytes.fromhex("0000"))
    bad = bad[:4] + bytes([len(bad) - 6]) + bad[5:]
    refused(card, isd, bad, 0x6A80)
    refused(card, isd, bytes.fromhex("80E6010000"), 0x6A86)


AID_X = bytes.fromhex("A0000005599999")


def test_a_security_domain_without_management_privileges_cannot_manage_content(card, isd):
    make_ssd(isd, Privileges.NONE)
    ssd = Terminal(card).open(SSD_KEYS, aid=SSD)
    refused(card, ssd, InstallForLoad(APP_ELF).to_apdu(), 0x6982)
    refused(card, ssd, GetStatus(StatusScope.ISD).to_apdu(), 0x6A88)


def test_only_the_isd_grants_card_wide_privileges(card, isd):
    make_ssd(isd)
    ssd = Terminal(card).open(SSD_KEYS, aid=SSD)
    load_app(ssd)
    refused(
        card, ssd, InstallForInstall(APP_ELF, APP_MODULE, APP, Privileges.GLOBAL_DELETE).to_apdu(), 0x6982
    )
    refused(card, ssd, InstallForInstall(APP_ELF, APP_MODULE, APP, Privileges.CARD_LOCK).to_apdu(), 0x6982)


def test_delete_rules(card, isd):
    refused(card, isd, DeleteObject(ISD).to_apdu(), 0x6985)
    refused(card, isd, DeleteObject(SD_LOAD_FILE_AID).to_apdu(), 0x6985)
    refused(card, isd, DeleteObject(AID_X).to_apdu(), 0x6A88)
    make_ssd(isd)
    ssd = Terminal(card).open(SSD_KEYS, aid=SSD)
    load_app(ssd)
    ssd.ok(InstallForInstall(APP_ELF, APP_MODULE, APP).to_apdu())
    isd = Terminal(card).open()
    refused(card, isd, DeleteObject(APP_ELF).to_apdu(), 0x6985)  # instances exist
    refused(card, isd, DeleteObject(SSD).to_apdu(), 0x6985)  # content associated
    refused(card, isd, DeleteKey(kvn=0x55).to_apdu(), 0x6A88)
    # an application selected on another channel cannot go
    ch1 = Terminal(card, 1)
    assert Terminal(card).raw(bytes.fromhex("0070000001")).data == b"\x01"
    assert ch1.select(APP).sw == 0x9000
    refused(card, isd, DeleteObject(APP).to_apdu(), 0x6985)
    assert ch1.raw(bytes.fromhex("01708001")).sw == 0x9000
    # with "related objects" the SSD goes with everything below it
    isd.ok(DeleteObject(SSD, related=True).to_apdu())
    reg = card.registry
    assert SSD not in reg and APP not in reg and APP_ELF not in reg


def test_another_sd_cannot_touch_what_it_does_not_own(card, isd):
    make_ssd(isd)
    other_sd = bytes.fromhex("A0000005590011")
    make_ssd(isd, aid=other_sd)
    ssd = Terminal(card).open(SSD_KEYS, aid=SSD)
    load_app(ssd)
    ssd.ok(InstallForInstall(APP_ELF, APP_MODULE, APP).to_apdu())
    other = Terminal(card).open(SSD_KEYS, aid=other_sd)
    refused(card, other, DeleteObject(APP).to_apdu(), 0x6982)
    refused(card, other, SetStatus.lock(APP).to_apdu(), 0x6982)
    refused(card, other, InstallForPersonalization(APP).to_apdu(), 0x6982)
    assert (
        parse_status_response(
            other.send(GetStatus(StatusScope.APPLICATIONS).to_apdu()).data, StatusScope.APPLICATIONS
        )
        == []
    )


def test_card_life_cycle_transitions(card, isd):
    refused(card, isd, SetStatus.card(CardLifeCycle.CARD_LOCKED).to_apdu(), 0x6985)  # not SECURED yet
    refused(card, isd, SetStatus.card(CardLifeCycle.OP_READY).to_apdu(), 0x6985)
    refused(card, isd, SetStatus(SetStatus.card(CardLifeCycle.SECURED).scope, 0x33).to_apdu(), 0x6A80)
    isd.ok(SetStatus.card(CardLifeCycle.INITIALIZED).to_apdu())
    isd.ok(SetStatus.card(CardLifeCycle.SECURED).to_apdu())
    refused(card, isd, SetStatus.card(CardLifeCycle.INITIALIZED).to_apdu(), 0x6985)
    make_ssd(isd, Privileges.NONE)
    ssd = Terminal(card).open(SSD_KEYS, aid=SSD)
    refused(card, ssd, SetStatus.card(CardLifeCycle.CARD_LOCKED).to_apdu(), 0x6982)
    refused(card, ssd, SetStatus.card(CardLifeCycle.TERMINATED).to_apdu(), 0x6982)
    isd = Terminal(card).open()
    isd.ok(SetStatus.card(CardLifeCycle.CARD_LOCKED).to_apdu())
    assert card.life_cycle is CardLifeCycle.CARD_LOCKED
    refused(card, isd, InstallForLoad(APP_ELF).to_apdu(), 0x6985)
    t = Terminal(card, 0)
    assert t.select(SSD).sw == 0x6A82
    assert t.select(ISD).sw == 0x6283
    isd = Terminal(card).open()
    isd.ok(SetStatus.card(CardLifeCycle.SECURED).to_apdu())
    isd.ok(SetStatus.card(CardLifeCycle.TERMINATED).to_apdu())
    assert t.select(ISD).sw == 0x6283
    refused(card, t, InstallForLoad(APP_ELF).to_apdu(), 0x6985)
    assert t.raw(bytes.fromhex("80CA9F7F00")).sw == 0x9000  # CPLC still readable


def test_security_domain_lock_takes_its_applications_with_it(card, isd):
    make_ssd(isd)
    ssd = Terminal(card).open(SSD_KEYS, aid=SSD)
    load_app(ssd)
    ssd.ok(InstallForInstall(APP_ELF, APP_MODULE, APP).to_apdu())
    isd = Terminal(card).open()
    refused(card, isd, SetStatus.lock(ISD).to_apdu(), 0x6A80)
    refused(card, isd, SetStatus.lock(APP, with_applications=True).to_apdu(), 0x6A80)
    refused(card, isd, SetStatus.unlock(APP).to_apdu(), 0x6985)
    isd.ok(SetStatus.lock(SSD, with_applications=True).to_apdu())
    entries = parse_status_response(
        isd.ok(GetStatus(StatusScope.APPLICATIONS).to_apdu()), StatusScope.APPLICATIONS
    )
    assert all(e.locked for e in entries) and len(entries) == 2
    refused(card, isd, SetStatus.lock(APP).to_apdu(), 0x6985)
    assert Terminal(card).select(SSD).sw == 0x6A82
    isd = Terminal(card).open()
    isd.ok(SetStatus.unlock(SSD, with_applications=True).to_apdu())
    # an SD moves SELECTABLE -> PERSONALIZED, never back
    isd.ok(SetStatus(SetStatus.lock(SSD).scope, 0x0F, SSD).to_apdu())
    refused(card, isd, SetStatus(SetStatus.lock(SSD).scope, 0x0F, SSD).to_apdu(), 0x6985)


def test_put_key_rules(card, isd):
    refused(card, isd, keyset(SSD_KEYS, 0x30).to_apdu(dek=ISD_KEYS.dek), 0x6A80)  # exists
    refused(card, isd, keyset(SSD_KEYS, 0x40, replace=0x41).to_apdu(dek=ISD_KEYS.dek), 0x6A88)
    apdu = keyset(SSD_KEYS, 0x40).to_apdu(dek=ISD_KEYS.dek).encode()
    corrupted = apdu[:-2] + bytes([apdu[-2] ^ 0xFF]) + apdu[-1:]  # last KCV byte
    refused(card, isd, corrupted, 0x6982)
    refused(card, isd, keyset(SSD_KEYS, 0x40).to_apdu(dek=SSD_KEYS.dek), 0x6982)  # wrong DEK -> KCV fails
    # 24-byte AES keys need the length-prefixed form; the card takes it
    isd.ok(PutKey(0x41, (ClearKey(AES, os.urandom(24)),)).to_apdu(dek=ISD_KEYS.dek))


def test_load_rules(card, isd):
    refused(card, isd, Load(0, True, b"\xc4\x00").to_apdu(), 0x6985)
    lfdb = cap_file()
    isd.ok(InstallForLoad(APP_ELF, None, hashlib.sha256(b"other").digest()).to_apdu())
    blocks = load_blocks(lfdb, block_size=8)
    isd.ok(blocks[0].to_apdu())
    refused(card, isd, blocks[2].to_apdu(), 0x6A86)
    isd.ok(InstallForLoad(APP_ELF, None, hashlib.sha256(b"other").digest()).to_apdu())
    for b in blocks[:-1]:
        isd.ok(b.to_apdu())
    refused(card, isd, blocks[-1].to_apdu(), 0x6A80)  # hash mismatch
    small = new_card(memory_capacity=1000)
    t = Terminal(small).open()
    refused(
        small, t, InstallForLoad(APP_ELF, None, b"", LoadParameters.with_sizes(code=5000)).to_apdu(), 0x6A84
    )
    t.ok(InstallForLoad(APP_ELF).to_apdu())
    big = load_blocks(cap_file(padding=2000))
    for b in big[:-1]:
        rsp = t.send(b.to_apdu())
        if rsp.sw != 0x9000:
            assert rsp.sw == 0x6A84
            break
    else:
        assert t.send(big[-1].to_apdu()).sw == 0x6A84
    assert APP_ELF not in small.registry


def test_store_data_blocks_are_numbered(card, isd):
    isd.ok(
        StoreData(
            0, b"\x42\x03\x11\x22\x33", last=False, structure=StoreData(0, b"").structure.BER_TLV
        ).to_apdu()
    )
    refused(card, isd, StoreData(5, b"\x45\x01\x01").to_apdu(), 0x6A86)
    rsp = isd.send(bytes.fromhex("80CA004200"))
    assert rsp.data == bytes.fromhex("4203112233")


def test_get_status_pages_with_6310(card, isd):
    load_app(isd)
    for i in range(20):
        isd.ok(InstallForInstall(APP_ELF, APP_MODULE, APP + bytes([i])).to_apdu())
    rsp = isd.send(GetStatus(StatusScope.APPLICATIONS).to_apdu())
    assert rsp.sw == 0x6310
    seen = parse_status_response(rsp.data, StatusScope.APPLICATIONS)
    while rsp.sw == 0x6310:
        rsp = isd.send(GetStatus(StatusScope.APPLICATIONS, next_occurrence=True).to_apdu())
        seen += parse_status_response(rsp.data, StatusScope.APPLICATIONS)
    assert rsp.sw == 0x9000 and len(seen) == 20
    legacy = isd.send(GetStatus(StatusScope.ISD, tlv_format=False).to_apdu())
    [e] = parse_status_response(legacy.data, StatusScope.ISD, tlv_format=False)
    assert e.aid == ISD


def test_delegated_management_needs_a_valid_token_and_yields_receipts(card, isd):
    isd.ok(PutKey(0x70, (ClearKey(AES, TOKEN_KEY),)).to_apdu(dek=ISD_KEYS.dek))
    isd.ok(PutKey(0x71, (ClearKey(AES, RECEIPT_KEY),)).to_apdu(dek=ISD_KEYS.dek))
    make_ssd(isd, Privileges.DELEGATED_MANAGEMENT)
    ssd = Terminal(card).open(SSD_KEYS, aid=SSD)
    refused(card, ssd, InstallForLoad(APP_ELF).to_apdu(), 0x6982)
    bad = InstallForLoad(APP_ELF, token=b"\x00" * 16)
    refused(card, ssd, bad.to_apdu(), 0x6982)
    unsigned = InstallForLoad(APP_ELF)
    c = cmac.CMAC(algorithms.AES(TOKEN_KEY))
    c.update(unsigned.token_data())
    signed = InstallForLoad(APP_ELF, token=c.finalize())
    assert ssd.ok(signed.to_apdu()) == b"\x00"
    blocks = load_blocks(cap_file())
    for b in blocks[:-1]:
        ssd.ok(b.to_apdu())
    confirmation = Confirmation.parse_response(ssd.ok(blocks[-1].to_apdu()))
    assert confirmation is not None  # the ISD (Receipt Generation) signs for delegated operations
    check = cmac.CMAC(algorithms.AES(RECEIPT_KEY))
    check.update(confirmation.confirmation_data() + bytes([len(APP_ELF)]) + APP_ELF + bytes([len(SSD)]) + SSD)
    assert check.finalize() == confirmation.receipt
    # the ISD itself gets receipts for its own operations too
    isd = Terminal(card).open()
    c2 = Confirmation.parse_response(isd.ok(InstallForInstall(APP_ELF, APP_MODULE, APP).to_apdu()))
    assert c2 is not None and c2.counter == confirmation.counter + 1


def test_secure_channel_failures(card):
    t = Terminal(card)
    t.select(ISD)
    host = HostSession(ISD_KEYS, security_level=0x01, host_challenge=os.urandom(8), key_version=0x22)
    assert t.plain(host.initialize_update()).sw == 0x6A88
    wrong = HostSession(SSD_KEYS, security_level=0x01, host_challenge=os.urandom(8))
    rsp = t.plain(wrong.initialize_update())
    assert rsp.sw == 0x9000
    # forge an EXTERNAL AUTHENTICATE: wrong host cryptogram
    assert t.plain(bytes.fromhex("8482010010") + bytes(16)).sw == 0x6300
    assert t.plain(bytes.fromhex("8482010010") + bytes(16)).sw == 0x6985  # no handshake pending
    t.open()
    tampered = bytearray(t.session.wrap(GetStatus(StatusScope.ISD).to_apdu().encode()))
    tampered[-2] ^= 1
    assert t.raw(bytes(tampered)).sw == 0x6982
    assert t.raw(bytes.fromhex("84F28002")).sw == 0x6982  # session is gone
    assert t.plain(GetStatus(StatusScope.ISD).to_apdu()).sw == 0x6982


def test_sessions_are_per_logical_channel(card):
    t0 = Terminal(card).open()
    assert Terminal(card).raw(bytes.fromhex("0070000001")).data == b"\x01"
    t1 = Terminal(card, 1).open()
    t0.ok(GetStatus(StatusScope.ISD).to_apdu())
    t1.ok(GetStatus(StatusScope.ISD).to_apdu())
    assert t0.raw(bytes.fromhex("00708001")).sw == 0x9000
    assert t1.raw(bytes.fromhex("01CA9F7F00")).sw == 0x6881
    t0.ok(GetStatus(StatusScope.ISD).to_apdu())
    assert t0.raw(bytes.fromhex("00708000")).sw == 0x6A86
    card.reset()
    assert t0.raw(t0.session.wrap(GetStatus(StatusScope.ISD).to_apdu().encode())).sw == 0x6982


def test_unknown_class_and_instruction(card):
    t = Terminal(card)
    assert t.raw(bytes.fromhex("FFCA000000")).sw == 0x6E00
    assert t.raw(bytes.fromhex("80FE000000")).sw == 0x6D00
    assert t.raw(bytes.fromhex("00E6000000")).sw == 0x6E00
    assert t.raw(bytes.fromhex("80")).sw == 0x6700
    assert t.raw(bytes.fromhex("80CA00")).sw == 0x6700
    assert t.raw(bytes.fromhex("80CA00FF00")).sw == 0x6A88
    assert t.raw(bytes.fromhex("00A4040005A000000000")).sw == 0x6A82
