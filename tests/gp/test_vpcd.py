"""The soft card behind pcscd's vpcd reader, driven by pyscard and opensc-tool (marker ``services``)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from gp.commands import GetStatus, StatusScope, parse_status_response
from gp.scp03 import HostSession
from tests.gp.cardkit import ISD, ISD_KEYS, new_card

pytestmark = pytest.mark.services

SOCKET = "/run/pcscd/pcscd.comm"
READER = "Virtual PCD 00 00"
REQUIRED = os.environ.get("TESSERA_REQUIRE_SERVICES") == "1"


def _unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"TESSERA_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def pcscd() -> Iterator[None]:
    if not shutil.which("pcscd") or not os.path.exists("/etc/reader.conf.d/vpcd"):
        _unavailable("pcscd or vsmartcard-vpcd is not installed")
    try:
        import smartcard  # noqa: F401
    except ImportError:
        _unavailable("pyscard is not installed")
    started: subprocess.Popen[bytes] | None = None
    if not os.path.exists(SOCKET):
        started = subprocess.Popen(
            ["pcscd", "--foreground"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for _ in range(100):
            if os.path.exists(SOCKET):
                break
            time.sleep(0.1)
        else:
            started.terminate()
            _unavailable("pcscd did not come up")
    yield
    if started is not None:
        started.send_signal(signal.SIGTERM)
        started.wait(timeout=10)


@pytest.fixture
def card_process(pcscd, tmp_path) -> Iterator[str]:
    path = str(tmp_path / "card.se")
    new_card(path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gp.card.vpcd", path, "--port", "35963"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield path
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, proc.stderr.read().decode() if proc.stderr else ""


def _connect():
    from smartcard.System import readers

    deadline = time.monotonic() + 10
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            reader = next(r for r in readers() if str(r).startswith(READER))
            conn = reader.createConnection()
        except Exception as e:
            last = e
            time.sleep(0.2)
            continue
        try:
            conn.connect()
            return conn
        except Exception as e:  # NoCardException until the card process is connected
            last = e
            with contextlib.suppress(Exception):
                conn.release()
            time.sleep(0.2)
    pytest.fail(f"card did not appear in {READER}: {last}")


def test_a_full_scp03_session_through_pcsc(card_process):
    conn = _connect()

    def tx(apdu: bytes) -> bytes:
        data, sw1, sw2 = conn.transmit(list(apdu))
        return bytes(data) + bytes([sw1, sw2])

    assert tx(bytes.fromhex("00A4040008") + ISD + b"\x00")[-2:] == b"\x90\x00"
    host = HostSession(ISD_KEYS, security_level=0x33, host_challenge=os.urandom(8))
    rsp = tx(host.initialize_update())
    assert rsp[-2:] == b"\x90\x00"
    assert tx(host.external_authenticate(rsp[:-2]))[-2:] == b"\x90\x00"
    out = host.unwrap(tx(host.wrap(GetStatus(StatusScope.ISD).to_apdu().encode())))
    assert out[-2:] == b"\x90\x00"
    [entry] = parse_status_response(out[:-2], StatusScope.ISD)
    assert entry.aid == ISD
    conn.disconnect()
    conn.release()


def test_plain_apdus_with_opensc_tool(card_process):
    if not shutil.which("opensc-tool"):
        _unavailable("opensc-tool is not installed")
    conn = _connect()
    conn.disconnect()
    conn.release()
    listing = subprocess.run(["opensc-tool", "-l"], capture_output=True, text=True, timeout=20).stdout
    index = next(
        (
            m.group(1)
            for line in listing.splitlines()
            if READER in line and (m := re.match(r"\s*(\d+)", line))
        ),
        None,
    )
    assert index is not None, listing
    run = subprocess.run(
        ["opensc-tool", "-r", index, "-s", "00A4040008" + ISD.hex(), "-s", "80CA9F7F00"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    text = run.stdout.upper()
    assert run.returncode == 0, run.stderr
    assert text.count("SW1=0X90, SW2=0X00") == 2 or text.count("90 00") >= 2, text
    assert "9F 7F 2A" in text
