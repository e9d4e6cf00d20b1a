"""Builders and parsers of gp.commands: round trips and real-card variants."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gp.apdu import CommandAPDU
from gp.commands import (
    AID,
    CPLC,
    CardLifeCycle,
    ClearKey,
    DataStructure,
    DeleteKey,
    DeleteObject,
    Encryption,
    InstallForExtradition,
    InstallForInstall,
    InstallForLoad,
    InstallForMakeSelectable,
    InstallForPersonalization,
    InstallForRegistryUpdate,
    InstallParameters,
    KeyCheckError,
    KeyType,
    LifeCycle,
    LoadFileLifeCycle,
    Privileges,
    PutKey,
    SetStatus,
    StatusScope,
    StoreData,
    parse_delete,
    parse_install,
    parse_key_information,
    parse_status_response,
)
from gp.errors import ParseError
from gp.scp03 import decrypt_dek, kcv

DEK = bytes(range(16))
A1 = AID("A0000001515350")
A2 = AID("A000000151535041")
A3 = AID("A0000005590010")


def test_privileges_encode_decode_and_reject_rfu_bits():
    p = Privileges.SECURITY_DOMAIN | Privileges.AUTHORIZED_MANAGEMENT | Privileges.RECEIPT_GENERATION
    assert p.encode() == bytes.fromhex("804080")
    assert Privileges.decode(bytes.fromhex("804080")) == p
    assert Privileges.decode(b"\x80") == Privileges.SECURITY_DOMAIN
    with pytest.raises(ParseError):
        Privileges.decode(bytes.fromhex("000001"))
    with pytest.raises(ParseError):
        Privileges.decode(b"\x80\x00")
    assert Privileges.DELEGATED_MANAGEMENT.consistency_error()  # needs the SD bit
    assert (Privileges.SECURITY_DOMAIN | Privileges.DELEGATED_MANAGEMENT).consistency_error() is None


def test_life_cycles_are_typed():
    assert LifeCycle.decode(0x87) == LifeCycle(0x07, locked=True)
    assert LifeCycle(0x0F).coding == 0x0F and not LifeCycle(0x0F).locked
    assert CardLifeCycle(0x7F) is CardLifeCycle.CARD_LOCKED
    with pytest.raises(ParseError):
        LifeCycle.decode(0x01)


@pytest.mark.parametrize("prefixed", [True, False])
def test_put_key_accepts_both_aes_component_encodings(prefixed):
    keys = tuple(ClearKey(KeyType.AES, bytes([i]) * 16) for i in (1, 2, 3))
    apdu = PutKey(0x30, keys, replace_version=0x01).to_apdu(dek=DEK, length_prefixed=prefixed)
    head = bytes.fromhex("88111" + "0") if prefixed else bytes.fromhex("8810")
    assert apdu.data[1 : 1 + len(head)] == head
    assert (apdu.p1, apdu.p2) == (0x01, 0x81)
    parsed = PutKey.from_apdu(CommandAPDU.parse(apdu.encode()), decrypt=lambda d: decrypt_dek(DEK, d))
    assert parsed == PutKey(0x30, keys, replace_version=0x01)
    assert apdu.data.endswith(b"\x03" + kcv(bytes([3]) * 16))


def test_put_key_detects_a_wrong_key_check_value():
    apdu = PutKey(0x30, (ClearKey(KeyType.AES, bytes(16)),)).to_apdu(dek=DEK)
    bad = CommandAPDU(apdu.cla, apdu.ins, apdu.p1, apdu.p2, apdu.data[:-1] + b"\x00")
    with pytest.raises(KeyCheckError):
        PutKey.from_apdu(bad, decrypt=lambda d: decrypt_dek(DEK, d))


@pytest.mark.parametrize(
    "cmd",
    [
        InstallForLoad(A3, A1, b"\x01" * 32),
        InstallForInstall(A1, A2, A3, Privileges.SECURITY_DOMAIN, InstallParameters(b"\x81\x02\x00\x00")),
        InstallForInstall(A1, A2, A3, Privileges.NONE, make_selectable=False),
        InstallForMakeSelectable(A3, Privileges.CARD_RESET),
        InstallForExtradition(A1, A3),
        InstallForRegistryUpdate(A3, None, Privileges.GLOBAL_LOCK),
        InstallForPersonalization(A3),
    ],
)
def test_install_round_trips(cmd):
    parsed, more = parse_install(CommandAPDU.parse(cmd.to_apdu().encode()))
    assert parsed == cmd and not more


def test_install_rejects_unknown_p1_and_truncated_data():
    with pytest.raises(ParseError) as e:
        parse_install(CommandAPDU(0x80, 0xE6, 0x01, 0x00, b"\x00"))
    assert e.value.offset == 2
    with pytest.raises(ParseError):
        parse_install(CommandAPDU(0x80, 0xE6, 0x02, 0x00, b"\x07\xa0\x00"))


def test_delete_object_and_keys():
    obj, more = parse_delete(
        CommandAPDU.parse(DeleteObject(A3, related=True, token=b"\x01" * 16).to_apdu().encode())
    )
    assert obj == DeleteObject(A3, True, b"\x01" * 16) and not more
    key, _ = parse_delete(CommandAPDU.parse(DeleteKey(kid=1, kvn=0x30).to_apdu().encode()))
    assert key == DeleteKey(1, 0x30)


def test_store_data_p1_coding():
    sd = StoreData(
        3, b"\x01\x02\x03", last=True, structure=DataStructure.DGI, encryption=Encryption.ENCRYPTED
    )
    apdu = sd.to_apdu()
    assert (apdu.p1, apdu.p2) == (0x80 | 0x60 | 0x08, 3)
    assert StoreData.from_apdu(apdu) == sd
    with pytest.raises(ParseError):
        StoreData.from_apdu(CommandAPDU(0x80, 0xE2, 0x18, 0x00, b"\x00"))


def test_get_status_tolerates_real_card_variants():
    # two-byte 9F70 (kaoh trace), an extra EA tag, a RID-only CC
    data = bytes.fromhex("E31E4F07A00000015153509F70020F00C5039EFE80EA020000CC05A000000151")
    [e] = parse_status_response(data, StatusScope.APPLICATIONS)
    assert e.life_cycle == LifeCycle(0x0F) and e.associated_sd_aid == bytes.fromhex("A000000151")
    assert e.extra and e.extra[0].tag == 0xEA
    [elf] = parse_status_response(bytes.fromhex("E30D4F07A00000015153509F700101"), StatusScope.LOAD_FILES)
    assert elf.life_cycle is LoadFileLifeCycle.LOADED
    legacy = bytes.fromhex("07A0000001515350010001" + "08A000000151535041")
    [m] = parse_status_response(legacy, StatusScope.LOAD_FILES_AND_MODULES, tlv_format=False)
    assert m.modules == (A2,)


def test_set_status_builders():
    assert SetStatus.lock(A3).to_apdu().encode() == bytes.fromhex("80F0408007") + A3
    assert SetStatus.unlock(A3, with_applications=True).to_apdu().p1 == 0x60
    assert SetStatus.card(CardLifeCycle.SECURED).to_apdu().p2 == 0x0F


def test_key_information_and_cplc():
    [k] = parse_key_information(bytes.fromhex("E006C00401308810"))
    assert (k.kid, k.kvn, k.components) == (1, 0x30, ((KeyType.AES, 16),))
    cplc = CPLC(ic_serial_number=b"\x01\x02\x03\x04")
    assert CPLC.parse(cplc.encode_tlv()) == cplc


@given(st.binary(max_size=80), st.integers(0, 0x7F), st.integers(0, 0xFF))
def test_parsers_only_raise_parse_errors(data, p1, p2):
    apdu = CommandAPDU(0x80, 0xE6, p1, p2, data)
    for parse in (
        lambda: parse_install(apdu),
        lambda: parse_delete(CommandAPDU(0x80, 0xE4, p1, p2, data)),
        lambda: PutKey.from_apdu(
            CommandAPDU(0x80, 0xD8, p1, p2, data), decrypt=lambda d: decrypt_dek(DEK, d)
        ),
        lambda: parse_status_response(data, StatusScope.APPLICATIONS),
        lambda: parse_status_response(data, StatusScope.LOAD_FILES_AND_MODULES, tlv_format=False),
    ):
        try:
            parse()
        except (ParseError, KeyCheckError):
            pass
