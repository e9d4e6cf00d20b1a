"""SCP11a/b/c between gp.scp11.HostSession and the software SE's CASD, and the CASD's personalisation."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gp.apdu import CommandAPDU
from gp.card import SoftCard
from gp.card.casd import casd_key_agreement
from gp.commands import ClearKey, GetStatus, KeyType, PutKey, StatusScope
from gp.commands.status import parse_status_response
from gp.commands.store_data import DGI, DataStructure, StoreData, encode_dgis
from gp.gpcert import (
    KEY_USAGE_AGREEMENT,
    KEY_USAGE_SIGNATURE,
    GPCertificate,
    encode_point,
    flat_tlvs,
    split_certificates,
    verify_chain,
)
from gp.scp03 import StaticKeys
from gp.scp11 import KID, HostSession, SCP11Error
from tests.gp.cardkit import ISD, Terminal, new_card

CA_KEY = ec.generate_private_key(ec.SECP256R1())
OCE_KEY = ec.generate_private_key(ec.SECP256R1())
CA_KID, CA_KVN = 0x10, 0x01
FUTURE = dt.date.today() + dt.timedelta(days=365)


def gp_cert(
    subject_key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey,
    issuer: ec.EllipticCurvePrivateKey = CA_KEY,
    *,
    serial: bytes = b"\x01",
    usage: bytes = KEY_USAGE_AGREEMENT,
    expiry: dt.date = FUTURE,
    subject: bytes = b"OCE-1",
) -> bytes:
    public = subject_key.public_key() if isinstance(subject_key, ec.EllipticCurvePrivateKey) else subject_key
    cert = GPCertificate(serial, b"CA-KLOC-1", subject, usage, expiry, public, effective=dt.date(2020, 1, 1))
    return cert.sign(issuer).to_bytes()


def x509_cert(subject_key: ec.EllipticCurvePrivateKey, issuer: ec.EllipticCurvePrivateKey = CA_KEY) -> bytes:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
            x509.NameAttribute(
                NameOID.ORGANIZATION_NAME, "Energy supplier SP-2, provider of the utilities world"
            ),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Off-card entity for SCP11 and key loading"),
            x509.NameAttribute(NameOID.COMMON_NAME, "OCE key agreement certificate, test"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tessera test CA")]))
        .public_key(subject_key.public_key())
        .serial_number(0x1234)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.KeyUsage(False, False, False, False, True, False, False, False, False), critical=True
        )
        .sign(issuer, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.DER)


def store_dgis(t: Terminal, dgis: list[DGI]) -> int:
    """One STORE DATA block per DGI; the status word of the first refusal, else 9000."""
    for i, dgi in enumerate(dgis):
        sw = t.send(StoreData(i, encode_dgis([dgi]), i == len(dgis) - 1, DataStructure.DGI).to_apdu()).sw
        if sw != 0x9000:
            return sw
    return 0x9000


def ca_key_dgi(public: ec.EllipticCurvePublicKey | None = None, kid: int = CA_KID, kvn: int = CA_KVN) -> DGI:
    public = public or CA_KEY.public_key()
    value = bytes.fromhex("8302") + bytes((kid, kvn))
    value += (
        b"\xb0"
        + bytes((65,))
        + encode_point(public)
        + bytes.fromhex("F00100")
        + bytes.fromhex("4209")
        + b"CA-KLOC-1"
    )
    return DGI(0x7F49, value)


@pytest.fixture
def card() -> SoftCard:
    """A card whose CASD was certified by the CA and which trusts the CA's CA-KLOC key."""
    c = new_card()
    t = Terminal(c).open()
    casd_cert = gp_cert(c.casd_public_key(), serial=b"\x77", subject=c.casd_identifier())
    assert store_dgis(t, [DGI(0x7F21, casd_cert), ca_key_dgi()]) == 0x9000
    return c


def handshake(
    card: SoftCard, variant: str, certs: list[bytes] | None = None, **kw: object
) -> tuple[Terminal, HostSession, int]:
    t = Terminal(card)
    t.select(ISD)
    kvn, _ = card.casd_key_reference()
    host = HostSession(
        variant,
        sd_public_key=card.casd_public_key(),
        key_version=kvn,
        key_id=KID[variant],
        oce_private_key=None if variant == "b" else OCE_KEY,
        oce_certificates=[] if variant == "b" else (certs or [gp_cert(OCE_KEY)]),
        oce_key_version=CA_KVN,
        oce_key_id=CA_KID,
        **kw,  # type: ignore[arg-type]
    )
    commands = host.authenticate_commands()
    for command in commands[:-1]:
        sw = t.raw(command).sw
        if sw != 0x9000:
            return t, host, sw
    response = card.transmit(commands[-1])
    sw = int.from_bytes(response[-2:], "big")
    if sw == 0x9000:
        host.complete(response)
        t.session = host
    return t, host, sw


# --- personalisation and the certificate store --------------------------------------------------


def test_the_certificate_store_chains_to_the_ca_and_certifies_the_key_generated_in_the_card(
    card: SoftCard,
) -> None:
    t = Terminal(card)
    t.select(ISD)
    rsp = t.raw(bytes.fromhex("80CABF2106A6048302110100"))
    assert rsp.sw == 0x9000
    [(tag, value, _)] = flat_tlvs(rsp.data)
    assert tag == 0xBF21
    leaf = verify_chain(split_certificates(value), CA_KEY.public_key())
    assert encode_point(leaf.public_key) == encode_point(card.casd_public_key())
    assert leaf.subject_identifier == card.casd_identifier()


def test_the_certificate_store_answers_6a88_for_another_key_reference(card: SoftCard) -> None:
    t = Terminal(card)
    t.select(ISD)
    assert t.raw(bytes.fromhex("80CABF2106A6048302110200")).sw == 0x6A88
    assert t.raw(bytes.fromhex("80CABF2106A6048302200100")).sw == 0x6A88
    assert t.raw(bytes.fromhex("80CABF2103A6018300")).sw == 0x6A80


def test_a_certificate_for_another_key_is_refused_and_changes_nothing(card: SoftCard) -> None:
    t = Terminal(card).open()
    before = card.state_dict()  # after the INITIALIZE UPDATE's sequence counter step
    other = ec.generate_private_key(ec.SECP256R1())
    assert store_dgis(t, [DGI(0x7F21, gp_cert(other))]) == 0x6A80
    assert card.state_dict() == before


def test_casd_data_needs_an_authenticated_session() -> None:
    c = new_card()
    t = Terminal(c)
    t.select(ISD)
    apdu = StoreData(0, encode_dgis([ca_key_dgi()]), True, DataStructure.DGI).to_apdu()
    assert t.raw(apdu).sw == 0x6982


def test_the_casd_private_key_is_never_exported_and_survives_a_reopen(tmp_path) -> None:
    path = str(tmp_path / "card")
    c = new_card(path)
    public = encode_point(c.casd_public_key())
    assert "sk" not in c.state_dict()["casd"]  # type: ignore[operator]
    c.close()
    assert encode_point(SoftCard.open(path).casd_public_key()) == public
    assert public not in open(path, "rb").read()  # sealed at rest


def test_casd_key_agreement_matches_the_peer_side(card: SoftCard) -> None:
    peer = ec.generate_private_key(ec.SECP256R1())
    inside = casd_key_agreement(card._state, peer.public_key())
    assert inside == peer.exchange(ec.ECDH(), card.casd_public_key())


# --- the three variants ----------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["b"])
def test_an_scp11_session_runs_get_status_and_put_key_then_the_new_keys_work(
    card: SoftCard, variant: str
) -> None:
    # SCP11b only: an SCP11a/c session is an OCE's (a provider's), restricted to delivering a key
    # set to an SSD (tests/gp/test_scp11_delivery.py).
    # given an SCP11 session
    t, host, sw = handshake(card, variant)
    assert sw == 0x9000 and host.authenticated
    # when GET STATUS and PUT KEY run in it (key components under S-DEK)
    [isd] = parse_status_response(t.ok(GetStatus(StatusScope.ISD).to_apdu()), StatusScope.ISD)
    assert isd.aid == ISD
    new = StaticKeys(os.urandom(16), os.urandom(16), os.urandom(16))
    put = PutKey(0x31, tuple(ClearKey(KeyType.AES, k) for k in (new.enc, new.mac, new.dek)))
    t.ok(put.to_apdu(dek=host.dek))
    # then an SCP03 session opens with the keys loaded
    Terminal(card).open(new, kvn=0x31)


def test_scp11a_with_an_x509_chain_longer_than_one_apdu(card: SoftCard) -> None:
    cert = x509_cert(OCE_KEY)
    assert len(cert) > 255
    t, host, sw = handshake(card, "a", [cert])
    assert sw == 0x9000
    assert len(host.perform_security_operation_commands()) >= 2


def test_scp11a_through_an_intermediate_key_authority(card: SoftCard) -> None:
    ka = ec.generate_private_key(ec.SECP256R1())
    chain = [gp_cert(ka, usage=KEY_USAGE_SIGNATURE, serial=b"\x10"), gp_cert(OCE_KEY, issuer=ka)]
    assert handshake(card, "a", chain)[2] == 0x9000


@pytest.mark.parametrize("level", [0x34, 0x3C])
def test_both_scp11a_security_levels(card: SoftCard, level: int) -> None:
    t, _host, sw = handshake(card, "a", security_level=level)
    assert sw == 0x9000
    t.ok(GetStatus(StatusScope.ISD).to_apdu())


# --- refusals: right status word, no session, no state change ---------------------------------------


@pytest.mark.parametrize(
    ("certs", "sw"),
    [
        pytest.param(
            lambda: [gp_cert(OCE_KEY, issuer=ec.generate_private_key(ec.SECP256R1()))], 0x6600, id="wrong-ca"
        ),
        pytest.param(lambda: [gp_cert(OCE_KEY, expiry=dt.date(2020, 1, 1))], 0x6600, id="expired"),
        pytest.param(lambda: [gp_cert(OCE_KEY, usage=KEY_USAGE_SIGNATURE)], 0x6A80, id="wrong-key-usage"),
        pytest.param(lambda: [gp_cert(OCE_KEY)[:-3]], 0x6A80, id="truncated"),
    ],
)
def test_a_bad_oce_chain_is_refused_and_mutual_authenticate_then_fails(
    card: SoftCard, certs, sw: int
) -> None:
    before = card.state_dict()
    t, host, got = handshake(card, "a", certs())
    assert got == sw
    # the MUTUAL AUTHENTICATE that follows has no PK.OCE.ECKA to work with
    assert card.transmit(_ma(host))[-2:] == b"\x69\x85"
    assert card.state_dict() == before


def _ma(host: HostSession) -> bytes:
    """MUTUAL AUTHENTICATE alone, as a host that skipped (or lost) PERFORM SECURITY OPERATION sends it."""
    return CommandAPDU(
        0x80, 0x82, host._key_version, host._key_id, host._crt + host._epk_tlv, le=256
    ).encode()


def test_a_revoked_oce_certificate_is_refused_with_6640(card: SoftCard) -> None:
    t = Terminal(card).open()
    assert store_dgis(t, [DGI(0x0093, bytes.fromhex("930142"))]) == 0x9000
    assert handshake(card, "a", [gp_cert(OCE_KEY, serial=b"\x42")])[2] == 0x6640
    assert handshake(card, "a", [gp_cert(OCE_KEY, serial=b"\x43")])[2] == 0x9000


def test_mutual_authenticate_without_perform_security_operation_is_6985(card: SoftCard) -> None:
    t = Terminal(card)
    t.select(ISD)
    host = HostSession(
        "a",
        sd_public_key=card.casd_public_key(),
        key_version=1,
        key_id=0x11,
        oce_private_key=OCE_KEY,
        oce_certificates=[gp_cert(OCE_KEY)],
    )
    host.authenticate_commands()
    assert t.raw(_ma(host)).sw == 0x6985


def test_another_key_reference_is_6a88(card: SoftCard) -> None:
    t = Terminal(card)
    t.select(ISD)
    host = HostSession("b", sd_public_key=card.casd_public_key(), key_version=2, key_id=0x13)
    assert t.raw(host.authenticate_commands()[-1]).sw == 0x6A88
    host = HostSession("b", sd_public_key=card.casd_public_key(), key_version=1, key_id=0x11)
    assert t.raw(host.authenticate_commands()[-1]).sw == 0x6A88


def test_a_session_with_the_wrong_card_key_fails_on_the_receipt(card: SoftCard) -> None:
    t = Terminal(card)
    t.select(ISD)
    impostor = ec.generate_private_key(ec.SECP256R1()).public_key()
    host = HostSession("b", sd_public_key=impostor, key_version=1, key_id=0x13)
    response = card.transmit(host.authenticate_commands()[-1])
    assert response[-2:] == b"\x90\x00"
    with pytest.raises(SCP11Error, match="receipt"):
        host.complete(response)


# --- the card's parsers never crash ------------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ins=st.sampled_from([0x2A, 0x82, 0x88]),
    p1=st.integers(0, 255),
    p2=st.integers(1, 255),
    data=st.binary(max_size=255),
)
def test_random_scp11_commands_get_a_status_word_and_change_nothing(
    card: SoftCard, ins: int, p1: int, p2: int, data: bytes
) -> None:
    before = card.state_dict()
    t = Terminal(card)
    t.select(ISD)
    response = card.transmit(CommandAPDU(0x80, ins, p1, p2, data, le=256 if data else None).encode())
    assert response[-2:] != b"\x6f\x00"
    assert card.state_dict() == before
