"""PcscBackend against a soft card in pcscd's vpcd reader "Virtual PCD 00 01" (marker ``services``)."""

from __future__ import annotations

import gc
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from agent.backends.pcsc import PcscBackend
from tests.agent.fakes import GET_CPLC, SELECT_ISD
from tests.conftest import service_unavailable
from tests.gp.cardkit import new_card

pytestmark = pytest.mark.services

SOCKET = "/run/pcscd/pcscd.comm"
READER = "Virtual PCD 00 01"
PORT = 35964


@pytest.fixture(scope="module")
def pcscd() -> Iterator[None]:
    if not shutil.which("pcscd") or not os.path.exists("/etc/reader.conf.d/vpcd"):
        service_unavailable("pcscd or vsmartcard-vpcd is not installed")
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
            service_unavailable("pcscd did not come up")
    yield
    gc.collect()  # pyscard releases PC/SC contexts in finalisers: run them while pcscd is up
    if started is not None:
        started.send_signal(signal.SIGTERM)
        started.wait(timeout=10)


@pytest.fixture
def card_in_reader(pcscd, tmp_path) -> Iterator[str]:
    path = str(tmp_path / "card.se")
    new_card(path, serial=bytes.fromhex("0BADF00D"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "gp.card.vpcd", path, "--port", str(PORT)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
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


def test_the_pcsc_backend_relays_apdus_and_reads_the_cplc_through_pcscd(card_in_reader) -> None:
    backend = PcscBackend(READER, connect_attempts=40, retry_interval=0.25)
    try:
        assert backend.reader.startswith(READER)
        assert backend.identifiers()["se_serial"] == "0BADF00D"
        assert backend.transmit(SELECT_ISD)[-2:] == b"\x90\x00"
        rsp = backend.transmit(GET_CPLC)
        assert rsp[:3] == bytes.fromhex("9F7F2A") and rsp[-2:] == b"\x90\x00"
        backend.reset()
        assert backend.transmit(SELECT_ISD)[-2:] == b"\x90\x00"
    finally:
        backend.close()
