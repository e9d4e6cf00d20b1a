"""Typed values shared by the card-management commands.

- Privileges: GP Card Spec v2.3.1 §6.6 and §11.1.2, Tables 11-7, 11-8, 11-9 (three bytes; a one-byte
  encoding leaves bytes 2 and 3 zero).
- Life cycle codings: GP CS v2.3.1 §5 and §11.1.1, Tables 11-3 (load file), 11-4 (application),
  11-5 (Security Domain), 11-6 (card).
- Key types: GP CS v2.3.1 §11.1.8, Table 11-16.
- Application identifiers: ISO/IEC 7816-5 (5 to 16 bytes), GP CS v2.3.1 §6.5.1.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag

from gp.errors import EncodeError, ParseError

__all__ = [
    "AID",
    "ApplicationLifeCycle",
    "CardLifeCycle",
    "Ins",
    "KeyType",
    "LifeCycle",
    "LoadFileLifeCycle",
    "Privileges",
    "SecurityDomainLifeCycle",
]


class Ins(IntEnum):
    """Instruction bytes of the commands in GP CS v2.3.1 Table 11-1 (and ISO/IEC 7816-4)."""

    DELETE = 0xE4
    EXTERNAL_AUTHENTICATE = 0x82
    GET_DATA = 0xCA
    GET_DATA_ODD = 0xCB
    GET_RESPONSE = 0xC0
    GET_STATUS = 0xF2
    INITIALIZE_UPDATE = 0x50
    INSTALL = 0xE6
    LOAD = 0xE8
    MANAGE_CHANNEL = 0x70
    PUT_KEY = 0xD8
    SELECT = 0xA4
    SET_STATUS = 0xF0
    STORE_DATA = 0xE2
    BEGIN_RMAC_SESSION = 0x7A
    END_RMAC_SESSION = 0x78


# --- AID --------------------------------------------------------------------------------------


class AID(bytes):
    """An application identifier: 5 to 16 bytes (ISO/IEC 7816-5).

    A ``bytes`` subclass so it can be hashed, compared and concatenated, but constructing one
    checks the length, so a value typed ``AID`` is always well formed.
    """

    def __new__(cls, value: bytes | bytearray | str) -> AID:
        raw = bytes.fromhex(value) if isinstance(value, str) else bytes(value)
        if not 5 <= len(raw) <= 16:
            raise EncodeError(f"an AID has 5 to 16 bytes, not {len(raw)}")
        return super().__new__(cls, raw)

    @classmethod
    def parse(cls, raw: bytes, *, offset: int = 0) -> AID:
        if not 5 <= len(raw) <= 16:
            raise ParseError(f"an AID has 5 to 16 bytes, not {len(raw)}", offset=offset)
        return cls(raw)

    def __repr__(self) -> str:
        return f"AID({self.hex().upper()})"

    def __str__(self) -> str:
        return self.hex().upper()


# --- privileges -------------------------------------------------------------------------------


class Privileges(IntFlag):
    """The three privilege bytes of an application or Security Domain (GP CS v2.3.1 Tables 11-7..11-9).

    Byte 1 is the most significant byte of the 24-bit value.  DAP Verification, Delegated Management
    and Mandated DAP Verification are coded together with the Security Domain bit (b8 of byte 1);
    the flags here are the individual bits, and :meth:`consistency_error` says when a combination
    is not allowed.
    """

    NONE = 0
    # byte 1
    SECURITY_DOMAIN = 0x800000
    DAP_VERIFICATION = 0x400000
    DELEGATED_MANAGEMENT = 0x200000
    CARD_LOCK = 0x100000
    CARD_TERMINATE = 0x080000
    CARD_RESET = 0x040000  # "Default Selected" in GP 2.1.1
    CVM_MANAGEMENT = 0x020000
    MANDATED_DAP_VERIFICATION = 0x010000
    # byte 2
    TRUSTED_PATH = 0x008000
    AUTHORIZED_MANAGEMENT = 0x004000
    TOKEN_VERIFICATION = 0x002000  # "Token Management" in GP 2.3
    GLOBAL_DELETE = 0x001000
    GLOBAL_LOCK = 0x000800
    GLOBAL_REGISTRY = 0x000400
    FINAL_APPLICATION = 0x000200
    GLOBAL_SERVICE = 0x000100
    # byte 3
    RECEIPT_GENERATION = 0x000080
    CIPHERED_LOAD_FILE_DATA_BLOCK = 0x000040
    CONTACTLESS_ACTIVATION = 0x000020
    CONTACTLESS_SELF_ACTIVATION = 0x000010

    DEFAULT_SELECTED = CARD_RESET

    def encode(self) -> bytes:
        """The three privilege bytes."""
        return int(self).to_bytes(3, "big")

    @classmethod
    def decode(cls, raw: bytes, *, offset: int = 0) -> Privileges:
        """One or three privilege bytes (Table 11-43 allows both in INSTALL); RFU bits are rejected."""
        if len(raw) == 1:
            value = raw[0] << 16
        elif len(raw) == 3:
            value = int.from_bytes(raw, "big")
        else:
            raise ParseError(f"privileges are 1 or 3 bytes, not {len(raw)}", offset=offset)
        if value & _PRIVILEGE_RFU:
            raise ParseError(f"privileges {value:06X} set RFU bits of byte 3", offset=offset)
        return cls(value)

    @property
    def is_security_domain(self) -> bool:
        return bool(int(self) & _SECURITY_DOMAIN_BIT)  # plain int: IntFlag's & is slow on the card's hot path

    def consistency_error(self) -> str | None:
        """Why this combination cannot be granted (GP CS v2.3.1 §6.6.1, Table 6-1), or None."""
        sd_only = (
            Privileges.DAP_VERIFICATION
            | Privileges.DELEGATED_MANAGEMENT
            | Privileges.MANDATED_DAP_VERIFICATION
            | Privileges.AUTHORIZED_MANAGEMENT
            | Privileges.TOKEN_VERIFICATION
            | Privileges.RECEIPT_GENERATION
            | Privileges.CIPHERED_LOAD_FILE_DATA_BLOCK
            | Privileges.TRUSTED_PATH
        )
        if not self.is_security_domain and self & sd_only:
            return "privileges reserved to Security Domains requested for an application"
        if self & Privileges.MANDATED_DAP_VERIFICATION and not self & Privileges.DAP_VERIFICATION:
            return "Mandated DAP Verification needs DAP Verification"
        if self & Privileges.AUTHORIZED_MANAGEMENT and self & Privileges.DELEGATED_MANAGEMENT:
            return "Authorized and Delegated Management are mutually exclusive"
        return None

    def names(self) -> list[str]:
        return [p.name for p in _SINGLE_PRIVILEGES if self & p and p.name]


_SECURITY_DOMAIN_BIT = int(Privileges.SECURITY_DOMAIN)


_PRIVILEGE_RFU = 0x00000F
_SINGLE_PRIVILEGES = [p for p in Privileges if p.value and (p.value & (p.value - 1)) == 0]


# --- life cycles ------------------------------------------------------------------------------


class CardLifeCycle(IntEnum):
    """Card life cycle (= ISD life cycle) coding, GP CS v2.3.1 Table 11-6."""

    OP_READY = 0x01
    INITIALIZED = 0x07
    SECURED = 0x0F
    CARD_LOCKED = 0x7F
    TERMINATED = 0xFF


class LoadFileLifeCycle(IntEnum):
    """Executable Load File life cycle coding, GP CS v2.3.1 Table 11-3."""

    LOADED = 0x01


class ApplicationLifeCycle(IntEnum):
    """Application life cycle coding, GP CS v2.3.1 Table 11-4.

    States ``0xxxx111`` other than SELECTABLE are application specific; LOCKED sets b8 and keeps the
    previous state in the low bits (``1xxxxx11``), so a :class:`LifeCycle` carries both.
    """

    INSTALLED = 0x03
    SELECTABLE = 0x07
    LOCKED = 0x80


class SecurityDomainLifeCycle(IntEnum):
    """Security Domain life cycle coding, GP CS v2.3.1 Table 11-5 (LOCKED is ``1000 xx11``)."""

    INSTALLED = 0x03
    SELECTABLE = 0x07
    PERSONALIZED = 0x0F
    LOCKED = 0x80


_LOCKED = 0x80


@dataclass(frozen=True, slots=True)
class LifeCycle:
    """The life cycle state of an application or Security Domain: a state and the LOCKED flag.

    ``state`` is the coding without b8 (03, 07, 0F or an application-specific ``0xxxx111``).
    """

    state: int
    locked: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.state <= 0x7F or self.state & 0x03 != 0x03:
            raise EncodeError(f"life cycle state {self.state:#04x} is not an application/SD coding")

    @property
    def coding(self) -> int:
        return self.state | (_LOCKED if self.locked else 0)

    @classmethod
    def decode(cls, byte: int, *, offset: int = 0) -> LifeCycle:
        if byte & 0x03 != 0x03:
            raise ParseError(f"life cycle {byte:02X} is not an application/SD coding", offset=offset)
        return cls(byte & 0x7F, bool(byte & _LOCKED))

    @property
    def installed_only(self) -> bool:
        return self.state == ApplicationLifeCycle.INSTALLED

    @property
    def selectable(self) -> bool:
        """SELECTABLE or any later state, and not locked."""
        return not self.locked and self.state & 0x07 == 0x07

    def with_locked(self, locked: bool) -> LifeCycle:
        return LifeCycle(self.state, locked)

    def __repr__(self) -> str:
        names = {0x03: "INSTALLED", 0x07: "SELECTABLE", 0x0F: "PERSONALIZED"}
        name = names.get(self.state, f"{self.state:02X}")
        return f"LifeCycle({name}{', LOCKED' if self.locked else ''})"


# --- keys -------------------------------------------------------------------------------------


class KeyType(IntEnum):
    """Key type coding, GP CS v2.3.1 Table 11-16."""

    DES = 0x80
    TLS_PSK = 0x85
    AES = 0x88
    HMAC_SHA1 = 0x90
    HMAC_SHA1_160 = 0x91
    RSA_PUBLIC_E = 0xA0
    RSA_PUBLIC_N = 0xA1
    RSA_PRIVATE_N = 0xA2
    RSA_PRIVATE_D = 0xA3
    RSA_PRIVATE_CRT_P = 0xA4
    RSA_PRIVATE_CRT_Q = 0xA5
    RSA_PRIVATE_CRT_PQ = 0xA6
    RSA_PRIVATE_CRT_DP1 = 0xA7
    RSA_PRIVATE_CRT_DQ1 = 0xA8
    ECC_PUBLIC = 0xB0
    ECC_PRIVATE = 0xB1
    ECC_FIELD_P = 0xB2
    ECC_FIELD_A = 0xB3
    ECC_FIELD_B = 0xB4
    ECC_FIELD_G = 0xB5
    ECC_FIELD_N = 0xB6
    ECC_FIELD_K = 0xB7
    ECC_KEY_PARAMETER_REFERENCE = 0xF0
    EXTENDED_FORMAT = 0xFF
