"""Print the worked example of docs/key-loading-package.md §7 (fixed keys, deterministic ECDSA).

    .venv/bin/python docs/tools/keyload_example.py

The block it prints is pasted verbatim between the ``example:begin`` / ``example:end`` markers of
the document; ``tests/gp/test_keyload.py`` regenerates it and fails when the two differ.  Every
value is recomputed here step by step with ``cryptography`` next to :mod:`gp.keyload` (which
builds the package), so the document shows the intermediate values an implementer needs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import sys
from dataclasses import replace
from pathlib import Path

from cryptography.hazmat.primitives import cmac, hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gp import keyload  # noqa: E402
from gp.gpcert import KEY_USAGE_AGREEMENT, GPCertificate  # noqa: E402
from gp.scp03 import kcv  # noqa: E402

WIDTH = 64  # hex digits per line


def scalar(label: str) -> int:
    """A fixed private scalar: SHA-256 of a label, as an integer (below the P-256 order)."""
    return int.from_bytes(hashlib.sha256(label.encode()).digest(), "big")


CA_KLOC_SCALAR = scalar("tessera keyload example: CA-KLOC")
OCE_SCALAR = scalar("tessera keyload example: OCE")
CASD_SCALAR = scalar("tessera keyload example: CASD")
EPHEMERAL_SCALAR = scalar("tessera keyload example: ephemeral")
SE_ID = bytes.fromhex("5345000000000001")
SD_AID = bytes.fromhex("A000000151535001")
KVN = 0x30
COUNTER = 1
ENC = bytes(range(0x40, 0x50))
MAC = bytes(range(0x50, 0x60))
DEK = bytes(range(0x60, 0x70))


def private_key(value: int) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(value, ec.SECP256R1())


def point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def oce_certificate() -> bytes:
    """The OCE's GP certificate (Amd F §6.1), signed by the CA-KLOC with deterministic ECDSA."""
    unsigned = GPCertificate(
        serial=bytes.fromhex("01"),
        ca_identifier=b"CA-KLOC",
        subject_identifier=b"PROVIDER-SP2",
        key_usage=KEY_USAGE_AGREEMENT,
        expiry=dt.date(2049, 12, 31),
        public_key=private_key(OCE_SCALAR).public_key(),
        effective=dt.date(2025, 1, 1),
    )
    signature = private_key(CA_KLOC_SCALAR).sign(
        unsigned.tbs_bytes(), ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
    )
    return replace(unsigned, signature=signature).to_bytes()


def values() -> list[tuple[str, bytes]]:
    """Every named value of the example, in the document's order."""
    ca, oce, casd, eph = (private_key(s) for s in (CA_KLOC_SCALAR, OCE_SCALAR, CASD_SCALAR, EPHEMERAL_SCALAR))
    cert = oce_certificate()
    built = keyload.build_package_with_receipt(
        casd_public_key=casd.public_key(),
        se_id=SE_ID,
        sd_aid=SD_AID,
        kvn=KVN,
        keys=(ENC, MAC, DEK),
        counter=COUNTER,
        oce_private_key=oce,
        oce_certificates=[cert],
        ephemeral_private_key=eph,
    )
    # The same steps by hand, for the intermediate values.
    z = eph.exchange(ec.ECDH(), casd.public_key())
    info = keyload.shared_info(se_id=SE_ID, sd_aid=SD_AID, kvn=KVN, counter=COUNTER, key_length=16)
    receipt_key, kek = keyload.derive_keys(z, info, 16)
    package = keyload.parse_package(built.package)
    kcvs = b"".join(kcv(k) for k in (ENC, MAC, DEK))
    rinput = keyload.receipt_input(se_id=SE_ID, sd_aid=SD_AID, kvn=KVN, counter=COUNTER, kcvs=package.kcvs)
    c = cmac.CMAC(algorithms.AES(receipt_key))
    c.update(rinput)
    receipt = c.finalize()
    assert receipt == built.expected_receipt
    assert aes_key_wrap(kek, ENC + MAC + DEK) == package.wrapped_keys
    return [
        ("ca_kloc_private_key", CA_KLOC_SCALAR.to_bytes(32, "big")),
        ("ca_kloc_public_key", point(ca.public_key())),
        ("oce_private_key", OCE_SCALAR.to_bytes(32, "big")),
        ("oce_public_key", point(oce.public_key())),
        ("oce_certificate", cert),
        ("casd_private_key", CASD_SCALAR.to_bytes(32, "big")),
        ("casd_public_key", point(casd.public_key())),
        ("ephemeral_private_key", EPHEMERAL_SCALAR.to_bytes(32, "big")),
        ("ephemeral_public_key", point(eph.public_key())),
        ("se_id", SE_ID),
        ("sd_aid", SD_AID),
        ("kvn", bytes([KVN])),
        ("counter", COUNTER.to_bytes(8, "big")),
        ("key_enc", ENC),
        ("key_mac", MAC),
        ("key_dek", DEK),
        ("kcvs", kcvs),
        ("shared_secret_z", z),
        ("shared_info", info),
        ("kdf_output", receipt_key + kek),
        ("receipt_key", receipt_key),
        ("kek", kek),
        ("wrapped_keys", package.wrapped_keys),
        ("signature_input", package.signed_data),
        ("signature_input_sha256", hashlib.sha256(package.signed_data).digest()),
        ("signature", package.signature),
        ("package", built.package),
        ("receipt_input", rinput),
        ("receipt", receipt),
        ("card_response", keyload.encode_receipt_response(receipt)),
    ]


def _lines(name: str, value: bytes) -> list[str]:
    h = value.hex().upper()
    if len(h) <= WIDTH:
        return [f"{name} = {h}"]
    return [f"{name} ="] + ["    " + h[i : i + WIDTH] for i in range(0, len(h), WIDTH)]


_TEMPLATES = (keyload.TAG_PACKAGE, keyload.TAG_KEY_SET)


def _dump(data: bytes, depth: int, offset: int, out: list[str]) -> None:
    """One line per data object: offset, tag and length, and the value of primitive ones."""
    pad = "  " * depth
    for obj in keyload._flat(data, "example"):
        head = obj.raw[: len(obj.raw) - len(obj.value)]
        if obj.tag in _TEMPLATES:
            out.append(f"{offset:04X}  {pad}{head.hex().upper()}")
            _dump(obj.value, depth + 1, offset + len(head), out)
        elif obj.tag == keyload.TAG_CERTIFICATES:
            out.append(f"{offset:04X}  {pad}{head.hex().upper()}  (oce_certificate)")
        else:
            value = obj.value.hex().upper()
            if len(value) > 32:
                value = value[:32] + f"...  ({len(obj.value)} bytes)"
            out.append(f"{offset:04X}  {pad}{head.hex().upper()} {value}")
        offset += len(obj.raw)


def render() -> str:
    """The example block exactly as the document carries it."""
    out: list[str] = []
    named = values()
    for name, value in named:
        out.extend(_lines(name, value))
    out.append("")
    out.append("package structure (offset, tag+length, value):")
    _dump(dict(named)["package"], 0, 0, out)
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
