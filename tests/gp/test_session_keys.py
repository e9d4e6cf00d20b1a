"""Session keys for on-device applications: the KDF's byte layout (gp.sessionkeys) and the soft
card's DERIVE SESSION KEY on a provider's SSD holding a service master key (docs/session-keys.md)."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import algorithms
from hypothesis import given, settings
from hypothesis import strategies as st

from gp.card import SoftCard
from gp.commands import (
    AID,
    ClearKey,
    InstallForInstall,
    InstallForPersonalization,
    InstallParameters,
    KeyType,
    Privileges,
    PutKey,
)
from gp.commands.get_data import CPLC
from gp.errors import EncodeError, ParseError
from gp.sessionkeys import (
    LABEL,
    MASTER_KEY_KVN,
    DeriveSessionKey,
    day_epoch,
    derive_session_key,
    kdf_context,
    parse_response,
)
from tests.gp.cardkit import ISD_KEYS, SSD, SSD_KEYS, Terminal, new_card

SD_ELF, SD_MODULE = AID("A0000001515350"), AID("A000000151535041")
MASTER = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
SE_ID = bytes.fromhex("01020304")

# The worked example of docs/session-keys.md §2 (its numbers are checked here).
VECTORS = [
    # master key, service, epoch, se_id, session key
    (MASTER, "meter.reading", 20419, SE_ID, "EE4906F984EB07BA2515643C4C916B61"),
    (bytes(range(32)), "billing", 0, bytes.fromhex("CAFEBABE"), "03169749E2D2C6D8F962F175E192198A"),
]


def _cmac(key: bytes, data: bytes) -> bytes:
    c = cmac.CMAC(algorithms.AES(key))
    c.update(data)
    return c.finalize()


# --- the KDF ---------------------------------------------------------------------------------------


def test_the_context_is_length_prefixed_service_epoch_and_se_id():
    ctx = kdf_context(service="meter.reading", epoch=20419, se_id=SE_ID)
    assert ctx == b"\x0d" + b"meter.reading" + bytes.fromhex("00004FC3") + b"\x04" + SE_ID


@pytest.mark.parametrize(("master", "service", "epoch", "se_id", "expected"), VECTORS)
def test_the_session_key_is_one_aes_cmac_block_over_the_sp800_108_counter_mode_input(
    master, service, epoch, se_id, expected
):
    # given the SP 800-108r1 counter-mode input, written out byte by byte
    block = (
        (1).to_bytes(4, "big")
        + LABEL
        + b"\x00"
        + kdf_context(service=service, epoch=epoch, se_id=se_id)
        + (128).to_bytes(4, "big")
    )
    # then the library's KBKDF is exactly one CMAC over it, and the documented vector
    key = derive_session_key(master, service=service, epoch=epoch, se_id=se_id)
    assert key == _cmac(master, block)
    assert key.hex().upper() == expected


def test_each_input_changes_the_key():
    base = derive_session_key(MASTER, service="meter", epoch=1, se_id=SE_ID)
    assert derive_session_key(MASTER, service="meter", epoch=2, se_id=SE_ID) != base
    assert derive_session_key(MASTER, service="meters", epoch=1, se_id=SE_ID) != base
    assert derive_session_key(MASTER, service="meter", epoch=1, se_id=b"\x01\x02\x03\x05") != base
    assert derive_session_key(bytes(16), service="meter", epoch=1, se_id=SE_ID) != base


@pytest.mark.parametrize(
    "kwargs",
    [
        {"service": ""},
        {"service": "Meter"},
        {"service": "a" * 33},
        {"service": "-x"},
        {"service": "caf\u00e9"},
        {"epoch": -1},
        {"epoch": 2**32},
        {"epoch": True},
        {"se_id": b""},
        {"se_id": b"\x00" * 17},
    ],
)
def test_bad_inputs_are_refused_with_encode_error(kwargs):
    args = {"service": "meter", "epoch": 1, "se_id": SE_ID} | kwargs
    with pytest.raises(EncodeError):
        derive_session_key(MASTER, **args)


def test_a_master_key_of_a_wrong_length_is_refused():
    with pytest.raises(EncodeError):
        derive_session_key(b"\x00" * 15, service="meter", epoch=1, se_id=SE_ID)


def test_the_day_epoch_counts_utc_days():
    assert day_epoch(dt.date(1970, 1, 2)) == 1
    assert day_epoch(dt.datetime(2025, 11, 27, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-2)))) == 20420


def test_the_command_round_trips():
    cmd = DeriveSessionKey("meter.reading", 20419).to_apdu()
    assert cmd.encode().hex().upper() == "805A000015800D6D657465722E72656164696E6781040000" + "4FC3" + "00"
    assert DeriveSessionKey.parse(cmd.p1, cmd.data) == DeriveSessionKey("meter.reading", 20419)


@given(st.binary(max_size=80), st.integers(0, 0x7F))
@settings(max_examples=300)
def test_the_command_parser_answers_any_bytes_with_a_value_or_parse_error(data, p1):
    try:
        parsed = DeriveSessionKey.parse(p1, data)
    except ParseError:
        return
    assert parsed.data() == data


def test_parse_response_wants_9000_and_sixteen_bytes():
    assert parse_response(bytes(16) + b"\x90\x00") == bytes(16)
    for bad in (b"", b"\x90", b"\x6a\x88", bytes(15) + b"\x90\x00"):
        with pytest.raises(ParseError):
            parse_response(bad)


# --- the soft card ---------------------------------------------------------------------------------


def _se_id(card: SoftCard) -> bytes:
    return CPLC.parse(card._state.cplc).ic_serial_number


@pytest.fixture
def card() -> SoftCard:
    """An SSD with its owner's SCP03 keys (KVN 30) and a service master key at KVN 72."""
    c = new_card()
    isd = Terminal(c).open()
    isd.ok(
        InstallForInstall(
            SD_ELF, SD_MODULE, SSD, Privileges.SECURITY_DOMAIN, InstallParameters(bytes.fromhex("81020370"))
        ).to_apdu()
    )
    isd.ok(InstallForPersonalization(SSD).to_apdu())
    scp03 = tuple(ClearKey(KeyType.AES, k) for k in (SSD_KEYS.enc, SSD_KEYS.mac, SSD_KEYS.dek))
    isd.ok(PutKey(0x30, scp03).to_apdu(dek=ISD_KEYS.dek))
    # the provider, in its own SCP03 session, puts its master key (docs/session-keys.md §4)
    ssd = Terminal(c).open(SSD_KEYS, aid=SSD)
    ssd.ok(PutKey(MASTER_KEY_KVN, (ClearKey(KeyType.AES, MASTER),)).to_apdu(dek=SSD_KEYS.dek))
    return c


def _derive(t: Terminal, service: str = "meter.reading", epoch: int = 20419, kvn: int = 0):
    return t.send(DeriveSessionKey(service, epoch, kvn).to_apdu())


def test_the_ssd_answers_the_derived_key_never_the_master_key(card):
    t = Terminal(card)
    assert t.select(SSD).sw == 0x9000
    rsp = _derive(t)
    assert rsp.sw == 0x9000
    assert rsp.data == derive_session_key(MASTER, service="meter.reading", epoch=20419, se_id=_se_id(card))
    assert MASTER not in rsp.data
    assert _derive(t, epoch=20420).data != rsp.data


def test_inside_the_owners_secure_channel_the_answer_is_the_same_key(card):
    t = Terminal(card).open(SSD_KEYS, aid=SSD)
    rsp = _derive(t)
    assert rsp.sw == 0x9000
    assert rsp.data == derive_session_key(MASTER, service="meter.reading", epoch=20419, se_id=_se_id(card))


def test_on_a_supplementary_channel_too(card):
    basic = Terminal(card)
    assert basic.raw(bytes.fromhex("0070000001")).data == b"\x01"
    t = Terminal(card, channel=1)
    assert t.select(SSD).sw == 0x9000
    assert _derive(t).sw == 0x9000


def test_the_master_key_survives_a_reopen_of_the_persisted_card(tmp_path):
    path = str(tmp_path / "se.card")
    c = new_card(path)
    isd = Terminal(c).open()
    ssd_keys = tuple(ClearKey(KeyType.AES, k) for k in (SSD_KEYS.enc, SSD_KEYS.mac, SSD_KEYS.dek))
    isd.ok(
        InstallForInstall(
            SD_ELF, SD_MODULE, SSD, Privileges.SECURITY_DOMAIN, InstallParameters(bytes.fromhex("81020370"))
        ).to_apdu()
    )
    isd.ok(InstallForPersonalization(SSD).to_apdu())
    isd.ok(PutKey(0x30, ssd_keys).to_apdu(dek=ISD_KEYS.dek))
    Terminal(c).open(SSD_KEYS, aid=SSD).ok(
        PutKey(MASTER_KEY_KVN, (ClearKey(KeyType.AES, MASTER),)).to_apdu(dek=SSD_KEYS.dek)
    )
    se_id = _se_id(c)
    c.close()
    again = SoftCard.open(path)
    t = Terminal(again)
    t.select(SSD)
    assert _derive(t).data == derive_session_key(MASTER, service="meter.reading", epoch=20419, se_id=se_id)


def test_an_sd_without_a_master_key_answers_6a88(card):
    t = Terminal(card)
    t.select(None)  # the ISD: SCP03 keys only
    assert _derive(t).sw == 0x6A88
    t.select(SSD)
    assert _derive(t, kvn=0x40).sw == 0x6A88


def test_an_scp03_key_set_is_never_used_as_a_master_key(card):
    t = Terminal(card)
    t.select(SSD)
    assert _derive(t, kvn=0x30).sw == 0x6985


@pytest.mark.parametrize(
    ("apdu", "sw"),
    [
        ("005A000015800D6D657465722E72656164696E67810400004FC300", 0x6E00),  # interindustry class
        ("805A000115800D6D657465722E72656164696E67810400004FC300", 0x6A86),  # P2
        ("805A800015800D6D657465722E72656164696E67810400004FC300", 0x6A86),  # P1 > 7F
        ("805A000014800D6D657465722E72656164696E678103004FC300", 0x6A80),  # 3-byte epoch
        ("805A00000F810400004FC3800D6D657465722E72", 0x6A80),  # wrong order / truncated
        ("805A00000681040000000100", 0x6A80),  # no service
        ("805A000000", 0x6A80),  # no data
    ],
)
def test_malformed_commands_get_a_status_word(card, apdu, sw):
    t = Terminal(card)
    t.select(SSD)
    assert t.raw(bytes.fromhex(apdu)).sw == sw


@given(st.binary(max_size=60))
@settings(max_examples=200, deadline=None)
def test_any_command_data_gets_a_status_word_never_a_crash(data):
    c = _FUZZ_CARD
    t = Terminal(c)
    t.select(SSD)
    raw = bytes.fromhex("805A0000") + bytes([len(data)]) + data if data else bytes.fromhex("805A0000")
    rsp = t.raw(raw)
    assert rsp.sw in (0x9000, 0x6A80, 0x6700)
    if rsp.sw == 0x9000:
        assert len(rsp.data) == 16


def _fuzz_card() -> SoftCard:
    c = new_card()
    isd = Terminal(c).open()
    isd.ok(
        InstallForInstall(
            SD_ELF, SD_MODULE, SSD, Privileges.SECURITY_DOMAIN, InstallParameters(bytes.fromhex("81020370"))
        ).to_apdu()
    )
    isd.ok(InstallForPersonalization(SSD).to_apdu())
    isd.ok(PutKey(MASTER_KEY_KVN, (ClearKey(KeyType.AES, MASTER),)).to_apdu(dek=ISD_KEYS.dek))
    return c


_FUZZ_CARD = _fuzz_card()


def test_the_worked_example_in_the_docs_is_what_the_code_computes():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "session-keys.md").read_text()
    ctx = kdf_context(service="meter.reading", epoch=20419, se_id=SE_ID)
    assert "0D 6D657465722E72656164696E67 00004FC3 04 01020304" in doc
    assert ctx.hex().upper() == "0D6D657465722E72656164696E6700004FC30401020304"
    assert "0D6D657465722E72656164696E6700004FC30401020304 00000080" in doc
    for _, _, _, _, expected in VECTORS:
        assert expected in doc
    apdu = DeriveSessionKey("meter.reading", 20419).to_apdu().encode().hex().upper()
    assert apdu == "805A000015800D6D657465722E72656164696E67810400004FC300"
    assert "80 5A 00 00 15 80 0D 6D657465722E72656164696E67 81 04 00004FC3 00" in doc
    assert day_epoch(dt.date(2025, 11, 27)) == 20419 and "(2025-11-27)" in doc
