"""Inputs for enrolment tests: identity keys as `agent init` prints them, ISD key sets in hex."""

from __future__ import annotations

import hashlib
import os
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


def identity_pem(curve: Any = None) -> tuple[str, str]:
    """(PEM SubjectPublicKeyInfo, key id) of a fresh EC key (P-256 unless ``curve``)."""
    key = ec.generate_private_key(curve or ec.SECP256R1())
    pub = key.public_key()
    pem = pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    der = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, hashlib.sha256(der).hexdigest()


def rsa_pem() -> str:
    pub = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    return pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def isd_keys_hex(length: int = 16) -> dict[str, str]:
    return {name: os.urandom(length).hex() for name in ("enc", "mac", "dek")}


def device_row(serial: str, **extra: Any) -> dict[str, Any]:
    pem, _ = identity_pem()
    return {"serial": serial, "kind": "meter", "identity_public_key": pem, **extra}


def se_row(serial: str, **extra: Any) -> dict[str, Any]:
    return {
        "serial": serial,
        "kind": "se",
        "cplc": "9F7F2A" + "00" * 10,
        "isd_aid": "A000000151000000",
        "isd_keys": isd_keys_hex(),
        "kvn": 0x30,
        "i_param": 0x70,
        "sequence_counter": 5,
        **extra,
    }
