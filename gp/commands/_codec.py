"""Small helpers for the length-value fields of GP command data (GP CS v2.3.1 §11.1.5)."""

from __future__ import annotations

from gp.apdu import CommandAPDU
from gp.errors import EncodeError, ParseError

CLA_GP = 0x80


def lv(value: bytes) -> bytes:
    """A one-byte length followed by ``value``."""
    if len(value) > 255:
        raise EncodeError(f"LV field of {len(value)} bytes does not fit a one-byte length")
    return bytes([len(value)]) + value


class Reader:
    """Sequential reader over command data; every failure is a :class:`ParseError` with the offset."""

    def __init__(self, data: bytes, *, base: int = 5) -> None:
        self.data = bytes(data)
        self.pos = 0
        self.base = base  # offset of data[0] in the APDU, for error messages

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def byte(self, what: str) -> int:
        if self.pos >= len(self.data):
            raise ParseError(f"{what} expected, data ended", offset=self.offset)
        b = self.data[self.pos]
        self.pos += 1
        return b

    def take(self, n: int, what: str) -> bytes:
        if n > self.remaining():
            raise ParseError(f"{what}: {n} bytes announced, {self.remaining()} left", offset=self.offset)
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def lv(self, what: str) -> bytes:
        n = self.byte(f"length of {what}")
        return self.take(n, what)

    def rest(self) -> bytes:
        out = self.data[self.pos :]
        self.pos = len(self.data)
        return out

    def expect_end(self, what: str) -> None:
        if not self.at_end():
            raise ParseError(f"{self.remaining()} unexpected bytes after {what}", offset=self.offset)


def expect_ins(apdu: CommandAPDU, ins: int, name: str) -> None:
    if apdu.ins != ins:
        raise ParseError(f"INS {apdu.ins:02X} is not {name} ({ins:02X})", offset=1)


def gp_apdu(
    ins: int, p1: int, p2: int, data: bytes = b"", *, le: int | None = None, cla: int = CLA_GP
) -> CommandAPDU:
    return CommandAPDU(cla, ins, p1, p2, data, le)
