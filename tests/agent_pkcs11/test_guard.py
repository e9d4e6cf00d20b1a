"""The OP-TEE profile refuses what OP-TEE's PKCS#11 TA would, before the call reaches the token —
including calls SoftHSM itself accepts (so a pass on SoftHSM means something for OP-TEE)."""

from __future__ import annotations

import pkcs11
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pkcs11 import KDF, Attribute, KeyType, Mechanism

from agent.pkcs11.profile import OpteeProfile, ProfileViolation
from agent.pkcs11.token import RECEIVE_LABEL, Token

pytestmark = pytest.mark.services


class _Permissive(OpteeProfile):
    """No checks: shows SoftHSM itself would have accepted the call."""

    def __getattribute__(self, name):
        attr = super().__getattribute__(name)
        return (lambda *a, **k: None) if callable(attr) and not name.startswith("_") else attr


def _point(der: bool) -> bytes:
    pub = ec.generate_private_key(ec.SECP256R1()).public_key()
    raw = pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return b"\x04\x41" + raw if der else raw


def _aes_template(token: Token, **changes) -> dict:
    template = token._secret_template(None, 32, key_type=KeyType.AES, derive=True)
    for attr, value in changes.items():
        key = getattr(Attribute, attr)
        if value is None:
            template.pop(key)
        else:
            template[key] = value
    return template


def _receive_private(token: Token):
    return token._ec_pair(RECEIVE_LABEL)[1]


CASES = {
    "ecdh-der-point": lambda t: t._derive(
        _receive_private(t), Mechanism.ECDH1_DERIVE, (KDF.NULL, None, _point(der=True)), _aes_template(t)
    ),
    "ecdh-kdf-sha256": lambda t: t._derive(
        _receive_private(t), Mechanism.ECDH1_DERIVE, (KDF.SHA256, None, _point(der=False)), _aes_template(t)
    ),
    "ecdh-shared-data": lambda t: t._derive(
        _receive_private(t),
        Mechanism.ECDH1_DERIVE,
        (KDF.NULL, b"shared", _point(der=False)),
        _aes_template(t),
    ),
    "derive-no-value-len": lambda t: t._derive(
        _receive_private(t),
        Mechanism.ECDH1_DERIVE,
        (KDF.NULL, None, _point(der=False)),
        _aes_template(t, VALUE_LEN=None),
    ),
    "derive-extractable-omitted": lambda t: t._derive(
        _receive_private(t),
        Mechanism.ECDH1_DERIVE,
        (KDF.NULL, None, _point(der=False)),
        _aes_template(t, EXTRACTABLE=None),
    ),
    "encrypt-data-parent-with-encrypt": lambda t: t._derive(
        t._derive(
            _receive_private(t),
            Mechanism.ECDH1_DERIVE,
            (KDF.NULL, None, _point(der=False)),
            _aes_template(t, ENCRYPT=True),
        ),
        Mechanism.AES_ECB_ENCRYPT_DATA,
        bytes(32),
        _aes_template(t),
    ),
    "hmac-key-too-short": lambda t: t._generate_secret(
        Mechanism.GENERIC_SECRET_KEY_GEN,
        t._secret_template(None, 16, key_type=KeyType.GENERIC_SECRET, sign=True),
    ),
    "ecdsa-sha256": lambda t: t._sign(_receive_private(t), Mechanism.ECDSA_SHA256, b"message"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_profile_refuses_what_optee_would(softhsm_agent, case):
    token = softhsm_agent.token
    before = {o.handle for o in token._find({})}
    with pytest.raises(ProfileViolation, match="OP-TEE profile"):
        CASES[case](token)
    new = [o for o in token._find({}) if o.handle not in before]
    flags = [o[Attribute.ENCRYPT] for o in new]
    for obj in new:
        obj.destroy()
    # refused before the token created anything (that case's parent is made, legitimately, first)
    assert flags == ([True] if case == "encrypt-data-parent-with-encrypt" else [])


@pytest.mark.parametrize(
    "case", ["ecdh-der-point", "derive-extractable-omitted", "encrypt-data-parent-with-encrypt"]
)
def test_softhsm_alone_would_have_accepted_it(softhsm_agent, case):
    token = softhsm_agent.token
    permissive = Token(token._token, token._session, module=token.module, profile=_Permissive())
    permissive._lock = token._lock
    before = {o.handle for o in token._find({Attribute.TOKEN: False})}
    CASES[case](permissive)
    for obj in token._find({Attribute.TOKEN: False}):
        if obj.handle not in before:
            obj.destroy()


def test_the_profile_forbids_mechanisms_outside_the_common_set():
    profile = OpteeProfile()
    for function, mechanism in (
        ("unwrap", Mechanism.AES_KEY_WRAP),
        ("derive", 0x3AC),  # CKM_SP800_108_COUNTER_KDF
        ("derive", 0x402A),  # CKM_HKDF_DERIVE
        ("derive", Mechanism.CONCATENATE_BASE_AND_KEY),
    ):
        with pytest.raises(ProfileViolation):
            profile.mechanism(function, int(mechanism))
    with pytest.raises(ProfileViolation, match="C_CopyObject"):
        profile.copy({Attribute.EXTRACTABLE: True})
    with pytest.raises(ProfileViolation, match="32-byte"):
        profile.sign(int(Mechanism.ECDSA), b"not a digest")


def test_python_pkcs11_defaults_are_not_sent(softhsm_agent):
    """The session's attribute mapper adds nothing: what the profile checked is what the token got."""
    token = softhsm_agent.token
    template = token._secret_template(None, 32, key_type=KeyType.AES, derive=True)
    key = token._derive(
        _receive_private(token), Mechanism.ECDH1_DERIVE, (KDF.NULL, None, _point(der=False)), template
    )
    try:
        assert (
            key[Attribute.ENCRYPT] is False and key[Attribute.SIGN] is False and key[Attribute.TOKEN] is False
        )
    finally:
        key.destroy()
    assert isinstance(token._session, pkcs11.Session)
