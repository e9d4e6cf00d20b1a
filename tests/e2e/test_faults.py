"""Faults on the real stack, each ending in a correct, audited state with no command run twice on
the card (every secured C-APDU the card received is logged and must be unique)."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from agent.httpsig import sign_request
from agent.protocol import (
    EXCHANGE_PATH,
    ExchangeRequest,
    ExchangeResponse,
    WorkResult,
    decode,
    encode,
    sw_matches,
)
from gp.card import SoftCard
from tests.e2e.conftest import Gateway, Stack, repeated_secured_apdus, state_changing, wait_for
from tests.e2e.helpers import audit_count, card_state, db_state

pytestmark = [pytest.mark.e2e, pytest.mark.services]

TSM = {"on_behalf_of": "sei"}


class ManualAgent:
    """The agent's side of the protocol driven by the test, step by step, over HTTP: it signs
    exactly as the agent does, with the gateway's identity key, and runs work on the gateway's card."""

    def __init__(self, stack: Stack, gw: Gateway) -> None:
        self.stack = stack
        self.gw = gw
        self.key = load_pem_private_key((gw.directory / "agent.identity.pem").read_bytes(), None)
        self.http = httpx.Client(base_url=stack.base_url, timeout=30)

    def body(self, results: tuple[WorkResult, ...] = ()) -> bytes:
        return encode(
            ExchangeRequest(agent={"version": "e2e", "backend": "soft"}, results=results, health={}).to_json()
        )

    def post(self, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        headers = headers or sign_request(private_key=self.key, method="POST", path=EXCHANGE_PATH, body=body)
        return self.http.post(
            EXCHANGE_PATH, content=body, headers={**headers, "Content-Type": "application/json"}
        )

    def exchange(self, results: tuple[WorkResult, ...] = ()) -> ExchangeResponse:
        r = self.post(self.body(results))
        assert r.status_code == 200, r.text
        return ExchangeResponse.from_json(decode(r.content))

    def run_on_card(self, item: Any) -> WorkResult:
        assert self.gw.card_path is not None
        card = SoftCard.open(str(self.gw.card_path))
        responses: list[bytes] = []
        status = "completed"
        for command in item.commands:
            with Path(self.gw.apdu_log).open("a") as log:
                log.write(command.apdu.hex().upper() + "\n")
            rapdu = card.transmit(command.apdu)
            responses.append(rapdu)
            if command.expect and not sw_matches(int.from_bytes(rapdu[-2:], "big"), command.expect):
                status = "failed"
                break
        return WorkResult(item=item.item, status=status, responses=tuple(responses))


def _no_repeat(gw: Gateway) -> None:
    assert repeated_secured_apdus(gw.apdu_log) == {}, "a command reached the card twice"


def _card_matches_database(stack: Stack, gw: Gateway) -> dict[str, Any]:
    card, db = card_state(gw), db_state(stack, gw)
    assert card["sds"] == db["sds"]
    assert card["kvns"] == db["kvns"]
    return db


# --- (a) the agent dies in the middle of a script -------------------------------------------------


@pytest.mark.parametrize(
    "crash",
    [pytest.param("E6:1", id="after-install"), pytest.param("D8:1", id="after-put-key")],
)
def test_an_agent_killed_mid_script_restarts_and_the_job_ends_once_after_reconciliation(
    stack: Stack, crash: str
) -> None:
    gw = stack.gateway(f"crash-{crash[:2]}", f"GW-CRASH-{crash[:2]}")
    aid = "A0000001515350C1" + crash[:2]
    # given an agent that dies (as under kill -9) right after the card ran a command of the script
    agent = stack.start_agent(gw, TESSERA_AGENT_CRASH_AFTER=crash)
    job = stack.request_job(
        "tsm", "tsm", gw.device_id, "create_security_domain", {"aid": aid, "owner": "supplier"}, **TSM
    )
    wait_for(lambda: agent.poll() is not None, 30, "the agent to crash")
    assert agent.returncode == 137, stack.log(f"agent-{gw.name}-1")
    # when it is restarted
    stack.start_agent(gw)
    # then the interrupted step was reported, the card's state read, and the job completed
    done = stack.wait_job("tsm", "tsm", job["id"], timeout=60, **TSM)
    assert done["state"] == "succeeded", (done["error_code"], done.get("error_message"), done.get("steps"))
    assert audit_count(stack, job["id"], reconcile=True) == 1
    assert audit_count(stack, job["id"], status="interrupted") == 1
    assert audit_count(stack, job["id"], to="succeeded") == 1
    stack.stop_gateway(gw)
    db = _card_matches_database(stack, gw)
    assert db["sds"] == [aid]
    _no_repeat(gw)


# --- (b) the Celery worker dies during a step -------------------------------------------------------


def test_a_worker_killed_during_a_job_is_replaced_and_the_job_completes_exactly_once(stack: Stack) -> None:
    gw = stack.gateway("worker-kill", "GW-WORKER-KILL")
    stack.start_agent(gw)
    aid = "A0000001515350B001"
    job = stack.request_job(
        "tsm", "tsm", gw.device_id, "create_security_domain", {"aid": aid, "owner": "supplier"},
        mode="interactive", **TSM,
    )  # fmt: skip
    # when the worker is killed -9 while the job runs (interactive: several worker tasks in a row)
    stack.wait_job("tsm", "tsm", job["id"], timeout=30, states=("dispatched", "running", "succeeded"), **TSM)
    victim = stack.procs["worker"]
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    time.sleep(1.0)  # the agent reports into a queue nobody serves
    stack.procs["worker"] = stack.start_worker("worker-2")
    # then the job still completes, once
    done = stack.wait_job("tsm", "tsm", job["id"], timeout=90, **TSM)
    assert done["state"] == "succeeded", (done["error_code"], done.get("error_message"), done.get("steps"))
    assert audit_count(stack, job["id"], to="succeeded") == 1
    stack.stop_gateway(gw)
    db = _card_matches_database(stack, gw)
    assert db["sds"] == [aid] and len(db["kvns"][aid]) == 1
    _no_repeat(gw)


# --- (c) a device that never polls ------------------------------------------------------------------


def test_a_job_for_a_device_that_never_polls_times_out_as_a_no_show_and_never_runs(stack: Stack) -> None:
    gw = stack.gateway("silent", "GW-SILENT")
    job = stack.request_job("sei", "sei", gw.device_id, "read_status", {})
    done = stack.wait_job("sei", "sei", job["id"], timeout=40)
    assert done["state"] == "timed_out", done
    assert done.get("error_code", "no_show") == "no_show"
    assert audit_count(stack, job["id"], to="timed_out", error="no_show") == 1
    # when the device comes back at last, the ended job's script is not handed to it
    answer = ManualAgent(stack, gw).exchange()
    assert answer.work == ()


# --- (d) signatures: replayed, stale, unknown key, bad digest ---------------------------------------


def test_the_portal_refuses_replayed_stale_unknown_and_tampered_requests(stack: Stack) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    gw = stack.gateway("signer", "GW-SIGNER")
    agent = ManualAgent(stack, gw)

    def code(r: httpx.Response) -> tuple[int, str]:
        return r.status_code, json.loads(r.content)["error"]["code"]

    # a request captured on the wire, bytes and headers, sent again
    body = agent.body()
    headers = sign_request(private_key=agent.key, method="POST", path=EXCHANGE_PATH, body=body)
    assert agent.post(body, headers).status_code == 200
    assert code(agent.post(body, headers)) == (401, "replayed")
    # signed ten minutes ago
    stale = sign_request(
        private_key=agent.key, method="POST", path=EXCHANGE_PATH, body=body, created=int(time.time()) - 600
    )
    assert code(agent.post(body, stale)) == (401, "stale")
    # a key no device has
    other = ec.generate_private_key(ec.SECP256R1())
    unknown = sign_request(private_key=other, method="POST", path=EXCHANGE_PATH, body=body)
    assert code(agent.post(body, unknown)) == (401, "unknown_key")
    # a body changed after signing
    fresh = sign_request(private_key=agent.key, method="POST", path=EXCHANGE_PATH, body=body)
    assert code(agent.post(body.replace(b"e2e", b"e3e"), fresh)) == (401, "digest_mismatch")


# --- (e) canceled while dispatched ------------------------------------------------------------------


def test_a_job_canceled_while_dispatched_stays_canceled_its_late_result_is_recorded_and_reconciled(
    stack: Stack,
) -> None:
    gw = stack.gateway("cancel", "GW-CANCEL")
    agent = ManualAgent(stack, gw)
    aid = "A0000001515350CA01"
    job = stack.request_job(
        "tsm", "tsm", gw.device_id, "create_security_domain", {"aid": aid, "owner": "supplier"}, **TSM
    )
    # given the device took the first step of the script
    answer = wait_for(lambda: agent.exchange().work or None, 20, "the work to be handed out", interval=0.3)
    [item] = answer
    assert stack.job("tsm", "tsm", job["id"], **TSM)["state"] == "dispatched"
    # when the TSM cancels the job, and only then the device runs the script and reports
    with stack.api("tsm") as c:
        r = c.post(f"/orgs/tsm/jobs/{job['id']}/cancel/", params=TSM)
    assert r.status_code == 200, r.text
    result = agent.run_on_card(item)
    assert result.status == "completed"
    assert item.item in agent.exchange((result,)).acks
    # then the job stays canceled, and the late result is recorded: the SD the card now holds
    wait_for(lambda: aid in db_state(stack, gw)["sds"], 20, "the late result to be recorded")
    final = stack.job("tsm", "tsm", job["id"], **TSM)
    assert final["state"] == "canceled"
    assert audit_count(stack, job["id"], step="install_sd", late=True) == 1
    assert agent.exchange().work == ()  # nothing further is sent for the canceled job
    # and a read_status by the issuer reconciles the card and the database
    stack.start_agent(gw)
    status = stack.request_job("sei", "sei", gw.device_id, "read_status", {})
    assert stack.wait_job("sei", "sei", status["id"])["state"] == "succeeded"
    stack.stop_gateway(gw)
    db = _card_matches_database(stack, gw)
    assert db["sds"] == [aid]
    _no_repeat(gw)
    assert state_changing(gw.apdu_log)
