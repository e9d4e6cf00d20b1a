"""BER-TLV as used in GlobalPlatform data (GP Card Spec v2.3.1 §11.1.8 and Annex F; ISO/IEC 8825-1 §8.1).

- Tags of 1-4 bytes; a first byte with b5..b1 = ``1F`` announces subsequent bytes, each with b8 set
  except the last.  A tag is handled as the unsigned big-endian integer of its bytes
  (``0x9F70``, ``0xBF21``, ``0x5F20``), the way GP tables write them.
- Lengths in short form (``00``-``7F``) or long form ``81``/``82``/``83``/``84`` + 1-4 bytes.
  Non-minimal long forms are accepted on input (BER allows them; cards emit ``81 05``); the
  indefinite form ``80`` and ``85``-``FF`` are rejected.  Output is always minimal (DER-like).
- Constructed tags (b6 of the first tag byte) are parsed recursively into ``children``.

Parsing never raises anything but :class:`gp.errors.ParseError`, whose offset is absolute in the
outermost buffer.  Nesting deeper than :data:`MAX_DEPTH` is rejected rather than recursed into.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from gp.errors import EncodeError, ParseError

__all__ = [
    "MAX_DEPTH",
    "TLV",
    "encode",
    "encode_length",
    "encode_tag",
    "find",
    "find_all",
    "is_constructed",
    "parse_all",
    "parse_one",
]

MAX_DEPTH = 32
_MAX_TAG_BYTES = 4
_MAX_LENGTH_BYTES = 4


def is_constructed(tag: int) -> bool:
    """b6 of the first tag byte."""
    return bool(_tag_first_byte(tag) & 0x20)


def _tag_first_byte(tag: int) -> int:
    if tag <= 0:
        raise EncodeError(f"tag {tag!r} is not positive")
    return tag >> (8 * ((tag.bit_length() - 1) // 8))


_TAG_BYTES: dict[int, bytes] = {}  # tags already checked: GP uses a few dozen, encoded constantly


def encode_tag(tag: int) -> bytes:
    """The bytes of ``tag``, after checking they form one well-formed BER tag."""
    raw = _TAG_BYTES.get(tag)
    if raw is not None:
        return raw
    raw = _check_tag(tag)
    if len(_TAG_BYTES) < 4096:
        _TAG_BYTES[tag] = raw
    return raw


def _check_tag(tag: int) -> bytes:
    if not 0 < tag < 1 << (8 * _MAX_TAG_BYTES):
        raise EncodeError(f"tag {tag:#x} out of range (1 to {_MAX_TAG_BYTES} bytes)")
    raw = tag.to_bytes((tag.bit_length() + 7) // 8, "big")
    if raw[0] == 0xFF:
        raise EncodeError("tag first byte 'FF' is invalid (ISO/IEC 7816-4 §5.2.2.1)")
    multi = raw[0] & 0x1F == 0x1F
    if not multi:
        if len(raw) != 1:
            raise EncodeError(f"tag {tag:#x}: first byte does not announce subsequent bytes")
        return raw
    if len(raw) == 1:
        raise EncodeError(f"tag {tag:#x}: first byte announces subsequent bytes that are missing")
    for i, b in enumerate(raw[1:], start=1):
        last = i == len(raw) - 1
        if bool(b & 0x80) == last:
            raise EncodeError(f"tag {tag:#x}: byte {i} has a wrong continuation bit")
    return raw


def encode_length(length: int) -> bytes:
    """Minimal BER length: short form below 128, then ``81``/``82``/``83``/``84`` + bytes."""
    if length < 0:
        raise EncodeError(f"negative length {length}")
    if length < 0x80:
        return bytes([length])
    size = (length.bit_length() + 7) // 8
    if size > _MAX_LENGTH_BYTES:
        raise EncodeError(f"length {length} needs more than {_MAX_LENGTH_BYTES} length bytes")
    return bytes([0x80 | size]) + length.to_bytes(size, "big")


def encode(tag: int, value: bytes | Iterable[TLV] = b"") -> bytes:
    """One TLV: ``tag`` with a primitive value, or with children encoded one after the other."""
    if isinstance(value, bytes):
        body = value
    elif isinstance(value, bytearray):
        body = bytes(value)
    else:
        body = b"".join([child.encode() for child in value])
    n = len(body)
    return encode_tag(tag) + (bytes((n,)) if n < 0x80 else encode_length(n)) + body


@dataclass(frozen=True, slots=True)
class TLV:
    """One data object.  For a constructed tag ``children`` holds the parsed value."""

    tag: int
    value: bytes
    children: tuple[TLV, ...] = field(default=())

    @classmethod
    def build(cls, tag: int, value: bytes | Iterable[TLV] = b"") -> TLV:
        """A TLV from a primitive value, or from children for a constructed tag."""
        if isinstance(value, bytes | bytearray):
            if is_constructed(tag):
                return parse_one(encode(tag, bytes(value)))
            return cls(tag, bytes(value))
        children = tuple(value)
        return cls(tag, b"".join(c.encode() for c in children), children)

    @property
    def constructed(self) -> bool:
        return is_constructed(self.tag)

    @property
    def tag_bytes(self) -> bytes:
        return encode_tag(self.tag)

    def encode(self) -> bytes:
        return encode(self.tag, self.value)

    def find(self, tag: int) -> TLV | None:
        """The first descendant (depth-first, not self) with ``tag``."""
        return find(self.children, tag)

    def find_all(self, tag: int) -> list[TLV]:
        return find_all(self.children, tag)

    def __iter__(self) -> Iterator[TLV]:
        return iter(self.children)

    def __repr__(self) -> str:
        tag = self.tag_bytes.hex().upper() if self.tag > 0 else str(self.tag)
        if self.children:
            return f"TLV({tag}, children={list(self.children)!r})"
        return f"TLV({tag}, {self.value.hex().upper()})"


def find(tlvs: Iterable[TLV], tag: int) -> TLV | None:
    """Depth-first search for the first TLV with ``tag`` among ``tlvs`` and their descendants."""
    for t in tlvs:
        if t.tag == tag:
            return t
        hit = find(t.children, tag)
        if hit is not None:
            return hit
    return None


def find_all(tlvs: Iterable[TLV], tag: int) -> list[TLV]:
    """Every TLV with ``tag`` among ``tlvs`` and their descendants, in document order."""
    out: list[TLV] = []
    for t in tlvs:
        if t.tag == tag:
            out.append(t)
        out.extend(find_all(t.children, tag))
    return out


def _read_tag(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    if pos >= end:
        raise ParseError("tag expected, data ended", offset=pos)
    first = buf[pos]
    tag = first
    pos += 1
    if first & 0x1F != 0x1F:
        return tag, pos
    count = 1
    while True:
        if pos >= end:
            raise ParseError("multi-byte tag truncated", offset=pos)
        b = buf[pos]
        tag = (tag << 8) | b
        pos += 1
        count += 1
        if not b & 0x80:
            return tag, pos
        if count >= _MAX_TAG_BYTES:
            raise ParseError(f"tag longer than {_MAX_TAG_BYTES} bytes", offset=pos)


def _read_length(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    if pos >= end:
        raise ParseError("length expected, data ended", offset=pos)
    first = buf[pos]
    if first < 0x80:
        return first, pos + 1
    if first == 0x80:
        raise ParseError("indefinite length '80' is not allowed", offset=pos)
    size = first & 0x7F
    if size > _MAX_LENGTH_BYTES:
        raise ParseError(f"length form {first:02X} is not supported (81 to 84)", offset=pos)
    if pos + 1 + size > end:
        raise ParseError(f"length field of {size} bytes truncated", offset=pos)
    return int.from_bytes(buf[pos + 1 : pos + 1 + size], "big"), pos + 1 + size


def _parse_at(buf: bytes, pos: int, end: int, depth: int, allow_padding: bool) -> tuple[TLV, int]:
    """The TLV starting at ``pos`` and the position just after it."""
    start = pos
    if buf[start] in (0x00, 0xFF):
        raise ParseError(
            f"byte {buf[start]:02X} cannot start a tag (padding is not allowed here)", offset=start
        )
    tag, pos = _read_tag(buf, pos, end)
    length, pos = _read_length(buf, pos, end)
    if length > end - pos:
        raise ParseError(f"value of {length} bytes overruns the {end - pos} bytes available", offset=pos)
    value = buf[pos : pos + length]
    children: tuple[TLV, ...] = ()
    if buf[start] & 0x20:
        children = tuple(_parse_range(buf, pos, pos + length, depth + 1, allow_padding))
    return TLV(tag, value, children), pos + length


def _parse_range(buf: bytes, pos: int, end: int, depth: int, allow_padding: bool) -> list[TLV]:
    if depth > MAX_DEPTH:
        raise ParseError(f"TLV nesting deeper than {MAX_DEPTH}", offset=pos)
    out: list[TLV] = []
    while pos < end:
        if allow_padding and buf[pos] in (0x00, 0xFF):
            pos += 1
            continue
        tlv, pos = _parse_at(buf, pos, end, depth, allow_padding)
        out.append(tlv)
    return out


def parse_all(data: bytes, *, allow_padding: bool = False) -> list[TLV]:
    """Every top-level TLV in ``data``, constructed ones parsed recursively.

    ``allow_padding`` skips ``00``/``FF`` bytes before, between and after data objects
    (ISO/IEC 7816-4 §5.2.2.1, e.g. erased records); otherwise such a byte is an invalid tag.
    """
    buf = bytes(data)
    return _parse_range(buf, 0, len(buf), 0, allow_padding)


def parse_one(data: bytes) -> TLV:
    """Exactly one TLV spanning all of ``data``."""
    buf = bytes(data)
    if not buf:
        raise ParseError("expected one TLV, data is empty", offset=0)
    tlv, pos = _parse_at(buf, 0, len(buf), 0, False)
    if pos != len(buf):
        raise ParseError(f"{len(buf) - pos} bytes follow the TLV", offset=pos)
    return tlv
