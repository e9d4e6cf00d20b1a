"""gp.gpcert: GP 7F21 certificates and chain verification over X.509 and GP formats."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from gp.gpcert import (
    KEY_USAGE_AGREEMENT,
    KEY_USAGE_SIGNATURE,
    CertificateError,
    GPCertificate,
    parse_certificate,
    verify_chain,
)

ROOT = ec.generate_private_key(ec.SECP256R1())
LEAF = ec.generate_private_key(ec.SECP256R1())
TODAY = dt.date(2026, 6, 1)


def gp(
    key,
    issuer=ROOT,
    *,
    usage=KEY_USAGE_AGREEMENT,
    expiry=dt.date(2030, 12, 31),
    effective=None,
    serial=b"\x01",
):
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return GPCertificate(serial, b"CA", b"SUBJECT", usage, expiry, public, effective=effective).sign(issuer)


def test_a_signed_certificate_round_trips_and_verifies() -> None:
    cert = gp(LEAF, effective=dt.date(2025, 1, 2))
    raw = cert.to_bytes()
    again = GPCertificate.from_bytes(raw)
    assert again.to_bytes() == raw
    assert again.effective == dt.date(2025, 1, 2) and again.expiry == dt.date(2030, 12, 31)
    assert raw.hex().upper().find("5F24042030123") > 0  # BCD date (Amd F Table 6-1)
    again.verify(ROOT.public_key())


def test_a_certificate_signed_by_another_key_does_not_verify() -> None:
    with pytest.raises(CertificateError) as e:
        gp(LEAF, issuer=ec.generate_private_key(ec.SECP256R1())).verify(ROOT.public_key())
    assert e.value.code == "bad_signature"


def test_a_changed_byte_in_the_signed_data_breaks_the_signature() -> None:
    raw = bytearray(gp(LEAF).to_bytes())
    raw[9] ^= 0x01  # inside the CA identifier value
    with pytest.raises(CertificateError) as e:
        verify_chain([bytes(raw)], ROOT.public_key(), at=TODAY)
    assert e.value.code == "bad_signature"


def test_a_raw_r_s_signature_is_accepted_too() -> None:
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    cert = gp(LEAF)
    r, s = decode_dss_signature(cert.signature)
    raw_sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    from dataclasses import replace

    replace(cert, signature=raw_sig).verify(ROOT.public_key())


def test_a_chain_with_an_intermediate_verifies_leaf_last() -> None:
    ka = ec.generate_private_key(ec.SECP384R1())
    chain = [gp(ka, usage=KEY_USAGE_SIGNATURE).to_bytes(), gp(LEAF, issuer=ka).to_bytes()]
    leaf = verify_chain(chain, ROOT.public_key(), at=TODAY)
    assert leaf.key_agreement and leaf.public_key.public_numbers() == LEAF.public_key().public_numbers()
    with pytest.raises(CertificateError) as e:
        verify_chain(chain[::-1], ROOT.public_key(), at=TODAY)
    assert e.value.code == "bad_signature"


@pytest.mark.parametrize(
    ("chain", "at", "code"),
    [
        (lambda: [gp(LEAF, expiry=dt.date(2026, 5, 31)).to_bytes()], TODAY, "expired"),
        (lambda: [gp(LEAF, effective=dt.date(2026, 6, 2)).to_bytes()], TODAY, "not_yet_valid"),
        (lambda: [gp(LEAF, usage=KEY_USAGE_SIGNATURE).to_bytes()], TODAY, "key_usage"),
        (lambda: [gp(LEAF).to_bytes(), gp(LEAF, issuer=LEAF).to_bytes()], TODAY, "key_usage"),
        (lambda: [], TODAY, "empty_chain"),
        (lambda: [b"\x01\x02"], TODAY, "malformed"),
    ],
)
def test_chain_refusals_carry_stable_codes(chain, at, code) -> None:
    with pytest.raises(CertificateError) as e:
        verify_chain(chain(), ROOT.public_key(), at=at)
    assert e.value.code == code


def test_the_expiry_day_itself_is_still_valid() -> None:
    verify_chain([gp(LEAF, expiry=TODAY).to_bytes()], ROOT.public_key(), at=TODAY)


def test_a_revoked_serial_is_refused() -> None:
    with pytest.raises(CertificateError) as e:
        verify_chain(
            [gp(LEAF, serial=b"\x99").to_bytes()], ROOT.public_key(), at=TODAY, revoked_serials={b"\x99"}
        )
    assert e.value.code == "revoked"


def _x509(key, issuer, *, ca: bool) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CA" if ca else "OCE")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "root")]))
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
        .add_extension(
            x509.KeyUsage(False, False, False, False, not ca, ca, False, False, False), critical=True
        )
    )
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    return builder.sign(issuer, hashes.SHA256()).public_bytes(Encoding.DER)


def test_x509_chains_verify_and_formats_cannot_be_mixed() -> None:
    ka = ec.generate_private_key(ec.SECP256R1())
    chain = [_x509(ka, ROOT, ca=True), _x509(LEAF, ka, ca=False)]
    assert verify_chain(chain, ROOT.public_key(), at=TODAY).format == "x509"
    with pytest.raises(CertificateError) as e:
        verify_chain([chain[0], gp(LEAF, issuer=ka).to_bytes()], ROOT.public_key(), at=TODAY)
    assert e.value.code == "mixed_formats"


def test_an_unsigned_certificate_cannot_be_encoded() -> None:
    with pytest.raises(CertificateError):
        GPCertificate(b"\x01", b"CA", b"S", KEY_USAGE_AGREEMENT, TODAY, LEAF.public_key()).to_bytes()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_the_7f21_parser_answers_garbage_with_certificate_error(data: bytes) -> None:
    try:
        GPCertificate.from_bytes(b"\x7f\x21" + bytes((len(data),)) + data if len(data) < 128 else data)
    except CertificateError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 255), st.integers(0, 255))
def test_flipping_any_byte_of_a_certificate_is_caught(pos_seed: int, xor: int) -> None:
    raw = bytearray(gp(LEAF).to_bytes())
    pos = pos_seed % len(raw)
    raw[pos] ^= xor or 1
    try:
        verify_chain([bytes(raw)], ROOT.public_key(), at=TODAY)
    except CertificateError:
        return
    # The only undetectable changes are none: a verified chain must be the original certificate.
    assert bytes(raw) == gp(LEAF).to_bytes()  # pragma: no cover - would be a failure


def test_parse_certificate_reads_both_formats() -> None:
    assert parse_certificate(gp(LEAF).to_bytes()).format == "gp"
    assert parse_certificate(_x509(LEAF, ROOT, ca=False)).format == "x509"
