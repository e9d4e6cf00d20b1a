"""Manufacturing hand-over: an SE's ISD keys wrapped to the SE issuer's import key (no Django).

The SE supplier (SES) never ships ISD keys in clear. For each SE it builds a *wrapped ISD key set*
that only the SE issuer's (SEI's) import key opens, and a batch record carrying it with the SE's
identity and its CASD public key. Tessera publishes each SEI's import public key; the SEI's vault
holds the private key and opens wrapped key sets inside the vault only (``keys.handover``).

This module is the format, shared by both sides like ``agent.protocol`` is (byte by byte in
``docs/manufacturing-handover.md``), and the supplier's tooling:

1. ``Z`` = ECDH(ephemeral P-256 private key, import public key) — the shared x-coordinate.
2. ``KEK`` = ANSI X9.63 KDF with SHA-256 (SEC 1 §3.6.1) of ``Z``, 32 bytes, with ``SharedInfo``
   binding the format version, key length, SEI, SE serial, ISD AID, KVN, the import key id, the
   ephemeral public key and the key check values (:func:`shared_info`).
3. ``wrapped`` = AES key wrap (RFC 3394) under ``KEK`` of Key-ENC ‖ Key-MAC ‖ Key-DEK.
4. The blob: version ‖ key length ‖ import key id ‖ ephemeral point ‖ KCVs ‖ wrapped.

Everything in the clear part of the blob (and everything the batch row says about the SE) is in
``SharedInfo``: changing any of it changes the KEK, and RFC 3394's integrity check refuses the
unwrap. The KCVs in clear let anyone holding the keys check them, and the SEI's vault compares
them with the unwrapped keys before accepting.

``python -m gp.card.manufacture --import-key PEM --sei SLUG --count N --dir DIR`` creates ``N``
software SEs in ``DIR`` and prints their batch (JSON, or CSV with ``--format csv``) for the SE
supplier's batch upload.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import csv
import hashlib
import io
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from gp.errors import GPError
from gp.scp03 import StaticKeys, kcv

__all__ = [
    "FORMAT_VERSION",
    "HandoverError",
    "HandoverFormatError",
    "WrappedIsdKeys",
    "batch_record",
    "casd_public_key_of",
    "decode_wrapped",
    "import_key_id",
    "load_import_public_key",
    "open_wrapped_isd_keys",
    "parse_wrapped_isd_keys",
    "shared_info",
    "wrap_isd_keys",
]

FORMAT_VERSION = 0x01
LABEL = b"tessera/isd-handover/v1"
KEY_LENGTHS = (16, 24, 32)
POINT_BYTES = 65  # uncompressed P-256: 04 ‖ X ‖ Y
KEY_ID_BYTES = 32
KCV_BYTES = 9  # three KCVs of 3 bytes
HEADER_BYTES = 1 + 1 + KEY_ID_BYTES + POINT_BYTES + KCV_BYTES  # 108
MAX_TEXT = 2 * (HEADER_BYTES + 3 * 32 + 8)  # the longest blob, as hex
_HEX = re.compile(r"^[0-9A-Fa-f]+$")

# Batch columns, in order (the SE supplier's batch upload reads the same names).
BATCH_COLUMNS = (
    "serial",
    "isd_aid",
    "kvn",
    "i_param",
    "sequence_counter",
    "wrapped_isd_keys",
    "casd_public_key",
    "cplc",
    "device_manufacturer",
    "device_serial",
)


class HandoverError(GPError):
    """A wrapped ISD key set does not open: wrong import key, altered, or bound to another SE."""


class HandoverFormatError(HandoverError):
    """A wrapped ISD key set (or its text form, or an import key) is malformed."""


# --- keys and identifiers ---------------------------------------------------------------------


def import_key_id(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """The import key's id: SHA-256 of its DER SubjectPublicKeyInfo (32 bytes)."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).digest()


def load_import_public_key(pem: bytes | str) -> ec.EllipticCurvePublicKey:
    """An SEI import public key from PEM (SubjectPublicKeyInfo, EC P-256), or ``HandoverFormatError``."""
    data = pem.encode("ascii", "replace") if isinstance(pem, str) else bytes(pem)
    try:
        key = serialization.load_pem_public_key(data.strip())
    except (ValueError, TypeError):
        raise HandoverFormatError("the import key is not a PEM public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise HandoverFormatError("the import key must be an EC P-256 public key")
    return key


def _text(value: str, what: str) -> bytes:
    raw = value.encode("ascii", "strict") if value.isascii() else b""
    if not raw or len(raw) > 255:
        raise HandoverFormatError(f"{what} must be 1-255 ASCII characters")
    return raw


def shared_info(
    *,
    key_length: int,
    sei: str,
    serial: str,
    isd_aid: bytes,
    kvn: int,
    key_id: bytes,
    ephemeral_point: bytes,
    kcvs: bytes,
    version: int = FORMAT_VERSION,
) -> bytes:
    """The X9.63 KDF's SharedInfo: every field of the blob's clear part and of the SE it is for.

    ``L(x)`` below is one length byte then ``x``::

        L(LABEL) ‖ version ‖ key_length ‖ L(sei) ‖ L(SERIAL upper-cased) ‖ L(isd_aid) ‖ kvn ‖
        key_id (32) ‖ ephemeral point (65) ‖ KCVs (9)
    """
    if not 1 <= len(isd_aid) <= 16:
        raise HandoverFormatError("the ISD AID must be 1-16 bytes")
    if not 0 <= kvn <= 0xFF:
        raise HandoverFormatError("the KVN must be one byte")
    parts = [
        bytes([len(LABEL)]) + LABEL,
        bytes([version, key_length]),
        _len_prefixed(_text(sei, "the SE issuer's short name")),
        _len_prefixed(_text(serial.strip().upper(), "the SE serial")),
        _len_prefixed(bytes(isd_aid)),
        bytes([kvn]),
        bytes(key_id),
        bytes(ephemeral_point),
        bytes(kcvs),
    ]
    return b"".join(parts)


def _len_prefixed(raw: bytes) -> bytes:
    return bytes([len(raw)]) + raw


def _kek(shared_secret: bytes, info: bytes) -> bytes:
    return X963KDF(algorithm=hashes.SHA256(), length=32, sharedinfo=info).derive(shared_secret)


def _kcvs(keys: StaticKeys) -> bytes:
    return kcv(keys.enc) + kcv(keys.mac) + kcv(keys.dek)


# --- the blob -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrappedIsdKeys:
    """A parsed wrapped ISD key set (no secret in it: the keys are still wrapped)."""

    version: int
    key_length: int
    key_id: bytes
    ephemeral_point: bytes
    kcvs: bytes
    wrapped: bytes

    @property
    def kcv_hex(self) -> dict[str, str]:
        k = self.kcvs.hex().upper()
        return {"enc": k[0:6], "mac": k[6:12], "dek": k[12:18]}

    def encode(self) -> bytes:
        return (
            bytes([self.version, self.key_length])
            + self.key_id
            + self.ephemeral_point
            + self.kcvs
            + self.wrapped
        )


def wrap_isd_keys(
    keys: StaticKeys,
    *,
    import_public_key: ec.EllipticCurvePublicKey,
    sei: str,
    serial: str,
    isd_aid: bytes,
    kvn: int,
    ephemeral_private_key: ec.EllipticCurvePrivateKey | None = None,
) -> bytes:
    """The SE supplier's side: the wrapped ISD key set for one SE (``ephemeral_private_key`` is
    injectable for reproducible examples; never reuse one for two SEs)."""
    if not isinstance(import_public_key, ec.EllipticCurvePublicKey) or not isinstance(
        import_public_key.curve, ec.SECP256R1
    ):
        raise HandoverFormatError("the import key must be an EC P-256 public key")
    eph = ephemeral_private_key or ec.generate_private_key(ec.SECP256R1())
    point = eph.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    key_id = import_key_id(import_public_key)
    kcvs = _kcvs(keys)
    info = shared_info(
        key_length=keys.key_length,
        sei=sei,
        serial=serial,
        isd_aid=isd_aid,
        kvn=kvn,
        key_id=key_id,
        ephemeral_point=point,
        kcvs=kcvs,
    )
    kek = _kek(eph.exchange(ec.ECDH(), import_public_key), info)
    wrapped = aes_key_wrap(kek, keys.enc + keys.mac + keys.dek)
    return WrappedIsdKeys(FORMAT_VERSION, keys.key_length, key_id, point, kcvs, wrapped).encode()


def parse_wrapped_isd_keys(blob: bytes) -> WrappedIsdKeys:
    """Split a wrapped ISD key set into its fields, checking every length; ``HandoverFormatError``."""
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise HandoverFormatError("a wrapped ISD key set is bytes")
    blob = bytes(blob)
    if len(blob) < 2:
        raise HandoverFormatError("a wrapped ISD key set starts with a version byte and a key length")
    version, n = blob[0], blob[1]
    if version != FORMAT_VERSION:
        raise HandoverFormatError(f"unknown wrapped ISD key set version {version:#04x} (this reads 0x01)")
    if n not in KEY_LENGTHS:
        raise HandoverFormatError(f"key length {n} is not 16, 24 or 32")
    expected = HEADER_BYTES + 3 * n + 8
    if len(blob) != expected:
        raise HandoverFormatError(
            f"a wrapped ISD key set of {n}-byte keys is {expected} bytes, not {len(blob)}"
        )
    at = 2
    key_id = blob[at : at + KEY_ID_BYTES]
    at += KEY_ID_BYTES
    point = blob[at : at + POINT_BYTES]
    at += POINT_BYTES
    if point[0] != 0x04:
        raise HandoverFormatError("the ephemeral public key must be an uncompressed point (04 ‖ X ‖ Y)")
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError:
        raise HandoverFormatError("the ephemeral public key is not a point on P-256") from None
    kcvs = blob[at : at + KCV_BYTES]
    at += KCV_BYTES
    return WrappedIsdKeys(version, n, key_id, point, kcvs, blob[at:])


def decode_wrapped(text: str) -> bytes:
    """The bytes of a wrapped ISD key set written as hex or base64 (only hex digits: read as hex)."""
    if not isinstance(text, str):
        raise HandoverFormatError("a wrapped ISD key set is written as hex or base64 text")
    value = "".join(text.split())
    if not value or len(value) > MAX_TEXT:
        raise HandoverFormatError(f"a wrapped ISD key set is 1-{MAX_TEXT} characters of hex or base64")
    try:
        if _HEX.match(value) and len(value) % 2 == 0:
            return bytes.fromhex(value)
        return base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        raise HandoverFormatError("a wrapped ISD key set must be hex or base64") from None


def open_wrapped_isd_keys(
    wrapped: WrappedIsdKeys,
    *,
    private_key: ec.EllipticCurvePrivateKey,
    sei: str,
    serial: str,
    isd_aid: bytes,
    kvn: int,
) -> StaticKeys:
    """The SEI's side: the ISD keys, checked against their KCVs. Call it only where the import
    private key may be (``keys.handover.unwrap_isd_keys``, inside the vault path).

    Raises ``HandoverError`` when the blob was made for another import key, SEI, SE, AID or KVN,
    or was altered, and when the keys inside do not match the KCVs it carries.
    """
    if import_key_id(private_key.public_key()) != wrapped.key_id:
        raise HandoverError("the keys were wrapped to another import key")
    info = shared_info(
        key_length=wrapped.key_length,
        sei=sei,
        serial=serial,
        isd_aid=isd_aid,
        kvn=kvn,
        key_id=wrapped.key_id,
        ephemeral_point=wrapped.ephemeral_point,
        kcvs=wrapped.kcvs,
        version=wrapped.version,
    )
    peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), wrapped.ephemeral_point)
    kek = _kek(private_key.exchange(ec.ECDH(), peer), info)
    try:
        plain = aes_key_unwrap(kek, wrapped.wrapped)
    except InvalidUnwrap:
        raise HandoverError(
            "the wrapped ISD keys do not open: altered, or made for another SE issuer, SE serial, ISD AID or KVN"
        ) from None
    n = wrapped.key_length
    if len(plain) != 3 * n:
        raise HandoverError("the wrapped ISD keys have the wrong length")
    keys = StaticKeys(enc=plain[:n], mac=plain[n : 2 * n], dek=plain[2 * n :])
    if _kcvs(keys) != wrapped.kcvs:
        raise HandoverError("the unwrapped ISD keys do not match the key check values the record carries")
    return keys


# --- the supplier's batch record ------------------------------------------------------------------


def casd_public_key_of(card: Any) -> ec.EllipticCurvePublicKey | None:
    """The card's CASD public key, when the software SE has one (``SoftCard.casd_public_key``)."""
    getter = getattr(card, "casd_public_key", None)
    if getter is None:
        return None
    try:
        key = getter() if callable(getter) else getter
    except GPError:  # a card created before it had a CASD
        return None
    return key if isinstance(key, ec.EllipticCurvePublicKey) else None


def _card_isd(card: Any) -> tuple[bytes, str, int, int, int, StaticKeys, bytes]:
    """(ISD AID, serial, KVN, i, sequence counter, keys, CPLC) of a SoftCard's first SCP03 key set."""
    from gp.commands.get_data import CPLC

    state = card._state  # the software SE's own package: it may read its state
    isd = state.isd
    for kvn in sorted(isd.keys.sets):
        keyset = isd.keys.sets[kvn]
        keys = keyset.scp03()
        if keys is not None:
            serial = CPLC.parse(state.cplc).ic_serial_number.hex().upper()
            return (
                bytes(state.isd_aid),
                serial,
                kvn,
                state.i_param,
                keyset.sequence_counter,
                keys,
                bytes(state.cplc),
            )
    raise HandoverError("the card's ISD holds no SCP03 key set")


def batch_record(
    card: Any,
    *,
    import_public_key: ec.EllipticCurvePublicKey,
    sei: str,
    serial: str | None = None,
    casd_public_key: ec.EllipticCurvePublicKey | None = None,
    device_manufacturer: str = "",
    device_serial: str = "",
    ephemeral_private_key: ec.EllipticCurvePrivateKey | None = None,
) -> dict[str, Any]:
    """One row of the SE supplier's batch for a software SE: its identity, its ISD keys wrapped to
    ``import_public_key`` for SE issuer ``sei``, and its CASD public key (``casd_public_key``, else
    the card's own when it has one). No key is in clear in the result."""
    aid, card_serial, kvn, i_param, counter, keys, cplc = _card_isd(card)
    serial = (serial or card_serial).strip().upper()
    blob = wrap_isd_keys(
        keys,
        import_public_key=import_public_key,
        sei=sei,
        serial=serial,
        isd_aid=aid,
        kvn=kvn,
        ephemeral_private_key=ephemeral_private_key,
    )
    casd = casd_public_key or casd_public_key_of(card)
    row: dict[str, Any] = {
        "serial": serial,
        "isd_aid": aid.hex().upper(),
        "kvn": kvn,
        "i_param": i_param,
        "sequence_counter": counter,
        "wrapped_isd_keys": blob.hex().upper(),
        "cplc": cplc.hex().upper(),
    }
    if casd is not None:
        row["casd_public_key"] = (
            casd.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
            .hex()
            .upper()
        )
    if device_manufacturer or device_serial:
        row["device_manufacturer"] = device_manufacturer
        row["device_serial"] = device_serial
    return row


def batch_csv(rows: Sequence[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[c for c in BATCH_COLUMNS if any(c in r for r in rows)])
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return out.getvalue()


# --- the command line ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gp.card.manufacture",
        description="Manufacture software SEs and print their hand-over batch (ISD keys wrapped to the SEI).",
    )
    p.add_argument("--import-key", required=True, type=Path, help="the SEI's import public key (PEM)")
    p.add_argument("--sei", required=True, help="the SE issuer's short name (slug) in Tessera")
    p.add_argument("--count", required=True, type=int, help="how many software SEs to create")
    p.add_argument("--dir", required=True, type=Path, help="directory for the card files (created)")
    p.add_argument("--format", choices=("json", "csv"), default="json")
    p.add_argument("--isd-aid", default="A000000151000000")
    p.add_argument("--kvn", type=lambda s: int(s, 0), default=0x30)
    p.add_argument("--key-length", type=int, choices=KEY_LENGTHS, default=16)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from gp.card.softcard import SoftCard

    args = _parser().parse_args(argv)
    if not 1 <= args.count <= 10_000:
        print("manufacture: --count must be 1-10000", file=sys.stderr)
        return 2
    try:
        import_key = load_import_public_key(args.import_key.read_bytes())
        aid = bytes.fromhex(args.isd_aid)
    except OSError as e:
        print(f"manufacture: cannot read {args.import_key}: {e.strerror}", file=sys.stderr)
        return 2
    except (HandoverFormatError, ValueError) as e:
        print(f"manufacture: {e}", file=sys.stderr)
        return 2
    args.dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for _ in range(args.count):
        n = args.key_length
        keys = StaticKeys(os.urandom(n), os.urandom(n), os.urandom(n))
        serial = os.urandom(4)
        path = args.dir / f"se-{serial.hex().upper()}.se"
        if path.exists():
            print(f"manufacture: {path} exists; use an empty directory", file=sys.stderr)
            return 2
        card = SoftCard.create(str(path), isd_aid=aid, keys=keys, key_version=args.kvn, serial=serial)
        rows.append(batch_record(card, import_public_key=import_key, sei=args.sei))
        card.close()
    if args.format == "csv":
        sys.stdout.write(batch_csv(rows))
    else:
        print(json.dumps({"secure_elements": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
