"""The software SE takes a confidential key-loading package over a real SCP03 session to its ISD:
INSTALL [for personalization] of the target SSD, the package in STORE DATA blocks, the receipt
answered on the last block (docs/key-loading-package.md §6, gp/card/sd/store_data.py)."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gp import keyload
from gp.card import SoftCard
from gp.commands import (
    AID,
    DGI,
    DataStructure,
    DeleteObject,
    InstallForInstall,
    InstallForPersonalization,
    InstallParameters,
    Privileges,
    StoreData,
)
from gp.scp03 import StaticKeys
from tests.gp.cardkit import Terminal, new_card
from tests.gp.test_scp11_card import OCE_KEY, ca_key_dgi, gp_cert, store_dgis

SD_ELF, SD_MODULE = AID("A0000001515350"), AID("A000000151535041")
SSD = AID("A000000151535001")
OTHER_SSD = AID("A000000151535002")
KVN = 0x31


def _install_ssd(t: Terminal, aid: AID) -> None:
    install = InstallForInstall(
        SD_ELF, SD_MODULE, aid, Privileges.SECURITY_DOMAIN, InstallParameters(bytes.fromhex("81020370"))
    )
    t.ok(install.to_apdu())


@pytest.fixture
def card() -> SoftCard:
    """A card with a certified CASD, the CA-KLOC key, and two SSDs without keys."""
    c = new_card()
    t = Terminal(c).open()
    casd_cert = gp_cert(c.casd_public_key(), serial=b"\x77", subject=c.casd_identifier())
    assert store_dgis(t, [DGI(0x7F21, casd_cert), ca_key_dgi()]) == 0x9000
    _install_ssd(t, SSD)
    _install_ssd(t, OTHER_SSD)
    return c


def _package(
    card: SoftCard,
    *,
    counter: int = 1,
    sd: bytes = bytes(SSD),
    se_id: bytes | None = None,
    oce_serial: bytes = b"\x05",
) -> tuple[keyload.BuiltPackage, StaticKeys]:
    keys = StaticKeys(os.urandom(16), os.urandom(16), os.urandom(16))
    built = keyload.build_package_with_receipt(
        casd_public_key=card.casd_public_key(),
        se_id=card.casd_identifier() if se_id is None else se_id,
        sd_aid=sd,
        kvn=KVN,
        keys=(keys.enc, keys.mac, keys.dek),
        counter=counter,
        oce_private_key=OCE_KEY,
        oce_certificates=[gp_cert(OCE_KEY, serial=oce_serial)],
    )
    return built, keys


def _deliver(card: SoftCard, package: bytes, *, target: AID = SSD, block: int = 100) -> tuple[int, bytes]:
    """The TSM's side: ISD session, INSTALL [for personalization], STORE DATA blocks."""
    t = Terminal(card).open()
    t.ok(InstallForPersonalization(target).to_apdu())
    chunks = [package[i : i + block] for i in range(0, len(package), block)]
    rsp = None
    for i, chunk in enumerate(chunks):
        last = i == len(chunks) - 1
        rsp = t.send(StoreData(i, chunk, last, DataStructure.NONE, response_expected=last).to_apdu())
        if rsp.sw != 0x9000:
            return rsp.sw, rsp.data
    assert rsp is not None
    return rsp.sw, rsp.data


def test_a_package_installs_the_keys_answers_the_receipt_and_the_provider_opens_a_session(card):
    # given a provider's package for this SE and its SSD
    built, keys = _package(card)
    # when the TSM relays it through the ISD
    sw, data = _deliver(card, built.package)
    # then the card answers the receipt the provider expects
    assert sw == 0x9000
    keyload.verify_receipt(keyload.parse_receipt_response(data), expected_receipt=built.expected_receipt)
    # and the provider opens an SCP03 session to its SSD with its own keys
    Terminal(card).open(keys, aid=bytes(SSD), kvn=KVN)
    assert card.state_dict()["keyload_counters"] == {bytes(SSD).hex().upper(): 1}


def test_a_replayed_package_is_6985_and_changes_nothing(card):
    built, _keys = _package(card, counter=5)
    assert _deliver(card, built.package)[0] == 0x9000
    before = card.state_dict()
    # an older counter, and the very same package again
    older, _ = _package(card, counter=4)
    assert _deliver(card, older.package)[0] == 0x6985
    assert _deliver(card, built.package)[0] == 0x6985
    after = card.state_dict()
    for state in (before, after):  # sequence counters of the ISD move with each session
        for app in state["applications"]:
            for ks in app["keys"]:
                ks.pop("counter")
    assert after == before


def test_a_package_for_another_se_is_6a80_and_changes_nothing(card):
    built, _ = _package(card, se_id=b"ANOTHER-SE")
    before = card.state_dict()
    assert _deliver(card, built.package)[0] == 0x6A80
    assert card.state_dict()["applications"][1:] == before["applications"][1:]
    assert "keyload_counters" not in card.state_dict()


def test_a_package_for_another_sd_than_the_one_installed_for_personalization_is_6a80(card):
    built, _ = _package(card, sd=bytes(OTHER_SSD))
    assert _deliver(card, built.package, target=SSD)[0] == 0x6A80
    # and the same package goes to the SD it names
    assert _deliver(card, built.package, target=OTHER_SSD)[0] == 0x9000


def test_a_revoked_oce_certificate_is_6982(card):
    t = Terminal(card).open()
    assert store_dgis(t, [DGI(0x0093, bytes.fromhex("930105"))]) == 0x9000
    built, _ = _package(card, oce_serial=b"\x05")
    assert _deliver(card, built.package)[0] == 0x6982
    other, _ = _package(card, oce_serial=b"\x06")
    assert _deliver(card, other.package)[0] == 0x9000


def test_a_chain_from_another_ca_is_6982(card):
    rogue = ec.generate_private_key(ec.SECP256R1())
    keys = [os.urandom(16)] * 3
    built = keyload.build_package_with_receipt(
        casd_public_key=card.casd_public_key(),
        se_id=card.casd_identifier(),
        sd_aid=bytes(SSD),
        kvn=KVN,
        keys=keys,
        counter=1,
        oce_private_key=OCE_KEY,
        oce_certificates=[gp_cert(OCE_KEY, issuer=rogue)],
    )
    assert _deliver(card, built.package)[0] == 0x6982


def test_the_counter_outlives_the_sd_so_an_old_package_cannot_reach_a_new_sd_of_that_aid(card):
    built, _ = _package(card, counter=9)
    assert _deliver(card, built.package)[0] == 0x9000
    t = Terminal(card).open()
    t.ok(DeleteObject(SSD).to_apdu())
    _install_ssd(t, SSD)
    assert _deliver(card, built.package)[0] == 0x6985


def test_the_counter_table_survives_a_reopen_of_a_card_file(tmp_path):
    path = str(tmp_path / "card.json")
    c = new_card(path)
    t = Terminal(c).open()
    casd_cert = gp_cert(c.casd_public_key(), serial=b"\x77", subject=c.casd_identifier())
    assert store_dgis(t, [DGI(0x7F21, casd_cert), ca_key_dgi()]) == 0x9000
    _install_ssd(t, SSD)
    built, _ = _package(c, counter=3)
    assert _deliver(c, built.package)[0] == 0x9000
    c.close()
    reopened = SoftCard.open(path)
    assert _deliver(reopened, built.package)[0] == 0x6985


def test_a_package_split_in_small_blocks_and_one_in_a_single_block_both_work(card):
    for n, block in enumerate((17, 223), start=1):
        built, keys = _package(card, counter=n)
        sw, data = _deliver(card, built.package, block=block)
        assert sw == 0x9000, hex(sw)
        keyload.verify_receipt(keyload.parse_receipt_response(data), expected_receipt=built.expected_receipt)
        Terminal(card).open(keys, aid=bytes(SSD), kvn=KVN)


def test_a_tampered_package_is_refused_and_a_broken_sequence_leaves_no_half_package(card):
    built, _ = _package(card)
    tampered = bytearray(built.package)
    tampered[-1] ^= 0x01  # last byte of the signature
    assert _deliver(card, bytes(tampered))[0] == 0x6982
    # a package cut short by another command: the next INSTALL starts afresh
    t = Terminal(card).open()
    t.ok(InstallForPersonalization(SSD).to_apdu())
    t.ok(StoreData(0, built.package[:50], False, DataStructure.NONE).to_apdu())
    t.ok(InstallForPersonalization(SSD).to_apdu())
    assert _deliver(card, built.package)[0] == 0x9000
