"""Session keys for on-device applications (white paper §3.6, DESIGN §6; docs/session-keys.md).

A provider's Security Domain holds a *service master key*; the card derives, for a named service
and an epoch, a 16-byte session key with NIST SP 800-108r1 (KDF in counter mode, PRF = AES-CMAC).
The provider derives the same key from its copy of the master key (its vault, or its own tooling).
Both sides use this module, so the byte layout cannot drift:

    K_session = KBKDF-CTR-CMAC(K_master, Label, Context, L = 128)
    PRF input (one block, i = 1):  [i]_32 ‖ Label ‖ 00 ‖ Context ‖ [L]_32
    Label   = "tessera-session" (ASCII, 15 bytes)
    Context = len(service) ‖ service (ASCII) ‖ epoch (4 bytes, big-endian) ‖ len(se_id) ‖ se_id

``se_id`` is the SE's CPLC IC serial number (4 bytes), what the card, the agent and the portal
(``SecureElement.serial``) all know. The length prefixes keep the context unambiguous.

The card's command (DERIVE SESSION KEY, proprietary): ``80 5A P1 00 Lc data 00`` — P1 = KVN of the
master key (``00`` = :data:`MASTER_KEY_KVN`), data = ``80 Ln service`` ‖ ``81 04 epoch``; the answer
is the 16-byte session key and ``9000``. The master key is the key of KID ``01`` in a key set that
holds nothing else (a key set with SCP03 keys can never serve as a KDF key).
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFCMAC, CounterLocation, Mode

from gp import tlv
from gp.apdu import CommandAPDU
from gp.errors import EncodeError, GPError, ParseError

__all__ = [
    "EPOCH_MAX",
    "INS_DERIVE_SESSION_KEY",
    "LABEL",
    "MASTER_KEY_KID",
    "MASTER_KEY_KVN",
    "SESSION_KEY_LENGTH",
    "DeriveSessionKey",
    "check_epoch",
    "check_se_id",
    "check_service",
    "day_epoch",
    "derive_session_key",
    "kdf_context",
]

LABEL = b"tessera-session"
INS_DERIVE_SESSION_KEY = 0x5A
MASTER_KEY_KVN = 0x72  # the dedicated key version of a service master key (KID 01)
MASTER_KEY_KID = 0x01
MASTER_KEY_LENGTHS = (16, 24, 32)
SESSION_KEY_LENGTH = 16
EPOCH_MAX = 0xFFFFFFFF
TAG_SERVICE = 0x80
TAG_EPOCH = 0x81
SERVICE_MAX = 32
_SERVICE_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")


def check_service(service: object) -> bytes:
    """A service name: 1-32 characters of ``a-z 0-9 . _ -``, starting with a letter or digit."""
    if not isinstance(service, str) or not _SERVICE_RE.fullmatch(service):
        raise EncodeError(
            "service must be 1-32 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit"
        )
    return service.encode("ascii")


def check_epoch(epoch: object) -> int:
    """An epoch: an integer from 0 to 2^32-1 (the demo uses days since 1970-01-01 UTC)."""
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch <= EPOCH_MAX:
        raise EncodeError("epoch must be an integer from 0 to 4294967295")
    return epoch


def check_se_id(se_id: object) -> bytes:
    if not isinstance(se_id, bytes) or not 1 <= len(se_id) <= 16:
        raise EncodeError("se_id must be 1-16 bytes (the CPLC IC serial number)")
    return se_id


def kdf_context(*, service: str, epoch: int, se_id: bytes) -> bytes:
    """Context = len(service) ‖ service ‖ epoch (4 bytes BE) ‖ len(se_id) ‖ se_id."""
    name = check_service(service)
    sid = check_se_id(se_id)
    return bytes([len(name)]) + name + check_epoch(epoch).to_bytes(4, "big") + bytes([len(sid)]) + sid


def derive_session_key(master_key: bytes, *, service: str, epoch: int, se_id: bytes) -> bytes:
    """The 16-byte session key of ``service`` at ``epoch`` on SE ``se_id`` (SP 800-108r1 §4.1)."""
    if not isinstance(master_key, bytes) or len(master_key) not in MASTER_KEY_LENGTHS:
        raise EncodeError("a service master key is an AES key of 16, 24 or 32 bytes")
    kdf = KBKDFCMAC(
        algorithm=algorithms.AES,
        mode=Mode.CounterMode,
        length=SESSION_KEY_LENGTH,
        rlen=4,
        llen=4,
        location=CounterLocation.BeforeFixed,
        label=LABEL,
        context=kdf_context(service=service, epoch=epoch, se_id=se_id),
        fixed=None,
    )
    return kdf.derive(master_key)


def day_epoch(when: _dt.date | _dt.datetime | None = None) -> int:
    """Days since 1970-01-01 (UTC): the epoch of "today's" session key."""
    if when is None:
        when = _dt.datetime.now(_dt.UTC)
    if isinstance(when, _dt.datetime):
        when = when.astimezone(_dt.UTC).date() if when.tzinfo else when.date()
    return (when - _dt.date(1970, 1, 1)).days


@dataclass(frozen=True, slots=True)
class DeriveSessionKey:
    """DERIVE SESSION KEY (``80 5A``): both ends of the command, like the other gp.commands."""

    service: str
    epoch: int
    kvn: int = 0  # 0: the card's MASTER_KEY_KVN

    def __post_init__(self) -> None:
        check_service(self.service)
        check_epoch(self.epoch)
        if not 0 <= self.kvn <= 0x7F:
            raise EncodeError("master key version must be 00..7F")

    def data(self) -> bytes:
        return tlv.encode(TAG_SERVICE, check_service(self.service)) + tlv.encode(
            TAG_EPOCH, self.epoch.to_bytes(4, "big")
        )

    def to_apdu(self, *, channel: int = 0) -> CommandAPDU:
        return CommandAPDU(0x80, INS_DERIVE_SESSION_KEY, self.kvn, 0x00, self.data(), 256).with_channel(
            channel
        )

    @classmethod
    def parse(cls, p1: int, data: bytes) -> DeriveSessionKey:
        """The command's P1 and data; :class:`ParseError` (offset in the data) on anything malformed."""
        try:
            items = tlv.parse_all(data)
        except ParseError:
            raise
        except GPError as e:
            raise ParseError(str(e), offset=0) from None
        tags = [t.tag for t in items]
        if tags != [TAG_SERVICE, TAG_EPOCH]:
            raise ParseError("data must be 80 (service) then 81 (epoch), nothing else", offset=0)
        service, epoch = items[0].value, items[1].value
        if len(epoch) != 4:
            raise ParseError("epoch (81) must be 4 bytes", offset=len(data) - len(epoch))
        try:
            name = service.decode("ascii")
            return cls(name, int.from_bytes(epoch, "big"), p1)
        except (UnicodeDecodeError, EncodeError):
            raise ParseError("service (80) is not a valid service name", offset=2) from None


def parse_response(rapdu: bytes) -> bytes:
    """The session key from the card's full answer (data ‖ SW); ParseError unless ``9000`` + 16 bytes."""
    if len(rapdu) < 2:
        raise ParseError("response shorter than a status word", offset=0)
    sw = rapdu[-2:]
    if sw != b"\x90\x00":
        raise ParseError(f"card answered SW {sw.hex().upper()}", offset=len(rapdu) - 2)
    if len(rapdu) != SESSION_KEY_LENGTH + 2:
        raise ParseError(f"expected {SESSION_KEY_LENGTH} bytes of key, got {len(rapdu) - 2}", offset=0)
    return rapdu[:-2]
