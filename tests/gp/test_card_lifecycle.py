"""A whole life story of the soft card, driven through the APDU interface with HostSession."""

from __future__ import annotations

import hashlib
import os

import pytest

from gp.card import SD_LOAD_FILE_AID, SD_MODULE_AID, SoftCard
from gp.card.softcard import COUNTER_RESERVATION
from gp.commands import (
    ClearKey,
    DataStructure,
    DeleteObject,
    GetData,
    GetStatus,
    InstallForInstall,
    InstallForLoad,
    InstallForPersonalization,
    InstallParameters,
    KeyType,
    LifeCycle,
    LoadParameters,
    Privileges,
    PutKey,
    PutKeyResponse,
    SetStatus,
    StatusScope,
    encode_dgis,
    load_blocks,
    parse_key_information,
    parse_status_response,
    store_data_commands,
)
from gp.commands.store_data import DGI
from gp.scp03 import HostSession, SCP03Error, StaticKeys, kcv
from tests.gp.cardkit import (
    APP,
    APP_ELF,
    APP_MODULE,
    ISD,
    ISD_KEYS,
    ISD_KVN,
    SSD,
    SSD_KEYS,
    Terminal,
    cap_file,
    new_card,
)


def status(t: Terminal, scope: StatusScope) -> list:
    rsp = t.send(GetStatus(scope).to_apdu())
    if rsp.sw == 0x6A88:
        return []
    assert rsp.sw == 0x9000, hex(rsp.sw)
    return parse_status_response(rsp.data, scope)


def test_a_security_domain_and_an_application_live_and_die_and_the_issuer_rotates_its_keys(tmp_path):
    path = str(tmp_path / "card.se")
    card = new_card(path)
    isd = Terminal(card).open()

    # given a fresh card: the ISD in OP_READY, the SD load file in ROM
    [isd_entry] = status(isd, StatusScope.ISD)
    assert isd_entry.aid == ISD and int(isd_entry.life_cycle) == 0x01
    assert Privileges.AUTHORIZED_MANAGEMENT in isd_entry.privileges
    [sd_elf] = status(isd, StatusScope.LOAD_FILES_AND_MODULES)
    assert sd_elf.aid == SD_LOAD_FILE_AID and sd_elf.modules == (SD_MODULE_AID,)

    # when the ISD creates an SSD from the SD load file
    rsp = isd.ok(
        InstallForInstall(
            SD_LOAD_FILE_AID,
            SD_MODULE_AID,
            SSD,
            Privileges.SECURITY_DOMAIN | Privileges.AUTHORIZED_MANAGEMENT,
            InstallParameters(b""),
        ).to_apdu()
    )
    assert rsp == b"\x00"
    [ssd_entry] = status(isd, StatusScope.APPLICATIONS)
    assert ssd_entry.aid == SSD and ssd_entry.life_cycle == LifeCycle(0x07)
    assert ssd_entry.associated_sd_aid == ISD

    # and personalises its keys through the ISD (INSTALL [for personalization] + PUT KEY)
    isd.ok(InstallForPersonalization(SSD).to_apdu())
    put = PutKey(
        0x30,
        tuple(ClearKey(KeyType.AES, k) for k in (SSD_KEYS.enc, SSD_KEYS.mac, SSD_KEYS.dek)),
    )
    answer = PutKeyResponse.parse(isd.ok(put.to_apdu(dek=ISD_KEYS.dek)))
    assert answer.key_version == 0x30
    assert answer.kcvs == (kcv(SSD_KEYS.enc), kcv(SSD_KEYS.mac), kcv(SSD_KEYS.dek))
    assert card.registry.key_versions[SSD] == (0x30,)

    # then a session opens with the SSD's own keys
    ssd = Terminal(card).open(SSD_KEYS, aid=SSD)
    info = parse_key_information(ssd.ok(GetData(0xE0).to_apdu()))
    assert [(k.kid, k.kvn) for k in info] == [(1, 0x30), (2, 0x30), (3, 0x30)]
    assert status(ssd, StatusScope.APPLICATIONS) == []  # nothing associated with it yet

    # when the SSD loads an application load file (hash checked) ...
    lfdb = cap_file(padding=600)
    ssd.ok(
        InstallForLoad(
            APP_ELF, SSD, hashlib.sha256(lfdb).digest(), LoadParameters.with_sizes(code=len(lfdb))
        ).to_apdu()
    )
    blocks = load_blocks(lfdb, block_size=200)
    assert len(blocks) > 2
    for block in blocks:
        ssd.ok(block.to_apdu())
    [elf] = status(ssd, StatusScope.LOAD_FILES_AND_MODULES)
    assert elf.aid == APP_ELF and elf.modules == (APP_MODULE,) and elf.associated_sd_aid == SSD

    # ... installs an instance and personalises it with STORE DATA
    ssd.ok(
        InstallForInstall(APP_ELF, APP_MODULE, APP, Privileges.NONE, InstallParameters(b"\x01\x02")).to_apdu()
    )
    [app] = status(ssd, StatusScope.APPLICATIONS)
    assert app.aid == APP and app.life_cycle == LifeCycle(0x07) and app.load_file_aid == APP_ELF
    ssd.ok(InstallForPersonalization(APP).to_apdu())
    perso = encode_dgis([DGI(0x0101, os.urandom(150)), DGI(0x0202, b"hello"), DGI(0x0303, os.urandom(120))])
    commands = store_data_commands(perso, structure=DataStructure.DGI, block_size=160)
    assert len(commands) == 2
    # blocks must hold whole DGIs for this card: split on a DGI boundary instead
    first = encode_dgis([DGI(0x0101, perso[3:153])])
    rest = perso[len(first) :]
    from gp.commands import StoreData

    ssd.ok(StoreData(0, first, last=False, structure=DataStructure.DGI).to_apdu())
    ssd.ok(StoreData(1, rest, last=True, structure=DataStructure.DGI).to_apdu())
    assert b"".join(d for _, d in card.registry.personalization[APP]) == perso

    # when the SSD locks the application it is not selectable, and after unlocking it is again
    ssd.ok(SetStatus.lock(APP).to_apdu())
    [app] = status(ssd, StatusScope.APPLICATIONS)
    assert app.locked and app.life_cycle_coding == 0x87
    other = Terminal(card, channel=0)
    assert Terminal(card, channel=0).card is card
    ch1 = Terminal(card, channel=1)
    assert other.raw(bytes.fromhex("0070000001")).data == b"\x01"
    assert ch1.select(APP).sw == 0x6A82
    ssd.ok(SetStatus.unlock(APP).to_apdu())
    [app] = status(ssd, StatusScope.APPLICATIONS)
    assert not app.locked and app.life_cycle_coding == 0x07
    assert ch1.select(APP).sw == 0x9000
    assert ch1.plain(bytes.fromhex("80CA006600")).sw == 0x6D00  # applications have no VM
    assert other.raw(bytes.fromhex("00708001")).sw == 0x9000

    # when the SSD deletes the application (and then its load file)
    ssd.ok(DeleteObject(APP).to_apdu())
    assert status(ssd, StatusScope.APPLICATIONS) == []
    ssd.ok(DeleteObject(APP_ELF).to_apdu())
    assert status(ssd, StatusScope.LOAD_FILES) == []

    # when the issuer rotates its own keys (PUT KEY replacing KVN 30 by KVN 31)
    new_keys = StaticKeys(os.urandom(16), os.urandom(16), os.urandom(16))
    isd = Terminal(card).open()
    rotate = PutKey(
        0x31,
        tuple(ClearKey(KeyType.AES, k) for k in (new_keys.enc, new_keys.mac, new_keys.dek)),
        replace_version=ISD_KVN,
    )
    assert isd.ok(rotate.to_apdu(dek=ISD_KEYS.dek, length_prefixed=False))[0] == 0x31
    assert card.registry.key_versions[ISD] == (0x31,)

    # then the old keys no longer open a session, by version or by default key set
    t = Terminal(card)
    t.select(ISD)
    old = HostSession(ISD_KEYS, security_level=0x01, host_challenge=os.urandom(8), key_version=ISD_KVN)
    assert t.plain(old.initialize_update()).sw == 0x6A88
    old = HostSession(ISD_KEYS, security_level=0x01, host_challenge=os.urandom(8))
    rsp = t.plain(old.initialize_update())
    assert rsp.sw == 0x9000
    with pytest.raises(SCP03Error):
        old.external_authenticate(rsp.data)
    Terminal(card).open(new_keys)

    # and everything survived on disk: after a crash the counters resume at their reservations,
    # after a clean close at the exact values
    crashed = SoftCard.open(path)
    assert crashed.sequence_counter(ISD, 0x31) > card.sequence_counter(ISD, 0x31)
    assert card.close()
    reopened = SoftCard.open(path)
    assert reopened.state_dict() == card.state_dict()


def test_the_sequence_counter_is_reported_then_incremented(tmp_path):
    card = new_card(str(tmp_path / "c"), sequence_counter=41)
    t = Terminal(card)
    t.select(ISD)
    host = HostSession(ISD_KEYS, security_level=0x01, host_challenge=os.urandom(8))
    rsp = t.plain(host.initialize_update())
    assert int.from_bytes(rsp.data[-3:], "big") == 41
    assert card.sequence_counter(ISD, ISD_KVN) == 42
    # on disk before the card answered: a reservation above 41 (a crash now resumes there) ...
    assert SoftCard.open(str(tmp_path / "c")).sequence_counter(ISD, ISD_KVN) == 41 + COUNTER_RESERVATION
    assert t.plain(host.external_authenticate(rsp.data)).sw == 0x9000
    t.session = host
    assert t.send(bytes.fromhex("80CA00C100")).data == bytes.fromhex("C103") + (42).to_bytes(3, "big")
    # a plain command inside a C-MAC session is a security error that ends the session
    assert t.plain(bytes.fromhex("80CA00C100")).sw == 0x6982
    # ... and a clean close writes the exact counter
    assert card.close()
    assert SoftCard.open(str(tmp_path / "c")).sequence_counter(ISD, ISD_KVN) == 42
