"""Persistence (sealed, atomic) and fuzzing of SoftCard.transmit."""

from __future__ import annotations

import contextlib
import logging
import os
import stat

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gp.card import SD_LOAD_FILE_AID, SD_MODULE_AID, SoftCard, StorageError, storage
from gp.commands import (
    GetStatus,
    InstallForInstall,
    InstallForLoad,
    Privileges,
    SetStatus,
    StatusScope,
    load_blocks,
)
from tests.gp.cardkit import APP_ELF, ISD_KEYS, SSD, Terminal, cap_file, new_card


def test_state_is_sealed_and_the_secret_file_is_private(tmp_path):
    path = str(tmp_path / "card.se")
    card = new_card(path)
    raw = open(path, "rb").read()
    assert ISD_KEYS.enc not in raw and ISD_KEYS.enc.hex().encode() not in raw
    assert stat.S_IMODE(os.stat(path + ".secret").st_mode) == 0o600
    assert SoftCard.open(path).state_dict() == card.state_dict()


def test_a_caller_supplied_state_key_is_required_to_open(tmp_path):
    path = str(tmp_path / "card.se")
    new_card(path, state_key=b"k" * 32)
    assert SoftCard.open(path, state_key=b"k" * 32).atr
    with pytest.raises(StorageError):
        SoftCard.open(path, state_key=b"x" * 32)


def test_a_crash_between_write_and_rename_leaves_the_previous_card(tmp_path, monkeypatch):
    path = str(tmp_path / "card.se")
    card = new_card(path)
    before = card.state_dict()
    on_disk = open(path, "rb").read()

    def crash(tmp: str, final: str) -> None:
        raise OSError(5, "simulated power loss")

    monkeypatch.setattr(storage, "_commit", crash)
    t = Terminal(card)
    t.select(None)
    rsp = t.plain(bytes.fromhex("8050000008") + bytes(8) + b"\x00")  # INITIALIZE UPDATE bumps the counter
    assert rsp.sw == 0x6581
    assert card.state_dict() == before
    assert open(path, "rb").read() == on_disk
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    monkeypatch.undo()
    assert SoftCard.open(path).state_dict() == before


def _valid_apdus() -> list[bytes]:
    lfdb = cap_file()
    out = [
        bytes.fromhex("00A4040000"),
        bytes.fromhex("80CA9F7F00"),
        bytes.fromhex("80CA006600"),
        bytes.fromhex("0070000001"),
        bytes.fromhex("01A4040008A000000151000000"),
        GetStatus(StatusScope.APPLICATIONS).to_apdu().encode(),
        InstallForLoad(APP_ELF).to_apdu().encode(),
        InstallForInstall(SD_LOAD_FILE_AID, SD_MODULE_AID, SSD, Privileges.SECURITY_DOMAIN)
        .to_apdu()
        .encode(),
        SetStatus.lock(SSD).to_apdu().encode(),
        bytes.fromhex("80E400000A4F08A000000151000000"),
        bytes.fromhex("80D8000000"),
        bytes.fromhex("80E2800000"),
    ]
    out += [b.to_apdu().encode() for b in load_blocks(lfdb)]
    return out


VALID = _valid_apdus()


class _Raise(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            raise AssertionError(f"internal error in the card: {record.getMessage()} {record.exc_info}")


@contextlib.contextmanager
def _no_internal_errors():
    logger = logging.getLogger("gp.card.softcard")
    handler = _Raise()
    logger.addHandler(handler)
    raise_exc = logging.raiseExceptions
    logging.raiseExceptions = True
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logging.raiseExceptions = raise_exc


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    base = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.integers(0, 2))
        if op == 0 and base:
            base[draw(st.integers(0, len(base) - 1))] = draw(st.integers(0, 255))
        elif op == 1:
            base.insert(draw(st.integers(0, len(base))), draw(st.integers(0, 255)))
        elif base:
            del base[draw(st.integers(0, len(base) - 1))]
    return bytes(base)


APDUS = st.lists(st.one_of(st.binary(max_size=300), mutated()), min_size=1, max_size=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(apdus=APDUS, in_session=st.booleans(), wrap=st.booleans())
def test_transmit_never_raises_and_the_disk_matches_memory(tmp_path_factory, apdus, in_session, wrap):
    path = str(tmp_path_factory.mktemp("fuzz") / "card.se")
    card = new_card(path)
    t = Terminal(card)
    if in_session:
        t.open(level=0x13)
    for apdu in apdus:
        if wrap and t.session is not None:
            try:
                apdu = t.session.wrap(apdu)
            except Exception:  # the host refuses to wrap garbage: send it raw then
                pass
        with _no_internal_errors():
            rsp = card.transmit(apdu)
        assert isinstance(rsp, bytes) and len(rsp) >= 2
        assert len(rsp) <= 258
    # a crash now: the disk holds everything but the counters, which resume at or above the live ones
    crashed = SoftCard.open(path).state_dict()
    live = card.state_dict()
    assert _without_counters(crashed) == _without_counters(live)
    assert all(c >= n for c, n in zip(_counters(crashed), _counters(live), strict=True))
    # a clean close: the disk matches memory exactly
    assert card.close()
    assert SoftCard.open(path).state_dict() == card.state_dict()


def _counters(state: dict) -> list[int]:
    return [ks["counter"] for a in state["applications"] for ks in a["keys"]]


def _without_counters(state: dict) -> dict:
    apps = [
        {**a, "keys": [{k: v for k, v in ks.items() if k not in ("counter", "reserved")} for ks in a["keys"]]}
        for a in state["applications"]
    ]
    return {**state, "applications": apps}
