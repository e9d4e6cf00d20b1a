"""Print the worked example of docs/manufacturing-handover.md (checked by tests/keys/test_handover.py).

Fixed keys, so the output never changes: ``python docs/tools/handover_example.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from gp.card import manufacture as m  # noqa: E402
from gp.scp03 import StaticKeys, kcv  # noqa: E402

IMPORT_SCALAR = 0x2C1F3E5A7B9D0F1E3C5A7B9D0F1E3C5A7B9D0F1E3C5A7B9D0F1E3C5A7B9D0F1E
EPHEMERAL_SCALAR = 0x11223344556677889900AABBCCDDEEFF0123456789ABCDEF0011223344556677
SEI, SERIAL, AID, KVN = "grid-operator", "0A1B2C3D", bytes.fromhex("A000000151000000"), 0x30
KEYS = StaticKeys(
    bytes.fromhex("404142434445464748494A4B4C4D4E4F"),
    bytes.fromhex("505152535455565758595A5B5C5D5E5F"),
    bytes.fromhex("606162636465666768696A6B6C6D6E6F"),
)


def point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def main() -> None:
    imp = ec.derive_private_key(IMPORT_SCALAR, ec.SECP256R1())
    eph = ec.derive_private_key(EPHEMERAL_SCALAR, ec.SECP256R1())
    key_id = m.import_key_id(imp.public_key())
    kcvs = kcv(KEYS.enc) + kcv(KEYS.mac) + kcv(KEYS.dek)
    z = eph.exchange(ec.ECDH(), imp.public_key())
    info = m.shared_info(
        key_length=16,
        sei=SEI,
        serial=SERIAL,
        isd_aid=AID,
        kvn=KVN,
        key_id=key_id,
        ephemeral_point=point(eph.public_key()),
        kcvs=kcvs,
    )
    kek = m._kek(z, info)
    blob = m.wrap_isd_keys(
        KEYS,
        import_public_key=imp.public_key(),
        sei=SEI,
        serial=SERIAL,
        isd_aid=AID,
        kvn=KVN,
        ephemeral_private_key=eph,
    )
    opened = m.open_wrapped_isd_keys(
        m.parse_wrapped_isd_keys(blob), private_key=imp, sei=SEI, serial=SERIAL, isd_aid=AID, kvn=KVN
    )
    assert opened == KEYS
    rows = [
        ("import private key d", f"{IMPORT_SCALAR:064X}"),
        ("import public key Q", point(imp.public_key()).hex().upper()),
        ("import key id (SHA-256 of SPKI DER)", key_id.hex().upper()),
        ("SEI / serial / ISD AID / KVN", f"{SEI} / {SERIAL} / {AID.hex().upper()} / {KVN:02X}"),
        ("Key-ENC", KEYS.enc.hex().upper()),
        ("Key-MAC", KEYS.mac.hex().upper()),
        ("Key-DEK", KEYS.dek.hex().upper()),
        ("KCVs (ENC MAC DEK)", kcvs.hex().upper()),
        ("ephemeral private key e", f"{EPHEMERAL_SCALAR:064X}"),
        ("ephemeral public key E", point(eph.public_key()).hex().upper()),
        ("Z = ECDH(e, Q)", z.hex().upper()),
        ("SharedInfo", info.hex().upper()),
        ("KEK = X9.63-KDF-SHA256(Z, 32, SharedInfo)", kek.hex().upper()),
        ("AES-KW(KEK, ENC||MAC||DEK)", blob[m.HEADER_BYTES :].hex().upper()),
        (f"wrapped ISD key set ({len(blob)} bytes)", blob.hex().upper()),
    ]
    for name, value in rows:
        print(f"{name}:")
        for i in range(0, len(value), 64):
            print(f"  {value[i : i + 64]}")


if __name__ == "__main__":
    main()
