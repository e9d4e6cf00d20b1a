"""gp.keyload and gp.card.sd.keyload: the confidential key-loading package, both sides, the card's
status words, and the worked example of docs/key-loading-package.md checked against the code."""

from __future__ import annotations

import datetime as dt
import importlib.util
import re
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gp import keyload as kl
from gp.card.sd.common import CardError
from gp.card.sd.keyload import KeyPackageResult, handle_key_package, install_key_set, is_key_package
from gp.card.state import MAX_KEY_SETS, Application, Key, KeySet
from gp.commands.types import AID, KeyType, LifeCycle, Privileges
from gp.errors import UsageError
from gp.gpcert import KEY_USAGE_AGREEMENT, GPCertificate
from gp.scp03 import kcv

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "key-loading-package.md"

SE_ID = bytes.fromhex("5345000000000042")
SD_AID = bytes.fromhex("A0000005590010")
KEYS_128 = (b"\x11" * 16, b"\x22" * 16, b"\x33" * 16)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def x509_cert(
    subject: str,
    public_key: ec.EllipticCurvePublicKey,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    not_after: dt.datetime = dt.datetime(2049, 12, 31, tzinfo=dt.UTC),
    key_agreement: bool = True,
) -> bytes:
    usage = x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=key_agreement and not ca,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .sign(issuer_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


class World:
    """A CA-KLOC, a provider (OCE) certified by it, and one SE with its CASD key pair."""

    def __init__(self) -> None:
        self.ca = _key()
        self.oce = _key()
        self.casd = _key()
        self.chain = [x509_cert("SP-2 OCE", self.oce.public_key(), "CA-KLOC", self.ca, ca=False)]

    def build(self, **overrides: object) -> kl.BuiltPackage:
        args: dict[str, object] = {
            "casd_public_key": self.casd.public_key(),
            "se_id": SE_ID,
            "sd_aid": SD_AID,
            "kvn": 0x30,
            "keys": KEYS_128,
            "counter": 7,
            "oce_private_key": self.oce,
            "oce_certificates": self.chain,
        }
        args.update(overrides)
        return kl.build_package_with_receipt(**args)  # type: ignore[arg-type]

    def open(self, package: bytes | kl.KeyLoadPackage, **overrides: object) -> kl.OpenedPackage:
        parsed = kl.parse_package(package) if isinstance(package, bytes) else package
        args: dict[str, object] = {
            "ecdh": kl.ecdh_with(self.casd),
            "se_id": SE_ID,
            "sd_aid": SD_AID,
            "last_counter": 6,
            "ca_public_key": self.ca.public_key(),
        }
        args.update(overrides)
        return kl.open_package(parsed, **args)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def world() -> World:
    return World()


@pytest.fixture(scope="module")
def built(world: World) -> kl.BuiltPackage:
    return world.build()


def refused(code: str, fn, *args, **kwargs) -> kl.KeyLoadError:  # type: ignore[no-untyped-def]
    with pytest.raises(kl.KeyLoadError) as info:
        fn(*args, **kwargs)
    assert info.value.code == code, info.value
    return info.value


def resign(world: World, raw: bytes, key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
    """``raw`` with its signature recomputed: what a holder of an OCE key could produce."""
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    der = (key or world.oce).sign(kl.signature_input(raw), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return raw[:-64] + r.to_bytes(32, "big") + s.to_bytes(32, "big")


_KEY_SET_TAGS = (kl.TAG_KVN, kl.TAG_KEY_LENGTH, kl.TAG_KCVS)  # 80 is both version and key type


def region(raw: bytes, tag: int, *, in_key_set: bool | None = None) -> tuple[int, int]:
    """(start, end) of the value of the data object ``tag`` of the template (or of its key set)."""
    if in_key_set is None:
        in_key_set = tag in _KEY_SET_TAGS
    (outer,) = kl._flat(raw, "t")
    body_start = len(raw) - len(outer.value)
    pos = body_start
    for obj in kl._flat(outer.value, "t"):
        if obj.tag == tag and not in_key_set:
            vstart = pos + len(obj.raw) - len(obj.value)
            return vstart, pos + len(obj.raw)
        if obj.tag == kl.TAG_KEY_SET:
            inner = pos + len(obj.raw) - len(obj.value)
            for sub in kl._flat(obj.value, "t"):
                if sub.tag == tag:
                    vstart = inner + len(sub.raw) - len(sub.value)
                    return vstart, inner + len(sub.raw)
                inner += len(sub.raw)
        pos += len(obj.raw)
    raise AssertionError(f"no tag {tag:X}")


def flip(raw: bytes, i: int, mask: int = 0x01) -> bytes:
    return raw[:i] + bytes([raw[i] ^ mask]) + raw[i + 1 :]


# --- round trip -------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [16, 24, 32])
def test_a_package_opens_on_its_se_and_the_receipt_verifies_for_each_aes_length(
    world: World, length: int
) -> None:
    keys = (b"\xa1" * length, b"\xb2" * length, b"\xc3" * length)
    b = world.build(keys=keys, kvn=0x31, counter=100)
    opened = world.open(b.package, last_counter=99)
    assert opened.keys == keys and opened.kvn == 0x31 and opened.counter == 100
    assert opened.kcvs == tuple(kcv(k) for k in keys) == b.kcvs
    kl.verify_receipt(opened.receipt, expected_receipt=b.expected_receipt)
    assert kl.parse_receipt_response(kl.encode_receipt_response(opened.receipt)) == opened.receipt


def test_parse_gives_back_every_field(world: World, built: kl.BuiltPackage) -> None:
    p = kl.parse_package(built.package)
    assert (p.version, p.se_id, p.sd_aid, p.counter, p.kvn, p.key_length) == (1, SE_ID, SD_AID, 7, 0x30, 16)
    assert p.kcvs == tuple(kcv(k) for k in KEYS_128)
    assert p.certificates == tuple(world.chain)
    assert len(p.wrapped_keys) == 56 and len(p.signature) == 64 and p.raw == built.package
    assert p.signed_data == kl.signature_input(built.package)


def test_a_chain_through_an_intermediate_key_authority_is_accepted(world: World) -> None:
    ka = _key()
    chain = [
        x509_cert("KA-KLOC", ka.public_key(), "CA-KLOC", world.ca, ca=True),
        x509_cert("SP-2 OCE", world.oce.public_key(), "KA-KLOC", ka, ca=False),
    ]
    b = world.build(oce_certificates=chain)
    assert world.open(b.package).keys == KEYS_128


def test_gp_7f21_certificates_work_as_well_as_x509(world: World) -> None:
    cert = GPCertificate(
        serial=b"\x05",
        ca_identifier=b"CA-KLOC",
        subject_identifier=b"SP-2",
        key_usage=KEY_USAGE_AGREEMENT,
        expiry=dt.date(2049, 12, 31),
        public_key=world.oce.public_key(),
    ).sign(world.ca)
    b = world.build(oce_certificates=[cert.to_bytes()])
    assert world.open(b.package).keys == KEYS_128


def test_a_fixed_ephemeral_key_makes_the_package_reproducible_and_a_fresh_one_does_not(world: World) -> None:
    eph = _key()
    assert world.build(ephemeral_private_key=eph).package == world.build(ephemeral_private_key=eph).package
    assert world.build().package != world.build().package


def test_secrets_stay_out_of_reprs_and_messages(world: World, built: kl.BuiltPackage) -> None:
    opened = world.open(built.package)
    text = repr(opened) + repr(kl.parse_package(built.package))
    for key in KEYS_128:
        assert key.hex() not in text and key.hex().upper() not in text
    result = KeyPackageResult(opened.keys, opened.kvn, opened.counter, opened.receipt)
    assert KEYS_128[0].hex() not in repr(result)


# --- refusals: nothing returned, the right code and status word -------------------------------


def test_a_package_for_another_se_is_refused_with_6a80(world: World, built: kl.BuiltPackage) -> None:
    e = refused(kl.WRONG_SE, world.open, built.package, se_id=bytes.fromhex("5345000000000043"))
    assert e.sw == 0x6A80


def test_a_package_for_another_sd_is_refused_with_6a80(world: World, built: kl.BuiltPackage) -> None:
    e = refused(kl.WRONG_SD, world.open, built.package, sd_aid=bytes.fromhex("A0000005590011"))
    assert e.sw == 0x6A80


@pytest.mark.parametrize("last", [7, 8, 2**64 - 1])
def test_a_replayed_or_older_counter_is_refused_with_6985(
    world: World, built: kl.BuiltPackage, last: int
) -> None:
    assert refused(kl.REPLAYED, world.open, built.package, last_counter=last).sw == 0x6985


def test_another_se_cannot_open_it_even_if_told_it_is_the_target(
    world: World, built: kl.BuiltPackage
) -> None:
    other = _key()
    assert refused(kl.UNWRAP_FAILED, world.open, built.package, ecdh=kl.ecdh_with(other)).sw == 0x6988


def test_a_chain_signed_by_another_ca_is_refused_with_6982(world: World) -> None:
    rogue_ca = _key()
    chain = [x509_cert("SP-2 OCE", world.oce.public_key(), "CA-KLOC", rogue_ca, ca=False)]
    b = world.build(oce_certificates=chain)
    assert refused(kl.BAD_CHAIN, world.open, b.package).sw == 0x6982


def test_an_expired_or_non_agreement_oce_certificate_is_refused(world: World) -> None:
    expired = x509_cert(
        "SP-2 OCE",
        world.oce.public_key(),
        "CA-KLOC",
        world.ca,
        ca=False,
        not_after=dt.datetime(2024, 6, 1, tzinfo=dt.UTC),
    )
    refused(kl.BAD_CHAIN, world.open, world.build(oce_certificates=[expired]).package)
    signing_only = x509_cert(
        "SP-2 OCE", world.oce.public_key(), "CA-KLOC", world.ca, ca=False, key_agreement=False
    )
    refused(kl.BAD_CHAIN, world.open, world.build(oce_certificates=[signing_only]).package)


def test_an_injected_chain_verifier_decides_and_its_failure_refuses(
    world: World, built: kl.BuiltPackage
) -> None:
    def boom(certs: object, root: object) -> object:
        raise RuntimeError("verifier down")

    assert refused(kl.BAD_CHAIN, world.open, built.package, verify_chain=boom).sw == 0x6982
    assert refused(kl.BAD_CHAIN, world.open, built.package, verify_chain=lambda c, r: None).sw == 0x6982
    trusting = world.open(built.package, verify_chain=lambda c, r: world.oce.public_key())
    assert trusting.keys == KEYS_128


def test_a_package_signed_by_a_key_the_certificate_does_not_certify_is_refused(
    world: World, built: kl.BuiltPackage
) -> None:
    forged = resign(world, built.package, key=_key())
    assert refused(kl.BAD_SIGNATURE, world.open, forged).sw == 0x6982


@pytest.mark.parametrize("signature", [bytes(64), b"\xff" * 64])
def test_a_garbage_signature_is_refused(world: World, built: kl.BuiltPackage, signature: bytes) -> None:
    refused(kl.BAD_SIGNATURE, world.open, built.package[:-64] + signature)


@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
@pytest.mark.parametrize(
    ("tag", "in_key_set", "codes"),
    [
        (kl.TAG_VERSION, False, {kl.UNSUPPORTED_VERSION}),
        (kl.TAG_SE_ID, False, {kl.WRONG_SE}),
        (kl.TAG_SD_AID, False, {kl.WRONG_SD}),
        (kl.TAG_COUNTER, False, {kl.BAD_SIGNATURE}),
        (kl.TAG_KVN, True, {kl.BAD_SIGNATURE, kl.MALFORMED}),
        (kl.TAG_KEY_TYPE, True, {kl.MALFORMED}),
        (kl.TAG_KEY_LENGTH, True, {kl.MALFORMED}),
        (kl.TAG_KCVS, True, {kl.BAD_SIGNATURE}),
        (kl.TAG_EPHEMERAL_KEY, False, {kl.MALFORMED, kl.BAD_SIGNATURE}),
        (kl.TAG_WRAPPED_KEYS, False, {kl.BAD_SIGNATURE}),
        (kl.TAG_CERTIFICATES, False, {kl.BAD_CHAIN, kl.MALFORMED, kl.BAD_SIGNATURE}),
        (kl.TAG_SIGNATURE, False, {kl.BAD_SIGNATURE}),
    ],
)
def test_every_byte_of_every_region_flipped_is_refused_with_its_code(
    world: World, built: kl.BuiltPackage, tag: int, in_key_set: bool, codes: set[str]
) -> None:
    start, end = region(built.package, tag, in_key_set=in_key_set)
    for i in range(start, end):
        for mask in (0x01, 0x80):
            with pytest.raises(kl.KeyLoadError) as info:
                world.open(flip(built.package, i, mask))
            assert info.value.code in codes, (hex(tag), i, info.value)


@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
def test_every_single_byte_change_anywhere_is_refused(world: World, built: kl.BuiltPackage) -> None:
    for i in range(len(built.package)):
        with pytest.raises(kl.KeyLoadError):
            world.open(flip(built.package, i, 0x10))


def test_a_validly_signed_but_tampered_ciphertext_fails_the_unwrap_with_6988(
    world: World, built: kl.BuiltPackage
) -> None:
    start, end = region(built.package, kl.TAG_WRAPPED_KEYS)
    for i in range(start, end, 7):
        tampered = resign(world, flip(built.package, i))
        assert refused(kl.UNWRAP_FAILED, world.open, tampered).sw == 0x6988


def test_a_validly_signed_package_with_wrong_kcvs_is_refused_with_6988(
    world: World, built: kl.BuiltPackage
) -> None:
    start, _ = region(built.package, kl.TAG_KCVS)
    tampered = resign(world, flip(built.package, start + 4))
    assert refused(kl.KCV_MISMATCH, world.open, tampered).sw == 0x6988


def test_a_validly_signed_package_with_another_ephemeral_key_does_not_unwrap(
    world: World, built: kl.BuiltPackage
) -> None:
    start, end = region(built.package, kl.TAG_EPHEMERAL_KEY)
    other = (
        _key()
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    tampered = resign(world, built.package[:start] + other + built.package[end:])
    refused(kl.UNWRAP_FAILED, world.open, tampered)


def test_counter_and_kvn_are_bound_into_the_key_derivation(world: World, built: kl.BuiltPackage) -> None:
    # A signer who relabels the counter or KVN of an existing ciphertext gets nothing usable.
    start, end = region(built.package, kl.TAG_COUNTER)
    relabelled = resign(world, built.package[:start] + (8).to_bytes(8, "big") + built.package[end:])
    refused(kl.UNWRAP_FAILED, world.open, relabelled)
    start, _ = region(built.package, kl.TAG_KVN)
    refused(kl.UNWRAP_FAILED, world.open, resign(world, flip(built.package, start, 0x03)))


# --- receipts ---------------------------------------------------------------------------------


def test_a_receipt_checked_with_the_wrong_key_is_refused(world: World, built: kl.BuiltPackage) -> None:
    opened = world.open(built.package)
    wrong = kl.receipt_for(
        b"\x99" * 16, se_id=SE_ID, sd_aid=SD_AID, kvn=opened.kvn, counter=opened.counter, kcvs=opened.kcvs
    )
    refused(kl.RECEIPT_MISMATCH, kl.verify_receipt, opened.receipt, expected_receipt=wrong)
    assert kl.KeyLoadError(kl.RECEIPT_MISMATCH, "x").sw is None


def test_a_receipt_of_another_package_does_not_verify(world: World, built: kl.BuiltPackage) -> None:
    other = world.build(counter=8)
    refused(
        kl.RECEIPT_MISMATCH,
        kl.verify_receipt,
        world.open(other.package).receipt,
        expected_receipt=built.expected_receipt,
    )


@pytest.mark.parametrize(
    "data", [b"", b"\x86\x0f" + bytes(15), b"\x87\x10" + bytes(16), b"\x86\x10" + bytes(17)]
)
def test_a_malformed_receipt_response_is_refused(data: bytes) -> None:
    refused(kl.MALFORMED, kl.parse_receipt_response, data)


# --- the builder's contract ------------------------------------------------------------------


@pytest.mark.parametrize(
    "override",
    [
        {"kvn": 0},
        {"kvn": 0x80},
        {"counter": 0},
        {"counter": 2**64},
        {"keys": (b"\x11" * 16, b"\x22" * 16)},
        {"keys": (b"\x11" * 16, b"\x22" * 24, b"\x33" * 16)},
        {"keys": (b"\x11" * 8,) * 3},
        {"se_id": b""},
        {"sd_aid": b"\xa0\x00"},
        {"oce_certificates": []},
        {"oce_certificates": [b"not a certificate"]},
        {"casd_public_key": ec.generate_private_key(ec.SECP384R1()).public_key()},
    ],
)
def test_the_builder_refuses_arguments_outside_its_contract(
    world: World, override: dict[str, object]
) -> None:
    with pytest.raises(UsageError):
        world.build(**override)


def test_the_builder_refuses_a_chain_that_does_not_certify_its_key(world: World) -> None:
    with pytest.raises(UsageError):
        world.build(oce_private_key=_key())


# --- strict parsing ---------------------------------------------------------------------------


def test_a_non_minimal_length_is_refused_even_with_everything_else_right(
    world: World, built: kl.BuiltPackage
) -> None:
    raw = built.package
    start, _ = region(raw, kl.TAG_SE_ID)  # 5F20 08 ... -> 5F20 81 08 ...
    longer = raw[: start - 1] + b"\x81" + raw[start - 1 :]
    outer_len = int.from_bytes(raw[3:5], "big") + 1
    longer = longer[:3] + outer_len.to_bytes(2, "big") + longer[5:]
    refused(kl.MALFORMED, kl.parse_package, longer)


def test_extra_data_after_the_signature_or_the_package_is_refused(built: kl.BuiltPackage) -> None:
    refused(kl.MALFORMED, kl.parse_package, built.package + b"\x00")
    raw = built.package
    extra = b"\x53\x01\x00"
    body_len = int.from_bytes(raw[3:5], "big") + len(extra)
    refused(kl.MALFORMED, kl.parse_package, raw[:3] + body_len.to_bytes(2, "big") + raw[5:] + extra)


def test_a_point_off_the_curve_is_malformed(world: World, built: kl.BuiltPackage) -> None:
    start, _ = region(built.package, kl.TAG_EPHEMERAL_KEY)
    refused(kl.MALFORMED, kl.parse_package, flip(built.package, start + 64))


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=600))
def test_parse_package_answers_any_bytes_with_a_package_or_keyloaderror(data: bytes) -> None:
    try:
        kl.parse_package(data)
    except kl.KeyLoadError as e:
        assert e.code in (kl.MALFORMED, kl.UNSUPPORTED_VERSION)


_FUZZ_WORLD = World()
_FUZZ_PACKAGE = _FUZZ_WORLD.build().package


@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
@settings(max_examples=300, deadline=None)
@given(
    edits=st.lists(
        st.tuples(
            st.integers(0, len(_FUZZ_PACKAGE) - 1),
            st.sampled_from(["flip", "insert", "delete"]),
            st.integers(0, 255),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_mutated_packages_never_crash_and_never_open(edits: list[tuple[int, str, int]]) -> None:
    raw = bytearray(_FUZZ_PACKAGE)
    for pos, op, byte in edits:
        pos = min(pos, len(raw) - 1)
        if op == "flip":
            raw[pos] ^= byte or 1
        elif op == "insert":
            raw.insert(pos, byte)
        else:
            del raw[pos]
    if bytes(raw) == _FUZZ_PACKAGE:
        return
    with pytest.raises(kl.KeyLoadError):
        _FUZZ_WORLD.open(bytes(raw))


@given(bogus=st.one_of(st.none(), st.integers(), st.text()))
def test_parse_package_refuses_non_bytes(bogus: object) -> None:
    refused(kl.MALFORMED, kl.parse_package, bogus)


# --- the card handler -------------------------------------------------------------------------


def _ssd() -> Application:
    return Application(
        AID(SD_AID),
        AID("A0000001515350"),
        AID("A000000151535041"),
        Privileges.SECURITY_DOMAIN,
        LifeCycle(0x0F),
        AID("A000000151000000"),
    )


def _handle(world: World, data: bytes, **overrides: object) -> KeyPackageResult:
    args: dict[str, object] = {
        "ecdh": kl.ecdh_with(world.casd),
        "se_id": SE_ID,
        "sd_aid": SD_AID,
        "last_counter": 0,
        "ca_public_key": world.ca.public_key(),
    }
    args.update(overrides)
    return handle_key_package(data, **args)  # type: ignore[arg-type]


def test_the_card_handler_installs_the_keys_and_answers_the_receipt(
    world: World, built: kl.BuiltPackage
) -> None:
    assert is_key_package(built.package) and not is_key_package(b"\x42\x01\x00")
    result = _handle(world, built.package)
    sd = _ssd()
    install_key_set(sd, result)
    keyset = sd.keys.sets[0x30]
    assert keyset.scp03() is not None and keyset.scp03().enc == KEYS_128[0]  # type: ignore[union-attr]
    assert [keyset.keys[k].key_type for k in (1, 2, 3)] == [KeyType.AES] * 3
    assert result.response == b"\x86\x10" + built.expected_receipt
    assert result.kcvs == built.kcvs and result.counter == 7


def test_the_card_handler_replaces_a_key_set_of_the_same_version(
    world: World, built: kl.BuiltPackage
) -> None:
    sd = _ssd()
    sd.keys.sets[0x30] = KeySet(
        0x30, {k: Key(k, KeyType.AES, b"\x00" * 16) for k in (1, 2, 3)}, sequence_counter=9
    )
    install_key_set(sd, _handle(world, built.package))
    assert sd.keys.sets[0x30].keys[1].value == KEYS_128[0] and sd.keys.sets[0x30].sequence_counter == 1


def test_the_card_handler_refuses_a_new_key_set_without_room_and_changes_nothing(
    world: World, built: kl.BuiltPackage
) -> None:
    sd = _ssd()
    for kvn in range(1, MAX_KEY_SETS + 1):
        sd.keys.sets[kvn] = KeySet(kvn)
    before = dict(sd.keys.sets)
    with pytest.raises(CardError) as info:
        install_key_set(sd, _handle(world, built.package))
    assert info.value.sw == 0x6A84 and sd.keys.sets == before


@pytest.mark.parametrize(
    ("overrides", "sw"),
    [
        ({"se_id": b"\x01" * 8}, 0x6A80),
        ({"sd_aid": bytes.fromhex("A0000005590099")}, 0x6A80),
        ({"last_counter": 7}, 0x6985),
        ({"ca_public_key": ec.generate_private_key(ec.SECP256R1()).public_key()}, 0x6982),
    ],
)
def test_the_card_handler_answers_each_refusal_with_its_status_word(
    world: World, built: kl.BuiltPackage, overrides: dict[str, object], sw: int
) -> None:
    with pytest.raises(CardError) as info:
        _handle(world, built.package, **overrides)
    assert info.value.sw == sw


def test_the_card_handler_answers_garbage_with_6a80(world: World) -> None:
    with pytest.raises(CardError) as info:
        _handle(world, b"\xbf\x74\x01\x00")
    assert info.value.sw == 0x6A80


def test_every_card_side_code_has_a_status_word() -> None:
    card_codes = {
        kl.MALFORMED, kl.UNSUPPORTED_VERSION, kl.WRONG_SE, kl.WRONG_SD, kl.BAD_CHAIN, kl.BAD_SIGNATURE,
        kl.REPLAYED, kl.AGREEMENT_FAILED, kl.UNWRAP_FAILED, kl.KCV_MISMATCH,
    }  # fmt: skip
    assert set(kl.STATUS_WORDS) == card_codes


# --- the document's worked example ------------------------------------------------------------


def _example_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "keyload_example", ROOT / "docs" / "tools" / "keyload_example.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _doc_block() -> str:
    text = DOC.read_text()
    m = re.search(r"<!-- example:begin -->\n```\n(.*?)```\n<!-- example:end -->", text, re.S)
    assert m, "the example block is missing from docs/key-loading-package.md"
    return m.group(1)


def _doc_values() -> dict[str, bytes]:
    values: dict[str, str] = {}
    name = None
    for line in _doc_block().splitlines():
        if not line.strip() or line.startswith("package structure"):
            if line.startswith("package structure"):
                break
            continue
        if line.startswith("    ") and name:
            values[name] += line.strip()
        else:
            name, _, rest = line.partition(" =")
            values[name] = rest.strip()
    return {k: bytes.fromhex(v) for k, v in values.items()}


def test_the_documents_example_block_is_exactly_what_the_tool_prints() -> None:
    assert _doc_block() == _example_module().render()


def test_the_documents_example_package_is_what_the_code_builds_and_opens() -> None:
    v = _doc_values()

    def private(name: str) -> ec.EllipticCurvePrivateKey:
        return ec.derive_private_key(int.from_bytes(v[name], "big"), ec.SECP256R1())

    ca, oce, casd, eph = (
        private(n)
        for n in ("ca_kloc_private_key", "oce_private_key", "casd_private_key", "ephemeral_private_key")
    )
    built = kl.build_package_with_receipt(
        casd_public_key=casd.public_key(),
        se_id=v["se_id"],
        sd_aid=v["sd_aid"],
        kvn=v["kvn"][0],
        keys=(v["key_enc"], v["key_mac"], v["key_dek"]),
        counter=int.from_bytes(v["counter"], "big"),
        oce_private_key=oce,
        oce_certificates=[v["oce_certificate"]],
        ephemeral_private_key=eph,
    )
    assert built.package == v["package"]
    assert built.expected_receipt == v["receipt"]
    package = kl.parse_package(v["package"])
    assert package.signed_data == v["signature_input"] and package.signature == v["signature"]
    assert package.wrapped_keys == v["wrapped_keys"]
    z = eph.exchange(ec.ECDH(), casd.public_key())
    assert z == v["shared_secret_z"] == casd.exchange(ec.ECDH(), eph.public_key())
    assert kl.derive_keys(z, v["shared_info"], 16) == (v["receipt_key"], v["kek"])
    opened = kl.open_package(
        package,
        ecdh=kl.ecdh_with(casd),
        se_id=v["se_id"],
        sd_aid=v["sd_aid"],
        last_counter=0,
        ca_public_key=ca.public_key(),
    )
    assert opened.keys == (v["key_enc"], v["key_mac"], v["key_dek"])
    assert kl.encode_receipt_response(opened.receipt) == v["card_response"]


def test_replace_keeps_the_dataclass_frozen(built: kl.BuiltPackage) -> None:
    # BuiltPackage is a value: a copy with another receipt does not alter the original.
    copy = replace(built, expected_receipt=bytes(16))
    assert built.expected_receipt != copy.expected_receipt


def test_the_soft_se_casd_opens_a_package_with_its_own_agreement_and_chain_check(world: World) -> None:
    # The wiring the STORE DATA path will use: ECDH and the OCE chain check inside the card.
    from gp.card.casd import CaKey, casd_key_agreement, verify_oce_chain
    from tests.gp.cardkit import new_card

    card = new_card()
    state = card._state
    state.casd.ca_keys.append(CaKey(0x10, 0x01, kl._point(world.ca.public_key())))
    b = world.build(casd_public_key=card.casd_public_key())
    result = _handle(
        world,
        b.package,
        ecdh=lambda pk: casd_key_agreement(state, pk),
        verify_chain=lambda certs, _root: verify_oce_chain(state, list(certs)),
    )
    kl.verify_receipt(result.receipt, expected_receipt=b.expected_receipt)
    with pytest.raises(CardError) as info:  # the same package on another card
        _handle(
            world,
            b.package,
            ecdh=kl.ecdh_with(_key()),
            verify_chain=lambda c, r: verify_oce_chain(state, list(c)),
        )
    assert info.value.sw == 0x6988
