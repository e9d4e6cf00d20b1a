"""The token layer on SoftHSMv2, through the OP-TEE profile (docs/tee-bridge.md)."""

from __future__ import annotations

import os
import time

import pkcs11
import pytest
from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import algorithms
from pkcs11 import Attribute

from agent.httpsig import sign_request, verify_request
from agent.pkcs11.token import IDENTITY_LABEL, TokenError
from gp import tokenwrap
from gp.sessionkeys import derive_session_key

pytestmark = pytest.mark.services

AID = bytes.fromhex("A000000151535001")


def _all_objects(token) -> int:
    return len(token._find({}))


def _private(token, label):
    return token._one({Attribute.CLASS: pkcs11.ObjectClass.PRIVATE_KEY, Attribute.LABEL: label})


# --- identity --------------------------------------------------------------------------------------


def test_the_identity_key_is_generated_sensitive_and_never_extractable(softhsm_agent):
    key = _private(softhsm_agent.token, IDENTITY_LABEL)
    assert key[Attribute.SENSITIVE] is True
    assert key[Attribute.EXTRACTABLE] is False
    assert key[Attribute.NEVER_EXTRACTABLE] is True
    assert key[Attribute.DERIVE] is False
    with pytest.raises(pkcs11.AttributeSensitive):
        key[Attribute.VALUE]


def test_a_request_signed_by_the_token_verifies_with_its_public_key(softhsm_agent):
    signer = softhsm_agent.token.identity_signer()
    body = b'{"x": 1}'
    headers = sign_request(private_key=signer, method="POST", path="/agent/v1/exchange", body=body)
    params = verify_request(
        method="POST",
        path="/agent/v1/exchange",
        headers=headers,
        body=body,
        resolve_key=lambda kid: signer.public_key(),
        now=time.time(),
    )
    assert params.alg == "ecdsa-p256-sha256"
    with pytest.raises(Exception, match="does not verify"):
        verify_request(
            method="POST",
            path="/agent/v1/exchange",
            headers=headers,
            body=body,
            resolve_key=lambda kid: ec.generate_private_key(ec.SECP256R1()).public_key(),
            now=time.time(),
        )


# --- key reception ---------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [16, 24, 32])
def test_a_key_sent_by_the_server_arrives_non_extractable_and_usable(softhsm_agent, length):
    token = softhsm_agent.token
    label = tokenwrap.master_key_label(AID, 0x10 + length)
    key = os.urandom(length)
    envelope = tokenwrap.wrap_for_token(key, token.receive_public_point(), label)
    before = _all_objects(token)

    received = token.receive_key(tokenwrap.Envelope.from_json(envelope.to_json()))

    assert (received.label, received.length) == (label, length)
    assert _all_objects(token) == before + 1  # the key, and nothing of the derivation chain
    obj = token.secret_key(label)
    assert obj[Attribute.TOKEN] is True
    assert obj[Attribute.SENSITIVE] is True and obj[Attribute.EXTRACTABLE] is False
    assert obj[Attribute.NEVER_EXTRACTABLE] is True
    assert obj[Attribute.ENCRYPT] is False and obj[Attribute.DERIVE] is False
    c = cmac.CMAC(algorithms.AES(key))
    c.update(b"proof of possession")
    assert token.cmac(label, b"proof of possession") == c.finalize()
    assert token.delete_key(label) and not token.has_key(label)


def test_the_software_receiver_and_the_token_agree(softhsm_agent):
    """The reference receiver (gp.tokenwrap) follows the documented derivation byte for byte."""
    device = ec.generate_private_key(ec.SECP256R1())
    key = os.urandom(32)
    envelope = tokenwrap.wrap_for_token(key, device.public_key(), "tessera/sd/A000000151535001/01")
    assert tokenwrap.receive_in_software(device, envelope) == key


def test_reading_a_received_key_value_is_refused(softhsm_agent):
    token = softhsm_agent.token
    label = tokenwrap.master_key_label(AID, 0x05)
    token.receive_key(tokenwrap.wrap_for_token(os.urandom(16), token.receive_public_point(), label))
    try:
        with pytest.raises(pkcs11.AttributeSensitive):
            token.secret_key(label)[Attribute.VALUE]
    finally:
        token.delete_key(label)


def _tampered(envelope: tokenwrap.Envelope, what: str) -> tokenwrap.Envelope:
    flip = lambda b: bytes([b[0] ^ 1]) + b[1:]  # noqa: E731
    other = tokenwrap.point_bytes(ec.generate_private_key(ec.SECP256R1()).public_key())
    fields = {
        "label": envelope.label,
        "ephemeral": envelope.ephemeral,
        "wrapped": envelope.wrapped,
        "tag": envelope.tag,
        "key_length": envelope.key_length,
    }
    if what == "wrapped":
        fields["wrapped"] = flip(envelope.wrapped)
    elif what == "tag":
        fields["tag"] = flip(envelope.tag)
    elif what == "ephemeral":
        fields["ephemeral"] = other
    elif what == "label":
        fields["label"] = envelope.label[:-2] + "7F"
    return tokenwrap.Envelope(**fields)


@pytest.mark.parametrize("what", ["wrapped", "tag", "ephemeral", "label", "other-device"])
def test_a_tampered_envelope_is_refused_and_leaves_no_object(softhsm_agent, what):
    token = softhsm_agent.token
    label = tokenwrap.master_key_label(AID, 0x70)
    if what == "other-device":
        recipient = ec.generate_private_key(ec.SECP256R1()).public_key()
        envelope = tokenwrap.wrap_for_token(os.urandom(16), recipient, label)
    else:
        envelope = _tampered(
            tokenwrap.wrap_for_token(os.urandom(16), token.receive_public_point(), label), what
        )
    before = _all_objects(token)
    with pytest.raises(tokenwrap.EnvelopeError, match="key confirmation failed"):
        token.receive_key(envelope)
    assert _all_objects(token) == before
    assert not token.has_key(envelope.label)


def test_a_received_key_is_not_replaced_unless_asked_and_then_only_by_a_confirmed_one(softhsm_agent):
    token = softhsm_agent.token
    label = tokenwrap.master_key_label(AID, 0x71)
    first, second = os.urandom(16), os.urandom(16)
    q = token.receive_public_point()
    token.receive_key(tokenwrap.wrap_for_token(first, q, label))
    try:
        with pytest.raises(TokenError, match="already holds"):
            token.receive_key(tokenwrap.wrap_for_token(second, q, label))
        with pytest.raises(tokenwrap.EnvelopeError):
            token.receive_key(_tampered(tokenwrap.wrap_for_token(second, q, label), "wrapped"), replace=True)
        c = cmac.CMAC(algorithms.AES(first))
        c.update(b"m")
        assert token.cmac(label, b"m") == c.finalize()  # the old key survived the refused replacement
        token.receive_key(tokenwrap.wrap_for_token(second, q, label), replace=True)
        c = cmac.CMAC(algorithms.AES(second))
        c.update(b"m")
        assert token.cmac(label, b"m") == c.finalize()
        assert [k.label for k in token.list_keys()].count(label) == 1
    finally:
        token.delete_key(label)


@pytest.mark.parametrize(
    "bad",
    [
        {"v": "x"},
        {"key_length": 17},
        {"ephemeral": "04" + "00" * 10},
        {"wrapped": "ZZ"},
        {"tag": "00"},
        {"label": "../etc"},
    ],
)
def test_a_malformed_envelope_is_refused_with_a_clear_error(bad):
    good = tokenwrap.wrap_for_token(
        os.urandom(16), ec.generate_private_key(ec.SECP256R1()).public_key(), "tessera/sd/A000000151535001/01"
    ).to_json()
    with pytest.raises(tokenwrap.EnvelopeError):
        tokenwrap.Envelope.from_json(good | bad)


# --- session keys ----------------------------------------------------------------------------------


def test_session_keys_derived_in_the_token_equal_the_servers(softhsm_agent):
    token = softhsm_agent.token
    master = os.urandom(16)
    label = tokenwrap.master_key_label(AID, 0x72)
    token.receive_key(tokenwrap.wrap_for_token(master, token.receive_public_point(), label), replace=True)
    try:
        for service, epoch in (("meter.reading", 20419), ("billing", 0), ("x", 2**32 - 1)):
            device = token.derive_session_key(AID, service=service, epoch=epoch)
            server = derive_session_key(master, service=service, epoch=epoch, se_id=token.device_id())
            assert device == server and len(device) == 16
    finally:
        token.delete_key(label)


def test_the_in_token_prf_reproduces_the_documented_vector(softhsm_agent):
    """docs/session-keys.md §2's worked example, one C_Sign(CKM_AES_CMAC) under the received master key."""
    token = softhsm_agent.token
    label = "tessera/test/vector"
    token.receive_key(
        tokenwrap.wrap_for_token(bytes(range(16)), token.receive_public_point(), label), replace=True
    )
    try:
        prf_input = bytes.fromhex(
            "00000001" "746573736572612D73657373696F6E" "00"
            "0D6D657465722E72656164696E6700004FC30401020304" "00000080"
        )  # fmt: skip
        assert token.cmac(label, prf_input).hex().upper() == "EE4906F984EB07BA2515643C4C916B61"
    finally:
        token.delete_key(label)


# --- the soft SE's state key -----------------------------------------------------------------------


def test_the_state_key_comes_from_a_non_extractable_token_key_and_is_stable(softhsm_agent):
    token = softhsm_agent.token
    first = token.state_key()
    assert first == token.state_key() and len(first) == 32
    obj = token.secret_key("tessera/state")
    assert obj[Attribute.EXTRACTABLE] is False and obj[Attribute.SENSITIVE] is True
    with pytest.raises(pkcs11.AttributeSensitive):
        obj[Attribute.VALUE]
