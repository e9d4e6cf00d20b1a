"""The GlobalPlatform ``7F21`` form of the CA's certificates (Amd F §6.1; Amd A CERT.CASD.ECKA).

Built with ``gp.gpcert.GPCertificate`` and signed by the same ``Signer`` as the X.509 form: the
signer signs the certificate's TLVs without ``5F37`` (Amd F Table 6-2) with ECDSA P-256/SHA-256,
DER-encoded, which is what ``GPCertificate.sign`` produces with a private key.

Field choices (the X.509 twin carries the same facts):
- ``93`` serial: the X.509 serial number, 16 bytes big-endian;
- ``42`` CA identifier: the CA's ``kloc_id`` (20-byte SHA-1 key identifier, as in Samsung's
  test certificates and the X.509 authority key identifier) — load the CA key into a card's ISD
  (DGI ``7F49``) with this identifier so P1 = 00 finds it;
- ``5F20`` subject: a CASD's SE serial (its bytes when hex, else UTF-8); an OCE's organisation id
  (16 bytes of its UUID);
- ``95`` key usage ``00 80`` (key agreement) for both: a card checks an SCP11 leaf for exactly that;
- ``5F25``/``5F24`` effective and expiry dates (UTC days, BCD), ``7F49 {B0 point, F0 00}``.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric import ec

from gp.gpcert import KEY_USAGE_AGREEMENT, GPCertificate
from keys.signing import Signer

SERIAL_BYTES = 16


def se_subject_identifier(serial: str) -> bytes:
    """A CASD certificate's subject identifier: the SE serial's bytes when hex, else its UTF-8."""
    text = serial.strip()
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    return raw or text.encode()


def gp_certificate_build(
    *,
    signer: Signer,
    ca_identifier: bytes,
    serial: int,
    subject_identifier: bytes,
    public_key: ec.EllipticCurvePublicKey,
    not_before: datetime,
    not_after: datetime,
) -> bytes:
    """A signed ``7F21`` certificate (key agreement) of ``public_key``."""
    unsigned = GPCertificate(
        serial=serial.to_bytes(SERIAL_BYTES, "big"),
        ca_identifier=ca_identifier,
        subject_identifier=subject_identifier,
        key_usage=KEY_USAGE_AGREEMENT,
        effective=not_before.date(),
        expiry=not_after.date(),
        public_key=public_key,
    )
    signed = dataclasses.replace(unsigned, signature=signer.sign(unsigned.tbs_bytes()))
    return signed.to_bytes()
