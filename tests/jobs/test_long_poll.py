"""Long polling (DESIGN §8): an online agent that asks to ``wait`` is held open until work for it
is ready, and woken by the engine at once — no wait for its next poll."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from django.test import Client

from agent.protocol import ExchangeRequest, encode
from jobs.services import job_request
from tests.support.fixtures import fast_password_hasher  # noqa: F401 - jobworld creates four users


def _body(wait: float) -> bytes:
    return encode(ExchangeRequest(agent={"version": "test", "backend": "soft"}, wait=wait).to_json())


def test_an_idle_long_poll_is_held_then_answered_with_no_work_and_no_delay(jobworld: Any) -> None:
    assert jobworld.gateway.post(Client(), _body(0)).status_code == 200  # warm the identity cache
    # when the gateway asks to wait up to 0.6 s and nothing comes
    started = time.monotonic()
    response = jobworld.gateway.post(Client(), _body(0.6))
    elapsed = time.monotonic() - started
    # then it was held about that long and may ask again at once
    assert response.status_code == 200, response.content
    answer = json.loads(response.content)
    assert answer["work"] == [] and answer["poll_after"] == 0
    assert 0.55 <= elapsed < 3.0


def test_an_idle_long_poll_costs_zero_sql_queries(jobworld: Any, django_assert_num_queries: Any) -> None:
    assert jobworld.gateway.post(Client(), _body(0)).status_code == 200
    with django_assert_num_queries(0):
        response = jobworld.gateway.post(Client(), _body(0.2))
    assert response.status_code == 200 and json.loads(response.content)["work"] == []


def test_a_held_long_poll_is_woken_by_a_new_job_and_carries_its_script(jobworld: Any) -> None:
    assert jobworld.gateway.post(Client(), _body(0)).status_code == 200
    out: dict[str, Any] = {}

    def hold() -> None:
        started = time.monotonic()
        out["response"] = jobworld.gateway.post(Client(), _body(20))
        out["elapsed"] = time.monotonic() - started

    # given a gateway holding a long poll of up to 20 s
    poller = threading.Thread(target=hold)
    poller.start()
    time.sleep(0.3)
    # when the TSM asks for an SD on its device
    requested = time.monotonic()
    job = job_request(
        actor=jobworld.tsm_for_sei,
        device=jobworld.device,
        kind="create_security_domain",
        params={"aid": "A0000001515350BB01", "owner": "supplier"},
    )
    poller.join(25)
    # then the held exchange returned with the job's first script, long before its 20 s were up
    assert not poller.is_alive()
    answer = json.loads(out["response"].content)
    assert [w["job"] for w in answer["work"]] == [str(job.id)]
    assert time.monotonic() - requested < 3.0 and out["elapsed"] < 5.0


def test_a_wait_out_of_range_is_a_malformed_request(jobworld: Any) -> None:
    body = encode({**ExchangeRequest(agent={}).to_json(), "wait": 26})
    response = jobworld.gateway.post(Client(), body)
    assert response.status_code == 400
    assert json.loads(response.content)["error"]["code"] == "malformed_request"
