"""Request signatures for ``/agent/v1/``: RFC 9421 HTTP Message Signatures over an RFC 9530 digest.

The profile (docs/agent-protocol.md §Transport and signatures) is fixed, so it is implemented
directly rather than through a general RFC 9421 library:

- ``Content-Digest: sha-256=:<base64>:`` (RFC 9530 §2) binds the body.
- ``Signature-Input: tessera=("@method" "@path" "content-digest");created=…;nonce="…";keyid="…";alg="ecdsa-p256-sha256"``
- ``Signature: tessera=:<base64 of r‖s>:`` — ecdsa-p256-sha256 (RFC 9421 §3.3.4): ECDSA P-256 over
  SHA-256 of the signature base, the value being the two 32-byte integers r and s concatenated.
- The signature base (RFC 9421 §2.5): one line ``"<component>": <value>`` per covered component,
  in order, then ``"@signature-params": <the inner list as serialised in Signature-Input>``, lines
  joined by ``\\n`` with no trailing newline.

Verification is on every idle poll, so the parser is a pair of anchored regular expressions for
exactly this profile: whatever else RFC 8941 would allow (other labels, parameter orders with
whitespace, escapes, other components) is ``signature_malformed``. Because the accepted form is
canonical, the ``@signature-params`` line is the received text itself, with no re-serialisation.

Checks, cheapest first: headers present → well-formed → fresh (``|now − created| ≤ max_skew``)
→ digest matches the body → key known → signature valid. Nonce replay and device suspension are
the server's (``resolve_key`` may raise :class:`SignatureError` itself; it propagates).

Dependencies: stdlib and ``cryptography`` only — the portal imports this module.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from agent.errors import SignatureError

__all__ = [
    "ALGORITHM",
    "COMPONENTS",
    "LABEL",
    "SignatureError",
    "SignatureParams",
    "Signer",
    "content_digest",
    "key_id",
    "sign_request",
    "signature_base",
    "verify_request",
]

LABEL = "tessera"
ALGORITHM = "ecdsa-p256-sha256"
COMPONENTS = ("@method", "@path", "content-digest")
NONCE_BYTES = 16
MAX_HEADER = 1024

SIGNATURE_MISSING = "signature_missing"
SIGNATURE_MALFORMED = "signature_malformed"
DIGEST_MISMATCH = "digest_mismatch"
UNKNOWN_KEY = "unknown_key"
STALE = "stale"
BAD_SIGNATURE = "bad_signature"

_COMPONENT_LIST = "(" + " ".join(f'"{c}"' for c in COMPONENTS) + ")"
# sf-string without escapes; sf-integer without sign or leading zeros (canonical serialisation).
_SF_STRING = r'"[\x20\x21\x23-\x5b\x5d-\x7e]*"'
_SF_UINT = r"(?:0|[1-9][0-9]{0,14})"
_SIGNATURE_INPUT = re.compile(
    re.escape(f"{LABEL}=")
    + "("
    + re.escape(_COMPONENT_LIST)
    + rf"(?:;[a-z][a-z0-9_.*-]*=(?:{_SF_UINT}|{_SF_STRING}))+)"
)
_PARAM = re.compile(rf";([a-z][a-z0-9_.*-]*)=({_SF_UINT}|{_SF_STRING})")
_SIGNATURE = re.compile(re.escape(f"{LABEL}=") + r":([A-Za-z0-9+/]{86}==):")
_DIGEST = re.compile(r"sha-256=:([A-Za-z0-9+/]{43}=):")
_KEY_ID = re.compile(r"[0-9a-f]{64}")
_NONCE = re.compile(r"[A-Za-z0-9_-]{22,128}")
_PARAM_NAMES = frozenset({"created", "nonce", "keyid", "alg"})


@dataclass(frozen=True, slots=True)
class SignatureParams:
    """The verified signature parameters; the server checks ``nonce`` against replays."""

    keyid: str
    created: int
    nonce: str
    alg: str


@runtime_checkable
class Signer(Protocol):
    """A device identity that signs without handing over its private key (e.g. in a PKCS#11 token)."""

    def public_key(self) -> ec.EllipticCurvePublicKey: ...

    def sign_raw(self, message: bytes) -> bytes:
        """ECDSA P-256 / SHA-256 over ``message`` as r‖s (64 bytes)."""
        ...


def key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """Lowercase hex SHA-256 of the DER SubjectPublicKeyInfo."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def content_digest(body: bytes) -> str:
    """RFC 9530 ``Content-Digest`` value for ``body`` with sha-256."""
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode("ascii") + ":"


def signature_base(components: list[tuple[str, str]], signature_params: str) -> bytes:
    """RFC 9421 §2.5: ``"name": value`` per covered component, then the ``@signature-params`` line."""
    lines = [f'"{name}": {value}' for name, value in components]
    lines.append(f'"@signature-params": {signature_params}')
    return "\n".join(lines).encode("ascii")


def sign_raw(private_key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    """ECDSA P-256 / SHA-256 signature as r‖s (RFC 9421 §3.3.4)."""
    r, s = decode_dss_signature(private_key.sign(message, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def verify_raw(public_key: ec.EllipticCurvePublicKey, signature: bytes, message: bytes) -> bool:
    """Check an r‖s ECDSA P-256 / SHA-256 signature."""
    if len(signature) != 64:
        return False
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        public_key.verify(der, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def _base(method: str, path: str, digest: str, params: str) -> bytes:
    return signature_base([("@method", method), ("@path", path or "/"), ("content-digest", digest)], params)


def sign_request(
    *,
    private_key: ec.EllipticCurvePrivateKey | Signer,
    method: str,
    path: str,
    body: bytes,
    created: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The ``Content-Digest``, ``Signature-Input`` and ``Signature`` headers for one request.

    ``created`` defaults to now, ``nonce`` to 16 fresh random bytes in unpadded base64url.
    ``private_key`` is a ``cryptography`` key (a file identity) or a :class:`Signer` (a token's).
    """
    if created is None:
        created = int(time.time())
    if nonce is None:
        nonce = base64.urlsafe_b64encode(os.urandom(NONCE_BYTES)).rstrip(b"=").decode("ascii")
    if not _NONCE.fullmatch(nonce):
        raise ValueError("nonce must be 22..128 base64url characters")
    digest = content_digest(body)
    params = (
        f'{_COMPONENT_LIST};created={int(created)};nonce="{nonce}"'
        f';keyid="{key_id(private_key.public_key())}";alg="{ALGORITHM}"'
    )
    base = _base(method.upper(), path, digest, params)
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        signature = sign_raw(private_key, base)
    else:
        signature = private_key.sign_raw(base)
    return {
        "Content-Digest": digest,
        "Signature-Input": f"{LABEL}={params}",
        "Signature": f"{LABEL}=:{base64.b64encode(signature).decode('ascii')}:",
    }


def _lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        if key in out and out[key] != value:
            raise SignatureError(SIGNATURE_MALFORMED, f"header {key} appears twice")
        out[key] = value
    return out


def verify_request(
    *,
    method: str,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    resolve_key: Callable[[str], ec.EllipticCurvePublicKey | None],
    now: float,
    max_skew: int = 300,
) -> SignatureParams:
    """Verify the request signature; return its parameters or raise :class:`SignatureError`."""
    # 1. The three headers, looked up case-insensitively.
    h = _lower_headers(headers)
    sig_input = h.get("signature-input")
    sig_value = h.get("signature")
    if sig_input is None or sig_value is None:
        raise SignatureError(SIGNATURE_MISSING, "Signature-Input and Signature headers are required")
    digest_header = h.get("content-digest")
    if digest_header is None:
        raise SignatureError(SIGNATURE_MALFORMED, "the Content-Digest header is required")

    # 2. Exactly this profile's form.
    sig_input, sig_value, digest_header = sig_input.strip(), sig_value.strip(), digest_header.strip()
    if len(sig_input) > MAX_HEADER or len(sig_value) > MAX_HEADER or len(digest_header) > MAX_HEADER:
        raise SignatureError(SIGNATURE_MALFORMED, "signature header too long")
    match = _SIGNATURE_INPUT.fullmatch(sig_input)
    if match is None:
        raise SignatureError(
            SIGNATURE_MALFORMED,
            f'Signature-Input must be {LABEL}={_COMPONENT_LIST};created=…;nonce="…";keyid="…";alg="{ALGORITHM}"',
        )
    params_text = match.group(1)
    params: dict[str, str] = {}
    for name, value in _PARAM.findall(params_text[len(_COMPONENT_LIST) :]):
        if name in params:
            raise SignatureError(SIGNATURE_MALFORMED, f"signature parameter {name} appears twice")
        params[name] = value
    if set(params) != _PARAM_NAMES:
        raise SignatureError(
            SIGNATURE_MALFORMED, "signature parameters must be exactly created, nonce, keyid, alg"
        )
    created_text = params["created"]
    if created_text.startswith('"'):
        raise SignatureError(SIGNATURE_MALFORMED, "created must be an integer")
    strings = {}
    for name in ("nonce", "keyid", "alg"):
        if not params[name].startswith('"'):
            raise SignatureError(SIGNATURE_MALFORMED, f"{name} must be a string")
        strings[name] = params[name][1:-1]
    if strings["alg"] != ALGORITHM:
        raise SignatureError(SIGNATURE_MALFORMED, f"alg must be {ALGORITHM}")
    if not _KEY_ID.fullmatch(strings["keyid"]):
        raise SignatureError(SIGNATURE_MALFORMED, "keyid must be 64 lowercase hex digits")
    if not _NONCE.fullmatch(strings["nonce"]):
        raise SignatureError(SIGNATURE_MALFORMED, "nonce must be 22..128 base64url characters (≥ 16 bytes)")
    sig_match = _SIGNATURE.fullmatch(sig_value)
    if sig_match is None:
        raise SignatureError(SIGNATURE_MALFORMED, f"Signature must be {LABEL}=:<base64 of 64 bytes>:")
    digest_match = _DIGEST.fullmatch(digest_header)
    if digest_match is None:
        raise SignatureError(SIGNATURE_MALFORMED, "Content-Digest must be sha-256=:<base64 of 32 bytes>:")
    try:
        signature = base64.b64decode(sig_match.group(1), validate=True)
        claimed = base64.b64decode(digest_match.group(1), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(SIGNATURE_MALFORMED, "bad base64 in Signature or Content-Digest") from None

    # 3. Freshness.
    created = int(created_text)
    if abs(now - created) > max_skew:
        raise SignatureError(STALE, f"created is more than {max_skew} s away from the server's clock")

    # 4. The body is the one that was signed.
    if not hmac.compare_digest(claimed, hashlib.sha256(body).digest()):
        raise SignatureError(DIGEST_MISMATCH, "Content-Digest does not match the body")

    # 5. The key (resolve_key may itself refuse, e.g. device_suspended).
    keyid = strings["keyid"]
    public_key = resolve_key(keyid)
    if public_key is None:
        raise SignatureError(UNKNOWN_KEY, "no device has this key")
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP256R1
    ):
        raise SignatureError(UNKNOWN_KEY, "the key registered under this keyid is not ECDSA P-256")

    # 6. The signature over the base rebuilt from this request.
    base = _base(method.upper(), path, digest_header, params_text)
    if not verify_raw(public_key, signature, base):
        raise SignatureError(BAD_SIGNATURE, "the signature does not verify")
    return SignatureParams(keyid=keyid, created=created, nonce=strings["nonce"], alg=ALGORITHM)
