"""Command and response APDUs, class-byte coding and status words.

Implements:

- ISO/IEC 7816-3 §12.1 (cases 1-4, short and extended length) for :class:`CommandAPDU`;
  Le absent is ``None``; an encoded Le of ``00`` (short) or ``0000`` (extended) decodes to 256 or
  65536, the "maximum" meaning it has in the standard, and those values encode back to zeros.
- GP Card Spec v2.3.1 §11.1.4, Tables 11-11 and 11-12 (ISO/IEC 7816-4 §5.4.1) for the class byte:
  logical channels 0-3 in the first interindustry / GP class (``0x00``-``0x0F``, ``0x80``-``0x8F``:
  b4..b3 secure messaging, b2..b1 channel) and channels 4-19 in the further class
  (``0x40``-``0x7F``, ``0xC0``-``0xFF``: b6 secure messaging, b4..b1 channel - 4); b5 is command
  chaining in both.
- GP Card Spec v2.3.1 §11.1.3 / Table 11-10 and ISO/IEC 7816-4 §5.6 for status-word names.

Parsing is strict: anything that is not exactly one well-formed APDU raises
:class:`gp.errors.ParseError` naming the offset.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import IntEnum

from gp.errors import EncodeError, ParseError

__all__ = [
    "CommandAPDU",
    "ResponseAPDU",
    "SW",
    "describe_sw",
    "is_success_or_warning",
]

# --- class byte ---------------------------------------------------------------------------------

_PROPRIETARY = 0x80  # b8: proprietary (GP) class
_FURTHER = 0x40  # b7: further interindustry coding (channels 4-19)
_CHAINING = 0x10  # b5: command chaining, same place in both codings
_SM_FIRST = 0x0C  # b4..b3: secure messaging indication, first coding
_SM_FIRST_GP = 0x04  # b3: GP proprietary secure messaging (Amd D §6.2.4)
_SM_FURTHER = 0x20  # b6: secure messaging indication, further coding

MAX_CHANNEL = 19


def _class_coding(cla: int) -> str:
    """'first', 'further' or 'none' (RFU classes 001x xxxx, 101x xxxx and the invalid 0xFF)."""
    if cla == 0xFF:
        return "none"
    if cla & _FURTHER:
        return "further"
    if cla & 0x20:
        return "none"
    return "first"


# --- status words -------------------------------------------------------------------------------


class SW(IntEnum):
    """Status words a GlobalPlatform card management session meets (GPCS Table 11-10, Amd D §7)."""

    OK = 0x9000
    MORE_DATA = 0x6100  # 61xx: xx more bytes, use GET RESPONSE
    WARNING_NV_UNCHANGED = 0x6200
    WARNING_NV_CHANGED = 0x6300  # also "authentication of host cryptogram failed" (EXT AUTH)
    MORE_DATA_AVAILABLE = 0x6310  # GET STATUS: more data, repeat with P2 '03'
    MEMORY_FAILURE = 0x6581
    WRONG_LENGTH = 0x6700
    LOGICAL_CHANNEL_NOT_SUPPORTED = 0x6881
    SECURE_MESSAGING_NOT_SUPPORTED = 0x6882
    SECURITY_STATUS_NOT_SATISFIED = 0x6982
    AUTHENTICATION_METHOD_BLOCKED = 0x6983
    CONDITIONS_NOT_SATISFIED = 0x6985
    INCORRECT_DATA = 0x6A80
    FUNCTION_NOT_SUPPORTED = 0x6A81
    FILE_NOT_FOUND = 0x6A82  # "application / file not found"
    NOT_ENOUGH_MEMORY = 0x6A84
    INCORRECT_P1_P2 = 0x6A86
    REFERENCED_DATA_NOT_FOUND = 0x6A88
    WRONG_P1_P2 = 0x6B00
    WRONG_LE = 0x6C00  # 6Cxx: resend with Le = xx
    INS_NOT_SUPPORTED = 0x6D00
    CLA_NOT_SUPPORTED = 0x6E00
    NO_PRECISE_DIAGNOSIS = 0x6F00


_SW_TEXT: dict[int, str] = {
    SW.OK: "success",
    SW.WARNING_NV_UNCHANGED: "warning: state of non-volatile memory unchanged",
    SW.WARNING_NV_CHANGED: "warning / authentication of host cryptogram failed",
    SW.MORE_DATA_AVAILABLE: "more data available",
    SW.MEMORY_FAILURE: "memory failure",
    SW.WRONG_LENGTH: "wrong length in Lc",
    SW.LOGICAL_CHANNEL_NOT_SUPPORTED: "logical channel not supported or not active",
    SW.SECURE_MESSAGING_NOT_SUPPORTED: "secure messaging not supported",
    SW.SECURITY_STATUS_NOT_SATISFIED: "security status not satisfied",
    SW.AUTHENTICATION_METHOD_BLOCKED: "authentication method blocked",
    SW.CONDITIONS_NOT_SATISFIED: "conditions of use not satisfied",
    SW.INCORRECT_DATA: "incorrect values in command data",
    SW.FUNCTION_NOT_SUPPORTED: "function not supported",
    SW.FILE_NOT_FOUND: "application / file not found",
    SW.NOT_ENOUGH_MEMORY: "not enough memory space",
    SW.INCORRECT_P1_P2: "incorrect P1 P2",
    SW.REFERENCED_DATA_NOT_FOUND: "referenced data not found",
    SW.WRONG_P1_P2: "wrong parameters P1-P2",
    SW.INS_NOT_SUPPORTED: "invalid instruction",
    SW.CLA_NOT_SUPPORTED: "class not supported",
    SW.NO_PRECISE_DIAGNOSIS: "no precise diagnosis",
}


def describe_sw(sw: int) -> str:
    """A human-readable name for a status word, including the parameterised families."""
    if not 0 <= sw <= 0xFFFF:
        raise EncodeError(f"status word {sw:#x} is not a 16-bit value")
    text = _SW_TEXT.get(sw)
    if text is not None:
        return text
    sw1, sw2 = sw >> 8, sw & 0xFF
    if sw1 == 0x61:
        return f"{sw2 or 256} more response bytes available (GET RESPONSE)"
    if sw1 == 0x6C:
        return f"wrong Le: resend with Le={sw2 or 256}"
    if sw1 == 0x63 and sw2 & 0xF0 == 0xC0:
        return f"verification failed, {sw2 & 0x0F} retries left"
    if sw1 == 0x62:
        return "warning: state of non-volatile memory unchanged"
    if sw1 == 0x63:
        return "warning: state of non-volatile memory changed"
    return f"unknown status word {sw:04X}"


def is_success_or_warning(sw: int) -> bool:
    """9000, 62xx or 63xx: the status words a secure channel still protects (Amd D §6.2.5)."""
    return sw == 0x9000 or (sw >> 8) in (0x62, 0x63)


# --- command APDU -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommandAPDU:
    """One command APDU.

    ``le`` is the number of response bytes expected (1..65536) or ``None`` when absent; 256 in a
    short APDU and 65536 in an extended one are encoded as zeros.  ``extended`` forces the
    extended-length encoding; it is chosen automatically when the data or Le do not fit a short
    APDU, and :meth:`parse` records which form it saw so that ``parse(b).encode() == b``.
    """

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    le: int | None = None
    extended: bool = False

    def __post_init__(self) -> None:
        if not (
            0 <= self.cla <= 0xFF and 0 <= self.ins <= 0xFF and 0 <= self.p1 <= 0xFF and 0 <= self.p2 <= 0xFF
        ):
            raise EncodeError(
                f"header {(self.cla, self.ins, self.p1, self.p2)!r}: every field must be a byte"
            )
        if self.cla == 0xFF:
            raise EncodeError("CLA 'FF' is invalid (ISO/IEC 7816-3)")
        if len(self.data) > 65535:
            raise EncodeError(f"command data of {len(self.data)} bytes exceeds 65535")
        if self.le is not None and not 1 <= self.le <= 65536:
            raise EncodeError(f"Le {self.le} out of range 1..65536 (use 256 / 65536 for '00' / '0000')")
        if not isinstance(self.data, bytes):
            object.__setattr__(self, "data", bytes(self.data))

    # -- encoding --

    @property
    def uses_extended_length(self) -> bool:
        if not self.data and self.le is None:
            return False  # case 1 has no length fields to extend
        return self.extended or len(self.data) > 255 or (self.le is not None and self.le > 256)

    @property
    def case(self) -> int:
        """ISO/IEC 7816-3 case: 1 (no data, no Le), 2 (Le), 3 (data), 4 (data and Le)."""
        return 1 + (self.le is not None) + 2 * bool(self.data)

    def lc_field(self) -> bytes:
        """The encoded Lc field (empty for cases 1 and 2)."""
        if not self.data:
            return b""
        if self.uses_extended_length:
            return b"\x00" + len(self.data).to_bytes(2, "big")
        return bytes([len(self.data)])

    def header(self) -> bytes:
        return bytes((self.cla, self.ins, self.p1, self.p2))

    def encode(self) -> bytes:
        data, le = self.data, self.le
        header = bytes((self.cla, self.ins, self.p1, self.p2))
        if not self.extended and len(data) <= 255 and (le is None or le <= 256):  # short (or case 1)
            if data:
                header += bytes((len(data),)) + data
            return header if le is None else header + bytes((le & 0xFF,))  # 256 -> 00
        out = bytearray(header)
        ext = self.uses_extended_length
        out += self.lc_field()
        out += data
        if le is not None:
            if ext:
                le_bytes = (le & 0xFFFF).to_bytes(2, "big")  # 65536 -> 0000
                out += le_bytes if data else b"\x00" + le_bytes
            else:
                out.append(le & 0xFF)  # 256 -> 00
        return bytes(out)

    def __bytes__(self) -> bytes:
        return self.encode()

    @classmethod
    def _trusted(
        cls, cla: int, ins: int, p1: int, p2: int, data: bytes, le: int | None, extended: bool
    ) -> CommandAPDU:
        """Build without the ``__post_init__`` checks, for values that already satisfy them.

        Only for fields taken from a well-formed encoding (bytes of a buffer, Lc-bounded data,
        decoded Le) or from an instance that was checked: the hot path parses every APDU twice
        per command otherwise.
        """
        self = object.__new__(cls)
        s_cla, s_ins, s_p1, s_p2, s_data, s_le, s_extended = _SLOT_SETTERS
        s_cla(self, cla)
        s_ins(self, ins)
        s_p1(self, p1)
        s_p2(self, p2)
        s_data(self, data)
        s_le(self, le)
        s_extended(self, extended)
        return self

    @classmethod
    def parse(cls, raw: bytes) -> CommandAPDU:
        """Decode exactly one command APDU (ISO/IEC 7816-3 §12.1.3 decision procedure)."""
        raw = bytes(raw)
        n = len(raw)
        if n < 4:
            raise ParseError(f"command APDU needs a 4-byte header, got {n} bytes", offset=n)
        cla, ins, p1, p2 = raw[0], raw[1], raw[2], raw[3]
        if cla == 0xFF:
            raise ParseError("CLA 'FF' is invalid", offset=0)
        make = cls._trusted  # every value below is a byte, Lc-bounded data or a decoded Le
        if n == 4:
            return make(cla, ins, p1, p2, b"", None, False)
        b1 = raw[4]
        if n == 5:  # case 2 short
            return make(cla, ins, p1, p2, b"", b1 or 256, False)
        if b1 != 0:  # short case 3 or 4
            lc = b1
            if n == 5 + lc:
                return make(cla, ins, p1, p2, raw[5:], None, False)
            if n == 6 + lc:
                return make(cla, ins, p1, p2, raw[5 : 5 + lc], raw[-1] or 256, False)
            raise ParseError(f"short Lc {lc} does not match the {n - 5} bytes that follow it", offset=4)
        # b1 == 0: extended length
        if n < 7:
            raise ParseError(f"extended-length APDU truncated ({n} bytes)", offset=n)
        value = int.from_bytes(raw[5:7], "big")
        if n == 7:  # case 2 extended
            return make(cla, ins, p1, p2, b"", value or 65536, True)
        lc = value
        if lc == 0:
            raise ParseError("extended Lc '0000' with trailing bytes", offset=5)
        if n == 7 + lc:
            return make(cla, ins, p1, p2, raw[7:], None, True)
        if n == 9 + lc:
            le = int.from_bytes(raw[-2:], "big")
            return make(cla, ins, p1, p2, raw[7 : 7 + lc], le or 65536, True)
        raise ParseError(f"extended Lc {lc} does not match the {n - 7} bytes that follow it", offset=5)

    # -- class byte helpers --

    @property
    def is_proprietary(self) -> bool:
        """b8 of CLA: the GlobalPlatform (proprietary) class rather than the ISO interindustry one."""
        return bool(self.cla & _PROPRIETARY)

    @property
    def is_chained(self) -> bool:
        """b5 of CLA: ISO command chaining (not the last command of a chain)."""
        return _CHAINED[self.cla]

    @property
    def channel(self) -> int:
        """The logical channel number (0-19) coded in CLA."""
        channel = _CHANNEL[self.cla]
        if channel < 0:
            raise EncodeError(f"CLA {self.cla:02X} has no logical channel coding")
        return channel

    @property
    def secure_messaging(self) -> bool:
        """True when CLA indicates secure messaging (b4..b3 != 00, or b6 for channels 4-19)."""
        return _SECURE_MESSAGING[self.cla]

    def with_channel(self, channel: int) -> CommandAPDU:
        """The same command on ``channel``, keeping proprietary, chaining and secure-messaging bits."""
        if not 0 <= channel <= MAX_CHANNEL:
            raise EncodeError(f"logical channel {channel} out of range 0..{MAX_CHANNEL}")
        return replace(self, cla=_cla_for(self.cla, channel=channel, sm=self.secure_messaging))

    def with_secure_messaging(self, on: bool = True) -> CommandAPDU:
        """The same command with the GP secure-messaging indication set or cleared in CLA."""
        return replace(self, cla=_cla_for(self.cla, channel=self.channel, sm=on))


# The slot descriptors' setters: they write a frozen instance's fields directly, twice as fast as
# object.__setattr__ (which looks each one up first).
_SLOT_SETTERS = tuple(
    CommandAPDU.__dict__[name].__set__ for name in ("cla", "ins", "p1", "p2", "data", "le", "extended")
)


def _cla_for(cla: int, *, channel: int, sm: bool) -> int:
    """Re-code a class byte for ``channel`` with or without GP secure messaging."""
    if _class_coding(cla) == "none":
        raise EncodeError(f"CLA {cla:02X} has no logical channel coding")
    base = (cla & _PROPRIETARY) | (cla & _CHAINING)
    if channel <= 3:
        sm_bits = cla & _SM_FIRST if _class_coding(cla) == "first" else 0
        if sm and not sm_bits:
            sm_bits = _SM_FIRST_GP
        if not sm:
            sm_bits = 0
        return base | sm_bits | channel
    return base | _FURTHER | (_SM_FURTHER if sm else 0) | (channel - 4)


def mac_class_byte(cla: int) -> int:
    """The CLA used in C-MAC computation (Amd D v1.2 §6.2.4).

    The logical channel number is set to zero, b4 cleared and b3 set ("GP proprietary secure
    messaging"); for channels 4-19 the further-class secure-messaging bit is discarded in favour of
    that first-class indication.  Proprietary (b8) and chaining (b5) bits are kept.
    """
    if _class_coding(cla) == "none":
        raise EncodeError(f"CLA {cla:02X} has no logical channel coding")
    return (cla & _PROPRIETARY) | (cla & _CHAINING) | _SM_FIRST_GP


def _channel_of(cla: int) -> int:
    coding = _class_coding(cla)
    if coding == "first":
        return cla & 0x03
    if coding == "further":
        return 4 + (cla & 0x0F)
    return -1


def _sm_of(cla: int) -> bool:
    coding = _class_coding(cla)
    if coding == "first":
        return bool(cla & _SM_FIRST)
    if coding == "further":
        return bool(cla & _SM_FURTHER)
    return False


def _recoded(cla: int, *, sm: bool) -> int:
    channel = _channel_of(cla)
    return -1 if channel < 0 else _cla_for(cla, channel=channel, sm=sm)


# Per-CLA lookup tables, computed once from the rules above so the two can never disagree; the
# secure channel consults them on every command.  -1 marks a class byte without channel coding.
_CHANNEL: tuple[int, ...] = tuple(_channel_of(c) for c in range(256))
_SECURE_MESSAGING: tuple[bool, ...] = tuple(_sm_of(c) for c in range(256))
_CHAINED: tuple[bool, ...] = tuple(bool(c & _CHAINING) and _class_coding(c) != "none" for c in range(256))
SM_CLA: tuple[int, ...] = tuple(_recoded(c, sm=True) for c in range(256))
PLAIN_CLA: tuple[int, ...] = tuple(_recoded(c, sm=False) for c in range(256))
MAC_CLA: tuple[int, ...] = tuple(-1 if _channel_of(c) < 0 else mac_class_byte(c) for c in range(256))


def split_short(raw: bytes) -> tuple[bytes, bytes] | None:
    """``(data, Le field)`` of a well-formed *short* command APDU (ISO/IEC 7816-3 §12.1.3).

    ``None`` for everything else (extended length, malformed, CLA 'FF'), which callers hand to
    :meth:`CommandAPDU.parse` for the full treatment.  The Le field is returned as encoded
    (empty or one byte), so re-emitting it reproduces the input.
    """
    n = len(raw)
    if n < 4 or raw[0] == 0xFF:
        return None
    if n == 4:
        return b"", b""
    lc = raw[4]
    if n == 5:
        return b"", raw[4:]
    if lc == 0:
        return None
    if n == 5 + lc:
        return raw[5:], b""
    if n == 6 + lc:
        return raw[5:-1], raw[-1:]
    return None


# --- response APDU ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResponseAPDU:
    """A response APDU: data followed by SW1 SW2."""

    data: bytes
    sw1: int
    sw2: int

    def __post_init__(self) -> None:
        if not (0 <= self.sw1 <= 0xFF and 0 <= self.sw2 <= 0xFF):
            raise EncodeError("SW1 and SW2 must be bytes")
        if not isinstance(self.data, bytes):
            object.__setattr__(self, "data", bytes(self.data))

    @property
    def sw(self) -> int:
        return (self.sw1 << 8) | self.sw2

    @property
    def ok(self) -> bool:
        return self.sw == 0x9000

    def describe(self) -> str:
        return describe_sw(self.sw)

    def encode(self) -> bytes:
        return self.data + bytes((self.sw1, self.sw2))

    def __bytes__(self) -> bytes:
        return self.encode()

    @classmethod
    def from_sw(cls, sw: int, data: bytes = b"") -> ResponseAPDU:
        if not 0 <= sw <= 0xFFFF:
            raise EncodeError(f"status word {sw:#x} is not a 16-bit value")
        return cls(data, sw >> 8, sw & 0xFF)

    @classmethod
    def parse(cls, raw: bytes) -> ResponseAPDU:
        raw = bytes(raw)
        if len(raw) < 2:
            raise ParseError(f"response APDU needs SW1 SW2, got {len(raw)} bytes", offset=len(raw))
        if len(raw) > 65538:
            raise ParseError("response data longer than 65536 bytes", offset=65536)
        return cls(raw[:-2], raw[-2], raw[-1])
