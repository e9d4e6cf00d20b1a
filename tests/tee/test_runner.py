"""The agent's runner with token operations (agent/runner.py, agent/tokenops.py) on a SoftHSMv2
token: journalled like APDU scripts, never run twice, settled honestly after a crash."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent import tokenops
from agent.backends.pkcs11 import TokenBackend
from agent.config import AgentConfig, PollSettings
from agent.journal import Journal
from agent.localapi import CardAccess
from agent.protocol import KIND_TOKEN_OPS, Command, WorkItem
from agent.runner import Runner
from gp import tokenwrap
from tests.agent.fakes import FakeServer

AID = "A0000001515350AA01"


@pytest.fixture
def config(tmp_path: Path) -> AgentConfig:
    return AgentConfig(
        server_url="http://127.0.0.1:9",
        serial="GW-TEE-1",
        identity_key=tmp_path / "unused.pem",
        backend="pkcs11:tee-a",
        journal=tmp_path / "journal.sqlite",
        poll=PollSettings(min_s=1.0, max_s=600.0, backoff_base_s=2.0, backoff_cap_s=60.0),
    )


@pytest.fixture
def journal(tmp_path: Path):
    j = Journal(tmp_path / "journal.sqlite")
    yield j
    j.close()


def _item(item: str, *ops: bytes) -> WorkItem:
    return WorkItem(item, "job-1", KIND_TOKEN_OPS, 0, tuple(Command(op, ("9000",)) for op in ops))


def _receive(token, key: bytes, kvn: int = 0x30) -> bytes:
    env = tokenwrap.wrap_for_token(key, token.receive_public_point(), tokenwrap.master_key_label(AID, kvn))
    return tokenops.encode_op(
        "receive_key",
        expect=["received", "present"],
        envelope=env.to_json(),
        kcv=tokenops.key_check_value(key),
    )


def test_token_operations_run_in_order_and_their_answers_are_reported(token, config, journal) -> None:
    key = os.urandom(16)
    delete_old = tokenops.encode_op("delete_key", expect=["deleted", "absent"], label=f"tessera/sd/{AID}/2F")
    server = FakeServer(queue=[_item("t1", _receive(token, key), delete_old)])
    Runner(config, server, CardAccess(TokenBackend(token)), journal).run_once()
    result = server.results["t1"]
    assert result.status == "completed"
    answers = [tokenops.decode_result(r) for r in result.responses]
    assert [(a["outcome"], ok) for a, ok in answers] == [("received", True), ("absent", True)]
    assert answers[0][0]["kcv"] == tokenops.key_check_value(key)
    # the same item again is never run again: its recorded result is sent once more
    server.queue.append(_item("t1", _receive(token, os.urandom(16))))
    Runner(config, server, CardAccess(TokenBackend(token)), journal).run_once()
    assert [k.label for k in token.list_keys()] == [f"tessera/sd/{AID}/30"]
    assert token.cmac(f"tessera/sd/{AID}/30", bytes(16))[:3].hex().upper() == tokenops.key_check_value(key)


def test_an_unexpected_outcome_fails_the_item_and_stops_it(token, config, journal) -> None:
    token.receive_key(
        tokenwrap.wrap_for_token(os.urandom(16), token.receive_public_point(), f"tessera/sd/{AID}/30")
    )
    listing = tokenops.encode_op("list", expect=["listed"], prefix="tessera/sd/")
    server = FakeServer(queue=[_item("t2", _receive(token, os.urandom(16)), listing)])
    Runner(config, server, TokenBackend(token), journal).run_once()
    result = server.results["t2"]
    assert result.status == "failed" and "outcome conflict" in result.detail
    assert len(result.responses) == 1  # the listing never ran


def test_token_operations_are_rejected_without_a_token_and_malformed_ones_before_the_token(
    token, config, journal, tmp_path
) -> None:
    from agent.backends.soft import SoftBackend
    from tests.gp.cardkit import new_card  # a soft SE, no token

    card = str(tmp_path / "card.se")
    new_card(card, serial=bytes.fromhex("C0FFEE01"))
    listing = tokenops.encode_op("list", expect=["listed"], prefix="tessera/sd/")
    server = FakeServer(queue=[_item("t3", listing)])
    Runner(config, server, SoftBackend(card), journal).run_once()
    assert server.results["t3"].status == "rejected" and "no token" in server.results["t3"].detail
    server = FakeServer(queue=[_item("t4", b'{"op":"format","expect":["x"]}')])
    Runner(config, server, TokenBackend(token), journal).run_once()
    assert (
        server.results["t4"].status == "rejected"
        and "malformed token operation" in server.results["t4"].detail
    )


def test_a_crash_between_operations_is_settled_interrupted_and_the_retry_finds_the_key_present(
    token, config, journal
) -> None:
    key = os.urandom(16)
    receive = _receive(token, key)
    delete_old = tokenops.encode_op("delete_key", expect=["deleted", "absent"], label=f"tessera/sd/{AID}/2F")
    item = _item("t5", receive, delete_old)
    # the agent journalled the item, ran operation 0 and died while sending operation 1
    journal.received(item)
    journal.sending("t5", 0)
    journal.response("t5", 0, tokenops.execute(token, receive).encode())
    journal.sending("t5", 1)
    server = FakeServer(queue=[_item("t6", _receive(token, key), delete_old)])
    runner = Runner(config, server, TokenBackend(token), journal)
    runner.resume()
    runner.run_once()
    assert server.results["t5"].status == "interrupted"
    assert server.results["t6"].status == "completed"
    assert tokenops.decode_result(server.results["t6"].responses[0])[0]["outcome"] == "present"
    assert [k.label for k in token.list_keys()] == [f"tessera/sd/{AID}/30"]
