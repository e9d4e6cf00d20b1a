"""RFC 9421 / RFC 9530 request signatures: the RFC's own example, round trips and every refusal code."""

from __future__ import annotations

import base64
import re
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from agent.errors import SignatureError
from agent.httpsig import (
    SignatureParams,
    content_digest,
    key_id,
    sign_request,
    signature_base,
    verify_raw,
    verify_request,
)

PATH = "/agent/v1/exchange"
BODY = b'{"protocol":1,"agent":{},"results":[],"health":{}}'
NOW = 1_700_000_000

# RFC 9421 Appendix B.1.3, test-key-ecc-p256 (public half).
RFC_P256 = b"""-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqIVYZVLCrPZHGHjP17CTW0/+D9Lf
w0EkjqF7xB4FivAxzic30tMM4GF+hR6Dxh71Z50VGGdldkkDXZCnTNnoXQ==
-----END PUBLIC KEY-----"""


def test_the_rfc_9421_b_2_4_example_signature_verifies_over_the_base_we_build() -> None:
    # given RFC 9421 Appendix B.2.4 (response, ecdsa-p256-sha256, test-key-ecc-p256)
    public = load_pem_public_key(RFC_P256)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    base = signature_base(
        [
            ("@status", "200"),
            ("content-type", "application/json"),
            (
                "content-digest",
                "sha-512=:mEWXIS7MaLRuGgxOBdODa3xqM1XdEvxoYhvlCFJ41QJgJc4GTsPp29l5oGX69wWdXymyU0rjJuahq4l5aGgfLQ==:",
            ),
            ("content-length", "23"),
        ],
        '("@status" "content-type" "content-digest" "content-length");created=1618884473;keyid="test-key-ecc-p256"',
    )
    signature = base64.b64decode(
        "wNmSUAhwb5LxtOtOpNa6W5xj067m5hFrj0XQ4fvpaCLx0NKocgPquLgyahnzDnDAUy5eCdlYUEkLIj+32oiasw=="
    )
    # then the published r‖s signature verifies, and one changed byte of the base breaks it
    assert verify_raw(public, signature, base)
    assert not verify_raw(public, signature, base.replace(b"200", b"201"))
    assert base.count(b"\n") == 4 and not base.endswith(b"\n")


def test_content_digest_matches_the_rfc_9530_example() -> None:
    assert content_digest(b'{"hello": "world"}') == "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"


def test_key_id_is_the_sha256_of_the_subject_public_key_info() -> None:
    public = load_pem_public_key(RFC_P256)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert re.fullmatch(r"[0-9a-f]{64}", key_id(public))


def _signed(key: ec.EllipticCurvePrivateKey, **kw: object) -> dict[str, str]:
    args: dict[str, object] = {
        "private_key": key,
        "method": "POST",
        "path": PATH,
        "body": BODY,
        "created": NOW,
    }
    args.update(kw)
    return sign_request(**args)  # type: ignore[arg-type]


def _verify(key: ec.EllipticCurvePrivateKey, headers: dict[str, str], **kw: object) -> SignatureParams:
    args: dict[str, object] = {
        "method": "POST",
        "path": PATH,
        "headers": headers,
        "body": BODY,
        "resolve_key": {key_id(key.public_key()): key.public_key()}.get,
        "now": NOW,
    }
    args.update(kw)
    return verify_request(**args)  # type: ignore[arg-type]


def test_a_signed_request_verifies_and_yields_its_parameters(identity: ec.EllipticCurvePrivateKey) -> None:
    headers = _signed(identity, nonce="A" * 22)
    params = _verify(identity, headers)
    assert params == SignatureParams(key_id(identity.public_key()), NOW, "A" * 22, "ecdsa-p256-sha256")


def test_the_headers_follow_the_documented_shape(identity: ec.EllipticCurvePrivateKey) -> None:
    headers = _signed(identity)
    kid = key_id(identity.public_key())
    assert re.fullmatch(
        r'tessera=\("@method" "@path" "content-digest"\);created=1700000000;nonce="[A-Za-z0-9_-]{22}"'
        rf';keyid="{kid}";alg="ecdsa-p256-sha256"',
        headers["Signature-Input"],
    )
    assert re.fullmatch(r"tessera=:[A-Za-z0-9+/]{86}==:", headers["Signature"])
    assert headers["Content-Digest"] == content_digest(BODY)


def test_each_request_gets_a_fresh_nonce(identity: ec.EllipticCurvePrivateKey) -> None:
    assert _signed(identity)["Signature-Input"] != _signed(identity)["Signature-Input"]


def test_header_names_are_looked_up_case_insensitively(identity: ec.EllipticCurvePrivateKey) -> None:
    headers = {k.upper(): v for k, v in _signed(identity).items()}
    assert _verify(identity, headers).created == NOW


def test_a_signature_created_within_the_skew_is_accepted(identity: ec.EllipticCurvePrivateKey) -> None:
    assert _verify(identity, _signed(identity), now=NOW + 300).created == NOW
    assert _verify(identity, _signed(identity), now=NOW - 300).created == NOW


def _code(fn: object, *args: object, **kw: object) -> str:
    with pytest.raises(SignatureError) as e:
        fn(*args, **kw)  # type: ignore[operator]
    return e.value.code


def test_missing_signature_headers_are_signature_missing(identity: ec.EllipticCurvePrivateKey) -> None:
    headers = _signed(identity)
    for name in ("Signature", "Signature-Input"):
        partial = {k: v for k, v in headers.items() if k != name}
        assert _code(_verify, identity, partial) == "signature_missing"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda h: h.pop("Content-Digest"),
        lambda h: h.update({"Signature-Input": h["Signature-Input"].replace("tessera=", "sig1=")}),
        lambda h: h.update({"Signature-Input": h["Signature-Input"].replace('"@path" ', "")}),
        lambda h: h.update(
            {"Signature-Input": h["Signature-Input"].replace("created=1700000000", 'created="1"')}
        ),
        lambda h: h.update(
            {"Signature-Input": h["Signature-Input"].replace("created=1700000000", "created=01")}
        ),
        lambda h: h.update({"Signature-Input": h["Signature-Input"].replace("ecdsa-p256-sha256", "ed25519")}),
        lambda h: h.update({"Signature-Input": h["Signature-Input"] + ";expires=1700000300"}),
        lambda h: h.update({"Signature-Input": h["Signature-Input"] + ';nonce="BBBBBBBBBBBBBBBBBBBBBB"'}),
        lambda h: h.update(
            {"Signature-Input": re.sub(r'keyid="[0-9a-f]+"', 'keyid="Test"', h["Signature-Input"])}
        ),
        lambda h: h.update(
            {"Signature-Input": re.sub(r'nonce="[^"]+"', 'nonce="short"', h["Signature-Input"])}
        ),
        lambda h: h.update({"Signature": h["Signature"][:-4] + ":"}),
        lambda h: h.update({"Signature": h["Signature"].replace("tessera=", "other=")}),
        lambda h: h.update({"Content-Digest": "sha-512=:AAAA:"}),
        lambda h: h.update({"Signature-Input": "x" * 2000}),
    ],
)
def test_malformed_signature_headers_are_signature_malformed(
    identity: ec.EllipticCurvePrivateKey, tamper
) -> None:
    headers = _signed(identity)
    tamper(headers)
    assert _code(_verify, identity, headers) == "signature_malformed"


def test_a_changed_body_is_digest_mismatch(identity: ec.EllipticCurvePrivateKey) -> None:
    assert _code(_verify, identity, _signed(identity), body=BODY + b" ") == "digest_mismatch"


def test_a_digest_recomputed_for_a_changed_body_is_bad_signature(
    identity: ec.EllipticCurvePrivateKey,
) -> None:
    headers = _signed(identity)
    headers["Content-Digest"] = content_digest(BODY + b" ")
    assert _code(_verify, identity, headers, body=BODY + b" ") == "bad_signature"


def test_an_unregistered_key_is_unknown_key(identity: ec.EllipticCurvePrivateKey) -> None:
    assert _code(_verify, identity, _signed(identity), resolve_key=lambda kid: None) == "unknown_key"


def test_a_request_older_or_newer_than_the_skew_is_stale(identity: ec.EllipticCurvePrivateKey) -> None:
    assert _code(_verify, identity, _signed(identity), now=NOW + 301) == "stale"
    assert _code(_verify, identity, _signed(identity), now=NOW - 301) == "stale"


@pytest.mark.parametrize(
    "change",
    [{"method": "PUT"}, {"path": "/agent/v1/other"}],
)
def test_another_method_or_path_is_bad_signature(identity: ec.EllipticCurvePrivateKey, change) -> None:
    assert _code(_verify, identity, _signed(identity), **change) == "bad_signature"


def test_a_signature_by_another_key_is_bad_signature(identity: ec.EllipticCurvePrivateKey) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    headers = _signed(other)
    kid = key_id(other.public_key())
    assert _code(_verify, identity, headers, resolve_key={kid: identity.public_key()}.get) == "bad_signature"


def test_a_changed_parameter_is_bad_signature(identity: ec.EllipticCurvePrivateKey) -> None:
    headers = _signed(identity)
    headers["Signature-Input"] = headers["Signature-Input"].replace(
        "created=1700000000", "created=1700000001"
    )
    assert _code(_verify, identity, headers) == "bad_signature"


def test_the_resolver_may_refuse_a_suspended_device_itself(identity: ec.EllipticCurvePrivateKey) -> None:
    def suspended(kid: str) -> ec.EllipticCurvePublicKey:
        raise SignatureError("device_suspended")

    assert _code(_verify, identity, _signed(identity), resolve_key=suspended) == "device_suspended"


def test_verification_is_fast_enough_for_the_idle_poll(identity: ec.EllipticCurvePrivateKey) -> None:
    headers = _signed(identity)
    start = time.perf_counter()
    for _ in range(200):
        _verify(identity, headers)
    per_request = (time.perf_counter() - start) / 200
    assert per_request < 0.005, f"{per_request * 1e6:.0f} µs per verification"
