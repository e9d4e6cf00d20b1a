"""The manufacturing hand-over format (gp.card.manufacture) and the SE issuer's vault path
(keys.handover): round trip, wrong import key, tampering, KCV mismatch, and a parser that answers
any input with HandoverFormatError or a parsed record, never a crash."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from hypothesis import given, settings
from hypothesis import strategies as st

from gp.card import manufacture as m
from gp.scp03 import StaticKeys, kcv
from keys import handover
from keys.models import ImportKey
from tenants.access import resolve_actor

ROOT = Path(__file__).resolve().parents[2]
AID = bytes.fromhex("A000000151000000")


def _keys(n: int = 16) -> StaticKeys:
    return StaticKeys(os.urandom(n), os.urandom(n), os.urandom(n))


def _wrap(keys: StaticKeys, pub: Any, **over: Any) -> bytes:
    args = {"sei": "grid-op", "serial": "0A1B2C3D", "isd_aid": AID, "kvn": 0x30, **over}
    return m.wrap_isd_keys(keys, import_public_key=pub, **args)


def _open(blob: bytes, priv: Any, **over: Any) -> StaticKeys:
    args = {"sei": "grid-op", "serial": "0A1B2C3D", "isd_aid": AID, "kvn": 0x30, **over}
    return m.open_wrapped_isd_keys(m.parse_wrapped_isd_keys(blob), private_key=priv, **args)


@pytest.mark.parametrize("n", [16, 24, 32])
def test_wrapped_keys_open_to_the_same_keys_with_the_import_private_key(n: int) -> None:
    priv = ec.generate_private_key(ec.SECP256R1())
    keys = _keys(n)
    blob = _wrap(keys, priv.public_key())
    assert len(blob) == m.HEADER_BYTES + 3 * n + 8
    parsed = m.parse_wrapped_isd_keys(blob)
    assert parsed.kcvs == kcv(keys.enc) + kcv(keys.mac) + kcv(keys.dek)
    assert parsed.key_id == m.import_key_id(priv.public_key())
    assert _open(blob, priv) == keys
    # the keys are nowhere in the blob
    for k in (keys.enc, keys.mac, keys.dek):
        assert k not in blob


def test_another_import_key_does_not_open_them() -> None:
    keys = _keys()
    blob = _wrap(keys, ec.generate_private_key(ec.SECP256R1()).public_key())
    with pytest.raises(m.HandoverError, match="another import key"):
        _open(blob, ec.generate_private_key(ec.SECP256R1()))


@pytest.mark.parametrize(
    "field, value",
    [
        ("sei", "other-sei"),
        ("serial", "0A1B2C3E"),
        ("isd_aid", bytes.fromhex("A000000151000001")),
        ("kvn", 0x31),
    ],
)
def test_keys_bound_to_another_sei_serial_aid_or_kvn_do_not_open(field: str, value: Any) -> None:
    priv = ec.generate_private_key(ec.SECP256R1())
    blob = _wrap(_keys(), priv.public_key())
    with pytest.raises(m.HandoverError, match="do not open"):
        _open(blob, priv, **{field: value})


def test_the_serial_binding_ignores_case() -> None:
    priv = ec.generate_private_key(ec.SECP256R1())
    keys = _keys()
    assert _open(_wrap(keys, priv.public_key(), serial="0a1b2c3d"), priv) == keys


@pytest.mark.parametrize(
    "offset", [1 + 1 + 32 + 65, 1 + 1 + 32 + 65 + 8, m.HEADER_BYTES, m.HEADER_BYTES + 30, -1]
)
def test_any_altered_byte_of_kcvs_or_wrapped_keys_is_refused(offset: int) -> None:
    priv = ec.generate_private_key(ec.SECP256R1())
    blob = bytearray(_wrap(_keys(), priv.public_key()))
    blob[offset] ^= 0x01
    with pytest.raises(m.HandoverError):
        _open(bytes(blob), priv)


def test_a_replaced_ephemeral_key_is_refused() -> None:
    priv = ec.generate_private_key(ec.SECP256R1())
    blob = bytearray(_wrap(_keys(), priv.public_key()))
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    from cryptography.hazmat.primitives import serialization

    blob[34:99] = other.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    with pytest.raises(m.HandoverError, match="do not open"):
        _open(bytes(blob), priv)


def test_keys_that_do_not_match_the_kcvs_they_carry_are_refused() -> None:
    # given a supplier whose tool wrapped keys and KCVs that disagree (built by hand, correctly wrapped)
    priv = ec.generate_private_key(ec.SECP256R1())
    keys, liar = _keys(), _keys()
    eph = ec.generate_private_key(ec.SECP256R1())
    from cryptography.hazmat.primitives import serialization

    point = eph.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    kcvs = kcv(liar.enc) + kcv(liar.mac) + kcv(liar.dek)
    key_id = m.import_key_id(priv.public_key())
    info = m.shared_info(
        key_length=16, sei="grid-op", serial="0A1B2C3D", isd_aid=AID, kvn=0x30, key_id=key_id,
        ephemeral_point=point, kcvs=kcvs,
    )  # fmt: skip
    kek = m._kek(eph.exchange(ec.ECDH(), priv.public_key()), info)
    blob = m.WrappedIsdKeys(
        1, 16, key_id, point, kcvs, aes_key_wrap(kek, keys.enc + keys.mac + keys.dek)
    ).encode()
    # then the unwrap succeeds cryptographically but the KCV check refuses it
    with pytest.raises(m.HandoverError, match="key check values"):
        _open(blob, priv)


@pytest.mark.parametrize(
    "blob, message",
    [
        (b"", "version byte"),
        (b"\x02\x10" + bytes(162), "unknown wrapped ISD key set version"),
        (b"\x01\x11" + bytes(162), "not 16, 24 or 32"),
        (b"\x01\x10" + bytes(10), "is 164 bytes"),
        (b"\x01\x10" + bytes(32) + b"\x02" + bytes(129), "uncompressed point"),
        (b"\x01\x10" + bytes(32) + b"\x04" + bytes(129), "not a point on P-256"),
    ],
)
def test_malformed_blobs_are_refused_with_a_clear_message(blob: bytes, message: str) -> None:
    with pytest.raises(m.HandoverFormatError, match=message):
        m.parse_wrapped_isd_keys(blob)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_the_parser_answers_any_bytes_with_a_record_or_a_format_error(blob: bytes) -> None:
    try:
        parsed = m.parse_wrapped_isd_keys(blob)
    except m.HandoverFormatError:
        return
    assert parsed.encode() == blob


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_the_text_decoder_answers_any_text_with_bytes_or_a_format_error(text: str) -> None:
    try:
        m.decode_wrapped(text)
    except m.HandoverFormatError:
        pass


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=m.HEADER_BYTES + 56, max_size=m.HEADER_BYTES + 56), st.integers(0, 163))
def test_a_valid_blob_with_any_byte_changed_never_opens(noise: bytes, offset: int) -> None:
    priv = _PRIV
    blob = bytearray(_BLOB)
    blob[offset] ^= noise[offset] or 0x80
    try:
        _open(bytes(blob), priv)
    except m.HandoverError:
        return
    raise AssertionError("an altered blob opened")


_PRIV = ec.generate_private_key(ec.SECP256R1())
_BLOB = _wrap(_keys(), _PRIV.public_key())


def test_hex_and_base64_forms_decode_to_the_same_blob() -> None:
    import base64

    blob = _BLOB
    assert m.decode_wrapped(blob.hex()) == m.decode_wrapped(blob.hex().upper()) == blob
    assert m.decode_wrapped(base64.b64encode(blob).decode()) == blob


# --- the vault path ---------------------------------------------------------------------------


def test_the_issuers_vault_opens_keys_wrapped_to_its_published_import_key(world: Any) -> None:
    key = handover.import_key_rotate(actor=resolve_actor(world.owner_user, "owner-sei"))
    pub = m.load_import_public_key(handover.import_key_pem(handover.published_import_key("owner-sei")))
    keys = _keys()
    blob = m.wrap_isd_keys(
        keys, import_public_key=pub, sei="owner-sei", serial="0A1B2C3D", isd_aid=AID, kvn=0x30
    )
    opened = handover.unwrap_isd_keys(
        issuer=world.owner, wrapped=m.parse_wrapped_isd_keys(blob), serial="0A1B2C3D", isd_aid=AID, kvn=0x30
    )
    assert opened == keys
    # the private key is sealed, not stored in clear
    sealed = bytes(ImportKey.objects.get(pk=key.pk).sealed_private_key)
    assert sealed[:1] == b"\x01" and len(sealed) > 100


def test_another_issuer_cannot_open_keys_wrapped_to_the_owners_import_key(world: Any) -> None:
    from tenants.models import OrgRole

    handover.import_key_rotate(actor=resolve_actor(world.owner_user, "owner-sei"))
    world.stranger.roles = [*world.stranger.roles, OrgRole.SE_ISSUER]
    world.stranger.save()
    handover.import_key_rotate(actor=resolve_actor(world.stranger_user, "stranger-sp"))
    pub = m.load_import_public_key(handover.import_key_pem(handover.published_import_key("owner-sei")))
    blob = m.wrap_isd_keys(_keys(), import_public_key=pub, sei="owner-sei", serial="01", isd_aid=AID, kvn=1)
    with pytest.raises(handover.HandoverRefused, match="does not accept"):
        handover.unwrap_isd_keys(
            issuer=world.stranger, wrapped=m.parse_wrapped_isd_keys(blob), serial="01", isd_aid=AID, kvn=1
        )


def test_a_retired_import_key_is_destroyed_and_opens_nothing(world: Any) -> None:
    actor = resolve_actor(world.owner_user, "owner-sei")
    old = handover.import_key_rotate(actor=actor)
    pub = m.load_import_public_key(handover.import_key_pem(old))
    blob = m.wrap_isd_keys(_keys(), import_public_key=pub, sei="owner-sei", serial="01", isd_aid=AID, kvn=1)
    handover.import_key_rotate(actor=actor)
    handover.import_key_retire(actor=actor, fingerprint=old.fingerprint)
    with pytest.raises(handover.HandoverRefused):
        handover.unwrap_isd_keys(
            issuer=world.owner, wrapped=m.parse_wrapped_isd_keys(blob), serial="01", isd_aid=AID, kvn=1
        )
    assert ImportKey.objects.filter(owner=world.owner, status="current").count() == 1


def test_import_keys_are_never_managed_on_someones_behalf(world: Any) -> None:
    from portal.errors import NotFoundError

    world.mandate.actions = [*world.mandate.actions, "keys.load"]
    world.mandate.save()
    actor = resolve_actor(world.collaborator_user, "collab-tsm", "owner-sei")
    with pytest.raises(NotFoundError):
        handover.import_key_rotate(actor=actor)


# --- the worked example in docs/manufacturing-handover.md ------------------------------------------


def test_the_documented_worked_example_is_what_the_script_prints_and_it_opens() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "docs/tools/handover_example.py")],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    doc = (ROOT / "docs/manufacturing-handover.md").read_text()
    start = doc.index("<!-- example:begin -->") + len("<!-- example:begin -->")
    end = doc.index("<!-- example:end -->")
    assert doc[start:end].strip() == "```\n" + out.strip() + "\n```"
