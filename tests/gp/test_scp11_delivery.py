"""SCP11a delivery (docs/key-loading-package.md §8, gp/keydelivery.py): a provider opens SCP11a with
the ISD's CASD itself and sends its SSD's new SCP03 key set under the session's S-DEK. The card
allows exactly INSTALL [for personalization] of an SSD, the key-set STORE DATA and GET STATUS in
such an OCE session; everything else is 6982 and changes nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gp import keydelivery
from gp.card import SoftCard
from gp.commands import (
    AID,
    DGI,
    ClearKey,
    DataStructure,
    DeleteObject,
    GetStatus,
    InstallForPersonalization,
    KeyType,
    PutKey,
    StatusScope,
    StoreData,
)
from gp.commands.status import parse_status_response
from gp.scp03 import StaticKeys, kcv
from tests.gp.cardkit import ISD, ISD_KEYS, Terminal
from tests.gp.test_keyload_card import OTHER_SSD, SSD
from tests.gp.test_keyload_card import card as _keyload_card  # noqa: F401 - the fixture
from tests.gp.test_scp11_card import handshake

card = _keyload_card  # a certified CASD, the CA-KLOC key, two SSDs without keys
KVN = 0x31


def _keys(n: int = 16) -> StaticKeys:
    return StaticKeys(os.urandom(n), os.urandom(n), os.urandom(n))


def _deliver(t: Terminal, dek: bytes, keys: StaticKeys, *, sd: AID = SSD, kvn: int = KVN) -> bytes:
    install, store = keydelivery.delivery_commands(
        sd_aid=bytes(sd), kvn=kvn, keys=(keys.enc, keys.mac, keys.dek), dek=dek
    )
    t.ok(install)
    return t.ok(store)


@pytest.mark.parametrize("level", [0x34, 0x3C])
@pytest.mark.parametrize("length", [16, 24, 32])
def test_a_provider_delivers_its_key_set_over_scp11a_and_then_opens_scp03_with_it(
    card: SoftCard, level: int, length: int
) -> None:
    # given an SCP11a session of the provider with the ISD (OCE chain, ephemeral ECDH, receipt)
    t, host, sw = handshake(card, "a", security_level=level)
    assert sw == 0x9000 and host.receipt is not None
    # when it sends INSTALL [for personalization] + the key-set STORE DATA under S-DEK
    keys = _keys(length)
    answer = _deliver(t, host.dek, keys)
    # then the card answers KVN and the KCVs, R-MAC'd (the terminal unwrapped and verified them)
    assert keydelivery.parse_response(answer) == (KVN, (kcv(keys.enc), kcv(keys.mac), kcv(keys.dek)))
    # and GET STATUS runs in the same session
    [isd] = parse_status_response(t.ok(GetStatus(StatusScope.ISD).to_apdu()), StatusScope.ISD)
    assert isd.aid == ISD
    # and an SCP03 session with the new keys opens on the SSD
    Terminal(card).open(keys, aid=bytes(SSD), kvn=KVN)


def test_scp11c_sessions_are_oce_sessions_too(card: SoftCard) -> None:
    t, host, sw = handshake(card, "c")
    assert sw == 0x9000
    keys = _keys()
    _deliver(t, host.dek, keys)
    Terminal(card).open(keys, aid=bytes(SSD), kvn=KVN)


def test_a_delivery_replaces_the_key_set_of_that_kvn(card: SoftCard) -> None:
    t, host, _ = handshake(card, "a")
    _deliver(t, host.dek, _keys())
    t, host, _ = handshake(card, "a")
    newer = _keys()
    _deliver(t, host.dek, newer)
    Terminal(card).open(newer, aid=bytes(SSD), kvn=KVN)


def _refused(card: SoftCard, command: bytes | object, sw: int = 0x6982) -> None:
    before = card.state_dict()
    t, _host, _ = handshake(card, "a")
    assert t.send(command).sw == sw  # type: ignore[arg-type]
    assert card.state_dict() == before


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(
            lambda: PutKey(0x32, tuple(ClearKey(KeyType.AES, os.urandom(16)) for _ in range(3))).to_apdu(
                dek=os.urandom(16)
            ),
            id="put-key",
        ),
        pytest.param(lambda: DeleteObject(OTHER_SSD).to_apdu(), id="delete"),
        pytest.param(lambda: bytes.fromhex("80F0800F08A00000015153500207"), id="set-status"),
        pytest.param(lambda: bytes.fromhex("80CA006600"), id="get-data"),
        pytest.param(
            lambda: StoreData(
                0, DGI(0x7F49, b"\x83\x02\x10\x02").encode(), True, DataStructure.DGI
            ).to_apdu(),
            id="casd-dgi-to-the-isd",
        ),
        pytest.param(lambda: bytes.fromhex("80E60C0000"), id="install-for-install"),
    ],
)
def test_an_oce_session_refuses_card_management_with_6982_and_changes_nothing(
    card: SoftCard, command
) -> None:
    _refused(card, command())


def test_install_for_personalization_of_the_isd_or_an_application_is_refused(card: SoftCard) -> None:
    t, _host, _ = handshake(card, "a")
    assert t.send(InstallForPersonalization(AID(ISD)).to_apdu()).sw == 0x6A88


def test_a_key_set_that_does_not_unwrap_or_match_its_kcvs_is_6988_and_changes_nothing(card: SoftCard) -> None:
    before = card.state_dict()
    t, host, _ = handshake(card, "a")
    keys = _keys()
    # wrapped under another key than S-DEK
    install, store = keydelivery.delivery_commands(
        sd_aid=bytes(SSD), kvn=KVN, keys=(keys.enc, keys.mac, keys.dek), dek=os.urandom(16)
    )
    t.ok(install)
    assert t.send(store).sw == 0x6988
    # KCVs of other keys
    data = keydelivery.encode_key_set_dgis(kvn=KVN, keys=(keys.enc, keys.mac, keys.dek), dek=host.dek)
    bad = bytearray(data)
    bad[3 + 11] ^= 0x01  # first KCV byte (DGI header 3 + template up to 84 09)
    t.ok(InstallForPersonalization(SSD).to_apdu())
    assert (
        t.send(StoreData(0, bytes(bad), True, DataStructure.DGI, response_expected=True).to_apdu()).sw
        == 0x6988
    )
    assert card.state_dict() == before


def test_a_store_data_without_install_for_personalization_or_in_two_blocks_is_refused(card: SoftCard) -> None:
    before = card.state_dict()
    t, host, _ = handshake(card, "a")
    data = keydelivery.encode_key_set_dgis(kvn=KVN, keys=(os.urandom(16),) * 3, dek=host.dek)
    # to the ISD (no INSTALL [for personalization]): an OCE never personalises the ISD
    assert t.send(StoreData(0, data, True, DataStructure.DGI).to_apdu()).sw == 0x6982
    # in two blocks
    t.ok(InstallForPersonalization(SSD).to_apdu())
    assert t.send(StoreData(0, data[:20], False, DataStructure.DGI).to_apdu()).sw == 0x6A80
    # one INSTALL [for personalization] covers one delivery: a second STORE DATA goes to the ISD
    assert t.send(StoreData(0, data, True, DataStructure.DGI).to_apdu()).sw == 0x6982
    assert card.state_dict() == before


def test_a_recorded_delivery_replayed_into_a_new_session_fails_its_mac(card: SoftCard) -> None:
    # Replay is impossible by construction: each session has fresh ephemeral keys on both sides.
    t, host, _ = handshake(card, "a")
    install, store = keydelivery.delivery_commands(
        sd_aid=bytes(SSD), kvn=KVN, keys=(os.urandom(16),) * 3, dek=host.dek
    )
    wrapped = [host.wrap(install), host.wrap(store)]
    _t2, _host2, _ = handshake(card, "a")
    before = card.state_dict()
    assert card.transmit(wrapped[0])[-2:] == b"\x69\x82"
    assert card.state_dict() == before


def test_an_scp03_session_to_the_isd_is_not_restricted(card: SoftCard) -> None:
    t = Terminal(card).open()
    new = _keys()
    put = PutKey(0x32, tuple(ClearKey(KeyType.AES, k) for k in (new.enc, new.mac, new.dek)))
    t.ok(put.to_apdu(dek=ISD_KEYS.dek))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=200))
def test_any_bytes_as_a_key_set_store_data_get_a_status_word_and_change_nothing(
    card: SoftCard, data: bytes
) -> None:
    before = card.state_dict()
    t, _host, _ = handshake(card, "a")
    t.ok(InstallForPersonalization(SSD).to_apdu())
    rsp = t.send(StoreData(0, data, True, DataStructure.DGI, response_expected=True).to_apdu())
    assert rsp.sw in (0x6A80, 0x6988, 0x6982)
    assert card.state_dict() == before


@given(data=st.binary(max_size=200))
@settings(max_examples=300, deadline=None)
def test_the_template_reader_accepts_exactly_its_form_or_raises_malformed(data: bytes) -> None:
    try:
        control = keydelivery.read_key_set_dgis(data)
    except keydelivery.KeyDeliveryError as e:
        assert e.code == "malformed" and e.sw == 0x6A80
        return
    assert keydelivery.encode_response(control)[0] == control.kvn


def test_the_worked_example_of_the_format_document_is_what_the_code_builds() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "key-loading-package.md").read_text()
    dek = bytes(range(0x20, 0x30))
    keys = (bytes(range(0x40, 0x50)), bytes(range(0x50, 0x60)), bytes(range(0x60, 0x70)))
    install, store = keydelivery.delivery_commands(
        sd_aid=bytes.fromhex("A000000151535001"), kvn=0x30, keys=keys, dek=dek
    )
    section = doc[doc.index("## 8. SCP11a delivery") :]
    flat = "".join(section.split()).upper()
    assert install.hex().upper() in flat
    assert store[:5].hex().upper() + "00B914830130800188810110" in flat
    assert store[5 + 23 : -1].hex().upper() in flat  # DGI 8113 and the wrapped keys
    control = keydelivery.read_key_set_dgis(store[5:-1])
    assert keydelivery.encode_response(control).hex().upper() in flat
