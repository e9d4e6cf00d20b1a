"""SCP11a delivery of an SCP03 key set: both sides of ``docs/key-loading-package.md`` §8.

An online provider opens SCP11a with the ISD's CASD itself (its OCE chain checked by the card
against PK.CA-KLOC, ephemeral ECDH on both sides, the receipt checked by the provider: :mod:`gp.scp11`)
and, in that session, sends

1. INSTALL [for personalization] of its SSD (GPCS §11.5.2.3), then
2. one STORE DATA block (P1 = ``89``: last block, no encryption flag, DGI structure, response
   expected; P2 = ``00``) carrying two DGIs, in this order:

   - DGI ``00B9`` — key set control template, in the clear:
     ``83 01 <KVN>`` ``80 01 88`` ``81 01 <L>`` ``84 09 <KCV(ENC) KCV(MAC) KCV(DEK)>``
     (20 bytes; KVN ``01``..``7F``; L = 16, 24 or 32; KCVs as GPCS §11.8.2.3);
   - DGI ``8113`` — the keys: ``AES-KW(S-DEK, Key-ENC || Key-MAC || Key-DEK)`` (RFC 3394, default
     IV), ``3·L + 8`` bytes.

The card installs KIDs 01/02/03 (type ``88``) under the KVN in the SSD (replacing a set with that
KVN) and answers ``KVN || KCV(ENC) || KCV(MAC) || KCV(DEK)`` (10 bytes, as PUT KEY does,
GPCS §11.8.3.1), R-MAC'd under the session.

The session runs at security level ``34`` (C-MAC, R-MAC): the relay can read which SD the
commands address and the control template, and check them; the keys are encrypted at field level
under S-DEK, which only the card and the provider derive. Replay is impossible by construction:
both sides contribute fresh ephemeral keys to every session, so session keys (and S-DEK) are never
the same twice and a recorded delivery fails the C-MAC check of any later session.

Django-free; errors are :class:`KeyDeliveryError` with a stable ``code`` and the card's status word.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from gp.commands import AID, InstallForPersonalization
from gp.commands.store_data import DGI, DataStructure, StoreData, encode_dgis, parse_dgis
from gp.errors import GPError, ParseError, UsageError
from gp.scp03 import kcv

__all__ = [
    "DGI_KEY_CONTROL",
    "DGI_KEY_VALUES",
    "KeyDeliveryError",
    "KeySetControl",
    "delivery_commands",
    "encode_key_set_dgis",
    "encode_response",
    "open_key_set",
    "parse_response",
    "read_key_set_dgis",
]

DGI_KEY_CONTROL = 0x00B9
DGI_KEY_VALUES = 0x8113
KEY_TYPE_AES = 0x88
KEY_LENGTHS = (16, 24, 32)
STORE_DATA_P1 = 0x89  # last block | DGI structure | response expected
SW_WRONG_DATA = 0x6A80
SW_INTEGRITY = 0x6988


class KeyDeliveryError(GPError):
    """A key-set delivery refused: ``code`` (stable) and ``sw`` (what the card answers)."""

    def __init__(self, code: str, message: str, sw: int = SW_WRONG_DATA) -> None:
        super().__init__(message)
        self.code = code
        self.sw = sw


@dataclass(frozen=True)
class KeySetControl:
    """What the control template says (public), and the wrapped keys (opaque without S-DEK)."""

    kvn: int
    key_length: int
    kcvs: tuple[bytes, bytes, bytes]
    wrapped: bytes = field(repr=False)

    def kcvs_hex(self) -> dict[str, str]:
        return dict(zip(("enc", "mac", "dek"), (k.hex().upper() for k in self.kcvs), strict=True))


def _control_value(kvn: int, key_length: int, kcvs: bytes) -> bytes:
    return bytes((0x83, 1, kvn, 0x80, 1, KEY_TYPE_AES, 0x81, 1, key_length, 0x84, 9)) + kcvs


def encode_key_set_dgis(*, kvn: int, keys: tuple[bytes, bytes, bytes], dek: bytes) -> bytes:
    """The STORE DATA content: DGI ``00B9`` then DGI ``8113`` (keys wrapped under ``dek`` = S-DEK)."""
    if not 1 <= kvn <= 0x7F:
        raise UsageError("KVN must be 01..7F")
    lengths = {len(k) for k in keys}
    if len(keys) != 3 or len(lengths) != 1 or lengths.pop() not in KEY_LENGTHS:
        raise UsageError("three keys of 16, 24 or 32 bytes each")
    if len(dek) not in KEY_LENGTHS:
        raise UsageError("S-DEK must be 16, 24 or 32 bytes")
    control = _control_value(kvn, len(keys[0]), b"".join(kcv(k) for k in keys))
    wrapped = aes_key_wrap(dek, b"".join(keys))
    return encode_dgis([DGI(DGI_KEY_CONTROL, control), DGI(DGI_KEY_VALUES, wrapped)])


def read_key_set_dgis(data: bytes) -> KeySetControl:
    """Parse the STORE DATA content exactly (two DGIs, canonical form); no key is touched.

    Used by the card before unwrapping and by a relay to learn KVN, length and KCVs.
    Raises :class:`KeyDeliveryError` ``malformed`` (6A80)."""
    try:
        dgis = parse_dgis(bytes(data))
    except ParseError as e:
        raise KeyDeliveryError("malformed", f"not a DGI sequence: {e.problem}") from None
    if [d.tag for d in dgis] != [DGI_KEY_CONTROL, DGI_KEY_VALUES]:
        raise KeyDeliveryError("malformed", "expected DGI 00B9 then DGI 8113, nothing else")
    control, wrapped = dgis[0].value, dgis[1].value
    if encode_dgis(dgis) != bytes(data):
        raise KeyDeliveryError("malformed", "DGI lengths are not in their shortest form")
    if len(control) != 20:
        raise KeyDeliveryError("malformed", "DGI 00B9 must be 83 01 KVN 80 01 88 81 01 L 84 09 KCVs")
    kvn, key_length = control[2], control[8]
    if control != _control_value(kvn, key_length, control[11:]):
        raise KeyDeliveryError("malformed", "DGI 00B9 must be 83 01 KVN 80 01 88 81 01 L 84 09 KCVs")
    if not 1 <= kvn <= 0x7F:
        raise KeyDeliveryError("malformed", "KVN must be 01..7F")
    if key_length not in KEY_LENGTHS:
        raise KeyDeliveryError("malformed", "key length must be 16, 24 or 32")
    if len(wrapped) != 3 * key_length + 8:
        raise KeyDeliveryError(
            "malformed", f"DGI 8113 must be {3 * key_length + 8} bytes for L = {key_length}"
        )
    kcvs = control[11:]
    return KeySetControl(kvn, key_length, (kcvs[0:3], kcvs[3:6], kcvs[6:9]), bytes(wrapped))


def open_key_set(control: KeySetControl, *, dek: bytes) -> tuple[bytes, bytes, bytes]:
    """Card side: unwrap the keys with S-DEK and check each against its KCV.

    Raises :class:`KeyDeliveryError` ``unwrap_failed`` / ``kcv_mismatch`` (6988)."""
    try:
        raw = aes_key_unwrap(dek, control.wrapped)
    except (InvalidUnwrap, ValueError):
        raise KeyDeliveryError(
            "unwrap_failed", "the key block does not unwrap under S-DEK", SW_INTEGRITY
        ) from None
    n = control.key_length
    keys = (raw[:n], raw[n : 2 * n], raw[2 * n :])
    if tuple(kcv(k) for k in keys) != control.kcvs:
        raise KeyDeliveryError("kcv_mismatch", "a key does not match its check value", SW_INTEGRITY)
    return keys


def encode_response(control: KeySetControl) -> bytes:
    """The card's answer: KVN || the three KCVs."""
    return bytes((control.kvn,)) + b"".join(control.kcvs)


def parse_response(data: bytes) -> tuple[int, tuple[bytes, bytes, bytes]]:
    """``(KVN, KCVs)`` of the card's answer; KeyDeliveryError ``bad_response`` when it is not 10 bytes."""
    raw = bytes(data)
    if len(raw) != 10:
        raise KeyDeliveryError("bad_response", "the answer to the key-set STORE DATA is KVN and 3 KCVs")
    return raw[0], (raw[1:4], raw[4:7], raw[7:10])


def delivery_commands(
    *, sd_aid: bytes, kvn: int, keys: tuple[bytes, bytes, bytes], dek: bytes
) -> list[bytes]:
    """The two plain C-APDUs of a delivery (the host wraps them in its SCP11a session)."""
    install = InstallForPersonalization(AID(bytes(sd_aid))).to_apdu().encode()
    data = encode_key_set_dgis(kvn=kvn, keys=keys, dek=dek)
    store = StoreData(0, data, last=True, structure=DataStructure.DGI, response_expected=True)
    return [install, store.to_apdu().encode()]
