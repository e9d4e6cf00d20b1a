"""The token as the agent's backend: the runner signs with it and refuses APDU scripts; the local API
answers session keys derived in it, exactly as on an SE (docs/session-keys.md §5)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.backends.pkcs11 import TokenBackend
from agent.config import AgentConfig, LocalApiApp, LocalApiSettings, TokenSettings
from agent.journal import Journal
from agent.localapi import CardAccess, LocalApiServer
from agent.runner import Runner
from agent.transport import HttpTransport
from gp import tokenwrap
from gp.sessionkeys import derive_session_key
from tests.agent.fakes import SELECT_ISD, FakeServer, HttpFakePortal, script

pytestmark = pytest.mark.services

SD = "A000000151535001"
SERVICE = "meter.reading"


def test_the_runner_signs_with_the_token_and_rejects_apdu_scripts_on_it(softhsm_agent, tmp_path):
    token = softhsm_agent.token
    signer = token.identity_signer()
    portal = HttpFakePortal(FakeServer(poll_after=12, queue=[script("i1", (SELECT_ISD, ("9000",)))]))
    portal.register(signer.public_key())
    with portal.serving():
        config = AgentConfig(
            server_url=portal.url,
            serial="GW-TEE-3",
            identity_key=None,
            backend="pkcs11:agent",
            journal=tmp_path / "journal.sqlite",
            token=TokenSettings(Path(softhsm_agent.library), "agent", tmp_path / "pin"),
        )
        journal = Journal(config.journal)
        transport = HttpTransport(config, signer)
        try:
            Runner(config, transport, CardAccess(TokenBackend(token)), journal).run_once()
        finally:
            transport.close()
            journal.close()
    result = portal.fake.results["i1"]
    assert result.status == "rejected" and "takes no APDU scripts" in result.detail
    agent = portal.fake.requests[0].agent
    assert agent["backend"] == "pkcs11" and agent["se_serial"] == token.device_id().hex().upper()
    assert len(portal.nonces) == len(portal.fake.requests) >= 2  # every exchange verified


@pytest.fixture
def local_api(softhsm_agent) -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="tlp", dir="/tmp"))
    app = LocalApiApp("meter", os.getuid(), SD, frozenset({SERVICE}))
    settings = LocalApiSettings(directory / "agent.sock", None, (app,))
    with LocalApiServer(settings, CardAccess(TokenBackend(softhsm_agent.token))):
        yield settings.socket
    shutil.rmtree(directory, ignore_errors=True)


def _ask(path: Path, **fields: object) -> tuple[int, dict]:
    raw = json.dumps({"sd": SD, "service": SERVICE, "epoch": 20419} | fields).encode()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(str(path))
    s.sendall(f"POST /session-key HTTP/1.1\r\nHost: x\r\nContent-Length: {len(raw)}\r\n\r\n".encode() + raw)
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_the_local_api_answers_session_keys_derived_in_the_token(softhsm_agent, local_api):
    token = softhsm_agent.token
    label = tokenwrap.master_key_label(SD, 0x72)
    assert _ask(local_api)[1]["error"]["code"] == "no_master_key"
    master = os.urandom(32)
    token.receive_key(tokenwrap.wrap_for_token(master, token.receive_public_point(), label), replace=True)
    try:
        status, body = _ask(local_api)
        assert status == 200, body
        expected = derive_session_key(master, service=SERVICE, epoch=20419, se_id=token.device_id())
        assert body == {"sd": SD, "service": SERVICE, "epoch": 20419, "key": expected.hex().upper()}
        assert _ask(local_api, service="other")[0] == 403  # grants are the same as on an SE
    finally:
        token.delete_key(label)
