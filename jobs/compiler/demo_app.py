"""The "Tessera demo meter app": a tiny synthetic load file for tests and the demo.

A Java Card CAP file reduced to what a GlobalPlatform card records at load time (GP Card Spec
v2.3.1 §9.3.5: the Load File Data Block is ``C4``; the executable modules it contains are read from
the CAP Applet component, Java Card VM spec §6.5): a Header component (tag 1, magic ``DECAFFED``,
package AID) and an Applet component (tag 3, one applet = the meter module), plus optional filler
(a static-field component, tag 11) to exercise multi-block LOAD.  No bytecode: :class:`gp.card.SoftCard`
has no VM and answers nothing but SELECT for applications.

AIDs live under ``F054455353`` ("F0" + "TESS"): an unregistered proprietary RID (ISO/IEC 7816-5
category ``F``), so they can never collide with a real registered application.
"""

from __future__ import annotations

import struct

from gp.commands import AID, DGI

__all__ = [
    "DEMO_INSTANCE_AID",
    "DEMO_LOAD_FILE_AID",
    "DEMO_MODULE_AID",
    "DEMO_NAME",
    "DEMO_RID",
    "demo_load_file",
    "demo_personalization",
]

DEMO_NAME = "Tessera demo meter app"
DEMO_RID = bytes.fromhex("F054455353")
DEMO_LOAD_FILE_AID = AID(DEMO_RID + bytes.fromhex("4D01"))  # package "M", version 1
DEMO_MODULE_AID = AID(DEMO_RID + bytes.fromhex("4D0101"))  # the meter applet class
DEMO_INSTANCE_AID = AID(DEMO_RID + bytes.fromhex("4D010101"))  # the default instance


def demo_load_file(
    *,
    package_aid: bytes = DEMO_LOAD_FILE_AID,
    applets: tuple[bytes, ...] = (DEMO_MODULE_AID,),
    filler: int = 0,
) -> bytes:
    """The Load File Data Block (the content of ``C4``): CAP Header + Applet components (+ filler)."""
    header = bytes.fromhex("DECAFFED") + bytes([1, 2, 0, 1, 0, len(package_aid)]) + bytes(package_aid)
    applet = bytes([len(applets)]) + b"".join(bytes([len(a)]) + bytes(a) + b"\x00\x10" for a in applets)
    body = b""
    for tag, comp in ((1, header), (3, applet)):
        body += bytes([tag]) + struct.pack(">H", len(comp)) + comp
    if filler:
        body += bytes([11]) + struct.pack(">H", filler) + bytes(filler)
    return body


def demo_personalization(*, meter_id: str = "TESSERA-0001", tariff: int = 1) -> list[DGI]:
    """Demo personalisation records: DGI 0101 meter id (ASCII), DGI 0102 tariff (1 byte)."""
    return [DGI(0x0101, meter_id.encode()), DGI(0x0102, bytes([tariff & 0xFF]))]
