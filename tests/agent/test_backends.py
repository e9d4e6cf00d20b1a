"""Backends: the soft SE keeps sessions across exchanges; PC/SC transport rules against a scripted reader."""

from __future__ import annotations

import os

import pytest
from smartcard.Exceptions import CardConnectionException, NoCardException
from smartcard.scard import SCARD_W_REMOVED_CARD, SCARD_W_RESET_CARD

from agent.backends import CardBackend, open_backend
from agent.backends.pcsc import PcscBackend, get_response_cla
from agent.backends.soft import SoftBackend
from agent.errors import CardRemoved, ConfigError, ReaderNotFound
from gp.scp03 import HostSession
from tests.gp.cardkit import ISD, ISD_KEYS


def test_open_backend_parses_soft_and_refuses_unknown_kinds(card_path: str) -> None:
    backend = open_backend(f"soft:{card_path}")
    assert isinstance(backend, SoftBackend) and isinstance(backend, CardBackend)
    for spec in ("pkcs11:slot0", "soft", "pcsc:", "nothing"):
        with pytest.raises(ConfigError, match="backend"):
            open_backend(spec)


def test_a_missing_soft_card_is_a_config_error_and_creates_nothing(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        SoftBackend(str(tmp_path / "none.se"))
    assert os.listdir(tmp_path) == []


def test_the_soft_backend_reports_the_cplc_serial(soft_backend: SoftBackend) -> None:
    ids = soft_backend.identifiers()
    assert ids["se_serial"] == "C0FFEE01"
    assert len(bytes.fromhex(ids["cplc"])) == 42


def test_an_interactive_scp03_session_survives_between_transmits(soft_backend: SoftBackend) -> None:
    # INITIALIZE UPDATE in one exchange, EXTERNAL AUTHENTICATE in the next: the card object stays open
    assert soft_backend.transmit(bytes.fromhex("00A4040008") + ISD + b"\x00")[-2:] == b"\x90\x00"
    host = HostSession(ISD_KEYS, security_level=0x01, host_challenge=os.urandom(8))
    rsp = soft_backend.transmit(host.initialize_update())
    assert rsp[-2:] == b"\x90\x00"
    assert soft_backend.transmit(host.external_authenticate(rsp[:-2]))[-2:] == b"\x90\x00"


class FakeReader:
    def __init__(self, name: str, conn: FakeConnection) -> None:
        self.name = name
        self.conn = conn

    def __str__(self) -> str:
        return self.name

    def createConnection(self) -> FakeConnection:  # noqa: N802 - pyscard's naming
        return self.conn


class FakeConnection:
    """Answers from a script of (expected C-APDU, answer) where the answer is (data, sw1, sw2) or an exception."""

    def __init__(self, script: list[tuple[bytes, object]] | None = None) -> None:
        self.script = list(script or [])
        self.sent: list[bytes] = []
        self.connects = 0
        self.connect_error: Exception | None = None

    def connect(self, protocol: int | None = None) -> None:
        self.connects += 1
        if self.connect_error is not None:
            raise self.connect_error

    def transmit(self, apdu: list[int]) -> tuple[list[int], int, int]:
        raw = bytes(apdu)
        self.sent.append(raw)
        expected, answer = self.script.pop(0)
        assert raw == expected, f"{raw.hex()} != {expected.hex()}"
        if isinstance(answer, Exception):
            raise answer
        data, sw1, sw2 = answer  # type: ignore[misc]
        return list(data), sw1, sw2

    def reconnect(self, disposition: int | None = None) -> None:
        pass

    def disconnect(self) -> None:
        pass

    def release(self) -> None:
        pass


def _pcsc(
    conn: FakeConnection, names: tuple[str, ...] = ("Virtual PCD 00 01",), name: str = "Virtual PCD 00 01"
):
    readers = [FakeReader(n, conn) for n in names]
    return PcscBackend(name, list_readers=lambda: readers, sleep=lambda s: None, connect_attempts=2)


def test_61xx_is_followed_by_get_response_on_the_same_channel() -> None:
    cmd = bytes.fromhex("81CA9F7F00")
    conn = FakeConnection(
        [
            (cmd, (b"", 0x61, 0x04)),
            (bytes.fromhex("01C0000004"), (b"\x01\x02\x03\x04", 0x61, 0x02)),
            (bytes.fromhex("01C0000002"), (b"\x05\x06", 0x90, 0x00)),
        ]
    )
    assert _pcsc(conn).transmit(cmd) == bytes.fromhex("0102030405069000")


def test_6cxx_resends_the_command_with_the_right_le() -> None:
    cmd = bytes.fromhex("80CA9F7F00")
    conn = FakeConnection(
        [(cmd, (b"", 0x6C, 0x2D)), (bytes.fromhex("80CA9F7F2D"), (b"\xaa" * 45, 0x90, 0x00))]
    )
    assert _pcsc(conn).transmit(cmd) == b"\xaa" * 45 + b"\x90\x00"


def test_get_response_cla_keeps_the_logical_channel() -> None:
    assert [get_response_cla(c) for c in (0x00, 0x84, 0x83, 0x40, 0xC5, 0x4F)] == [0, 0, 3, 0x40, 0x45, 0x4F]


def test_a_reset_card_is_reconnected_and_the_command_sent_once_more() -> None:
    cmd = bytes.fromhex("00A4040000")
    reset = CardConnectionException("reset", hresult=SCARD_W_RESET_CARD)
    conn = FakeConnection([(cmd, reset), (cmd, (b"", 0x90, 0x00))])
    backend = _pcsc(conn)
    assert backend.transmit(cmd) == b"\x90\x00"
    assert conn.connects == 2


def test_a_removed_card_is_reconnected_but_the_command_is_not_resent() -> None:
    cmd = bytes.fromhex("80E60C0000")
    conn = FakeConnection([(cmd, CardConnectionException("removed", hresult=SCARD_W_REMOVED_CARD))])
    backend = _pcsc(conn)
    with pytest.raises(CardRemoved, match="outcome unknown"):
        backend.transmit(cmd)
    assert conn.sent == [cmd] and conn.connects == 2


def test_a_card_that_does_not_come_back_is_card_removed() -> None:
    cmd = bytes.fromhex("00A4040000")
    conn = FakeConnection([(cmd, CardConnectionException("removed", hresult=SCARD_W_REMOVED_CARD))])
    backend = _pcsc(conn)
    conn.connect_error = NoCardException("gone", hresult=SCARD_W_REMOVED_CARD)
    with pytest.raises(CardRemoved, match="reconnecting failed"):
        backend.transmit(cmd)


def test_a_reader_is_chosen_by_exact_name_or_unique_prefix() -> None:
    conn = FakeConnection()
    names = ("Virtual PCD 00 00", "Virtual PCD 00 01", "Other Reader 1")
    assert _pcsc(conn, names, "Virtual PCD 00 01").reader == "Virtual PCD 00 01"
    assert _pcsc(conn, names, "Other").reader == "Other Reader 1"
    with pytest.raises(ReaderNotFound, match="several"):
        _pcsc(conn, names, "Virtual PCD")
    with pytest.raises(ReaderNotFound, match="available: Virtual PCD 00 00"):
        _pcsc(conn, names, "Missing")
