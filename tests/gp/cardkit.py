"""Test helpers: an off-card terminal driving a SoftCard with HostSession, and a tiny CAP file."""

from __future__ import annotations

import os
import struct

from gp.apdu import CommandAPDU, ResponseAPDU
from gp.card import SoftCard
from gp.commands import AID, Select
from gp.scp03 import HostSession, StaticKeys

ISD = AID("A000000151000000")
ISD_KEYS = StaticKeys(bytes(range(0x40, 0x50)), bytes(range(0x50, 0x60)), bytes(range(0x60, 0x70)))
ISD_KVN = 0x30
SSD = AID("A0000005590010")
SSD_KEYS = StaticKeys(b"\x11" * 16, b"\x22" * 16, b"\x33" * 16)
APP_ELF = AID("A0000005590020")
APP_MODULE = AID("A000000559002001")
APP = AID("A00000055900200101")


def new_card(path: str | None = None, **kw: object) -> SoftCard:
    return SoftCard.create(path, isd_aid=ISD, keys=ISD_KEYS, key_version=ISD_KVN, **kw)  # type: ignore[arg-type]


def cap_file(package: bytes = APP_ELF, applets: tuple[bytes, ...] = (APP_MODULE,), padding: int = 0) -> bytes:
    """A minimal CAP-like load file data block: Header (1) and Applet (3) components, plus filler."""
    header = bytes.fromhex("DECAFFED") + bytes([1, 2, 0, 1, 0, len(package)]) + package
    applet = bytes([len(applets)]) + b"".join(bytes([len(a)]) + a + b"\x00\x10" for a in applets)
    body = b""
    for tag, comp in ((1, header), (3, applet)):
        body += bytes([tag]) + struct.pack(">H", len(comp)) + comp
    if padding:
        body += bytes([11]) + struct.pack(">H", padding) + bytes(padding)  # a "static field" filler
    return body


class Terminal:
    """One logical channel of an off-card entity talking to the card."""

    def __init__(self, card: SoftCard, channel: int = 0) -> None:
        self.card = card
        self.channel = channel
        self.session: HostSession | None = None

    def raw(self, apdu: bytes | CommandAPDU) -> ResponseAPDU:
        data = apdu.encode() if isinstance(apdu, CommandAPDU) else apdu
        return ResponseAPDU.parse(self.card.transmit(data))

    def plain(self, apdu: bytes | CommandAPDU) -> ResponseAPDU:
        cmd = apdu if isinstance(apdu, CommandAPDU) else CommandAPDU.parse(apdu)
        return self.raw(cmd.with_channel(self.channel))

    def select(self, aid: bytes | None) -> ResponseAPDU:
        self.session = None
        return self.raw(Select(aid).to_apdu(channel=self.channel))

    def open(
        self, keys: StaticKeys = ISD_KEYS, *, aid: bytes | None = ISD, kvn: int = 0, level: int = 0x33
    ) -> Terminal:
        if aid is not None:
            rsp = self.select(aid)
            assert rsp.sw in (0x9000, 0x6283), hex(rsp.sw)
        host = HostSession(keys, security_level=level, host_challenge=os.urandom(8), key_version=kvn)
        rsp = self.plain(host.initialize_update())
        assert rsp.sw == 0x9000, hex(rsp.sw)
        rsp = self.plain(host.external_authenticate(rsp.data))
        assert rsp.sw == 0x9000, hex(rsp.sw)
        self.session = host
        return self

    def send(self, apdu: bytes | CommandAPDU) -> ResponseAPDU:
        """Through the secure channel when one is open, else plain."""
        cmd = apdu if isinstance(apdu, CommandAPDU) else CommandAPDU.parse(apdu)
        cmd = cmd.with_channel(self.channel)
        if self.session is None:
            return self.raw(cmd)
        out = self.card.transmit(self.session.wrap(cmd.encode()))
        return ResponseAPDU.parse(self.session.unwrap(out))

    def ok(self, apdu: bytes | CommandAPDU) -> bytes:
        rsp = self.send(apdu)
        assert rsp.sw == 0x9000, f"{rsp.sw:04X} for {apdu!r}"
        return rsp.data
