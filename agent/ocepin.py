"""The CA root pinned at enrolment, and the agent's own check of a confidential envelope's OCE
signature (docs/tee-bridge.md §8.4).

A provider's confidential key reaches the token in an envelope signed with the provider's OCE key
(:func:`agent.tokenops.envelope_signed_data`), with the OCE certificate chain. The portal checks it
before the job exists; with a root pinned here the agent checks it again, so a compromised portal
cannot hand the token a provider SD's key from a sender the CA never certified: the chain must
verify to the pinned root (signatures, validity dates, key usage: :func:`gp.gpcert.verify_chain`)
and the signature must verify with the leaf's key over this device's id and the envelope.

The root is pinned by ``agent init --ca-root FILE|URL`` (or ``agent pin-ca-root``): its DER is
written beside the configuration and the ``[token]`` table names it (``oce_root``). A root fetched
from a URL must match ``--ca-root-sha256`` (the portal that serves it is what the pin guards
against). This module is imported only when a confidential envelope arrives, by ``doctor`` and by
the pinning commands: ``cryptography.x509`` and :mod:`gp.gpcert` stay out of the agent's start-up.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from agent.errors import ConfigError

__all__ = [
    "MAX_ROOT_BYTES",
    "OceUnverified",
    "PinnedRoot",
    "fetch_root",
    "fingerprint",
    "load_root",
    "parse_root",
    "verify_envelope",
    "write_root",
]

MAX_ROOT_BYTES = 16 * 1024
MAX_CHAIN = 4
MAX_CERT_BYTES = 2048
MAX_SIGNATURE_BYTES = 80


class OceUnverified(ValueError):
    """The envelope's OCE chain or signature does not verify against the pinned root (message: why)."""


@dataclass(frozen=True, slots=True)
class PinnedRoot:
    der: bytes
    sha256: str  # lower-case hex of the DER
    public_key: ec.EllipticCurvePublicKey
    subject: str


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def parse_root(data: bytes, *, what: str = "CA root") -> PinnedRoot:
    """An X.509 CA certificate, DER or PEM, with an EC public key → :class:`PinnedRoot`.
    :class:`ConfigError` names what is wrong."""
    data = bytes(data)
    if not data or len(data) > MAX_ROOT_BYTES:
        raise ConfigError(f"{what}: not a certificate (empty or over {MAX_ROOT_BYTES} bytes)")
    try:
        cert = (
            x509.load_pem_x509_certificate(data)
            if data.lstrip().startswith(b"-----BEGIN")
            else x509.load_der_x509_certificate(data)
        )
    except ValueError:
        raise ConfigError(f"{what}: not an X.509 certificate (DER or PEM)") from None
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ConfigError(f"{what}: the certificate's key is not an EC key (Tessera's CA roots are P-256)")
    try:
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        basic = None
    if basic is None or not basic.ca:
        raise ConfigError(f"{what}: not a CA certificate (basicConstraints CA is not set)")
    der = cert.public_bytes(Encoding.DER)
    return PinnedRoot(der=der, sha256=fingerprint(der), public_key=key, subject=cert.subject.rfc4514_string())


def load_root(path: Path) -> PinnedRoot:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"oce_root: cannot read {path}: {e.strerror}") from None
    return parse_root(data, what=f"oce_root {path}")


def verify_envelope(root: PinnedRoot, envelope: Any, device_id: bytes, oce: dict[str, Any]) -> str:
    """Check ``oce`` (``{"certificates": [hex, leaf last], "signature": hex}``) for ``envelope`` on
    this device against ``root``; returns the leaf's serial (hex). :class:`OceUnverified` if not.

    Not checked here (the portal does, from its records): revocation, and that the leaf is an OCE
    certificate rather than another key-agreement certificate of the same CA (a CASD's private
    key stays in its SE or token and signs nothing)."""
    from agent.tokenops import envelope_signed_data
    from gp import gpcert

    certificates, signature = oce.get("certificates"), oce.get("signature")
    try:
        chain = [bytes.fromhex(c) for c in certificates]  # type: ignore[union-attr]
        sig = bytes.fromhex(signature)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise OceUnverified("the OCE certificates and signature must be hex") from None
    try:
        leaf = gpcert.verify_chain(chain, root.public_key)
    except gpcert.CertificateError as e:
        raise OceUnverified(f"the OCE chain does not verify to the pinned CA root: {e.message}") from None
    try:
        leaf.public_key.verify(sig, envelope_signed_data(envelope, device_id), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise OceUnverified(
            "the envelope's OCE signature does not verify (made for another device, altered, or signed "
            "by another key)"
        ) from None
    return leaf.serial.hex().upper()


def fetch_root(source: str, *, expected_sha256: str | None, ca_file: Path | None = None) -> PinnedRoot:
    """The root from a file (DER or PEM) or an http(s) URL (e.g. the portal's
    ``/api/v1/ca/<id>/root/``). A URL needs ``expected_sha256`` (lower- or upper-case hex of the
    DER, as the CA publishes it): the pin guards against the very server that would serve it. A
    file's fingerprint is checked too when one is given."""
    expected = None
    if expected_sha256 is not None:
        expected = expected_sha256.strip().lower().replace(":", "")
        if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
            raise ConfigError("--ca-root-sha256: must be the SHA-256 of the root's DER, 64 hex digits")
    if source.startswith(("https://", "http://")):
        if expected is None:
            raise ConfigError(
                "--ca-root URL: give --ca-root-sha256 too (the root's fingerprint, from the CA, not "
                "from the server that serves it)"
            )
        import ssl
        import urllib.error
        import urllib.request

        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        try:
            with urllib.request.urlopen(source, timeout=15, context=context) as response:  # noqa: S310
                data = response.read(MAX_ROOT_BYTES + 1)
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise ConfigError(f"--ca-root: cannot fetch {source}: {getattr(e, 'reason', e)}") from None
        root = parse_root(data, what=f"--ca-root {source}")
    else:
        path = Path(source).expanduser()
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ConfigError(f"--ca-root: cannot read {path}: {e.strerror}") from None
        root = parse_root(data, what=f"--ca-root {path}")
    if expected is not None and root.sha256 != expected:
        raise ConfigError(
            f"--ca-root: the root's SHA-256 is {root.sha256}, not the expected {expected}: not pinned"
        )
    return root


def write_root(path: Path, root: PinnedRoot) -> Path:
    """Write the root's DER to ``path`` atomically (mode 0644: public, but only its owner writes it)."""
    import os

    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(root.der)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path
