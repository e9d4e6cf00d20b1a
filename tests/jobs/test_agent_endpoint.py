"""``POST /agent/v1/exchange`` in process: every refusal with its reason code, the size and method
limits, and the promise of DESIGN §8 — an idle poll costs no database query."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from django.test import Client

from agent.httpsig import sign_request
from agent.protocol import EXCHANGE_PATH, MAX_BODY_BYTES, ExchangeRequest, encode
from tests.support.fixtures import fast_password_hasher  # noqa: F401 - jobworld creates four users


def _idle_body() -> bytes:
    return encode(
        ExchangeRequest(agent={"version": "test", "backend": "soft"}, results=(), health={}).to_json()
    )


def _post(body: bytes, headers: dict[str, str]) -> Any:
    return Client().post(EXCHANGE_PATH, data=body, content_type="application/json", headers=headers)


def _refusal(response: Any) -> tuple[int, str]:
    return response.status_code, json.loads(response.content)["error"]["code"]


def test_a_signed_idle_poll_is_answered_with_no_work_and_a_poll_delay(jobworld: Any) -> None:
    # given an enrolled gateway with nothing to do; when it polls
    body = _idle_body()
    response = jobworld.gateway.post(Client(), body)
    # then it gets an empty answer and the server's poll delay
    assert response.status_code == 200, response.content
    answer = json.loads(response.content)
    assert answer["work"] == [] and answer["acks"] == []
    assert answer["poll_after"] > 0


def test_an_unsigned_request_is_refused_signature_missing(jobworld: Any) -> None:
    assert _refusal(_post(_idle_body(), {})) == (401, "signature_missing")


@pytest.mark.parametrize(
    "spoil",
    [
        lambda h: {**h, "Signature-Input": h["Signature-Input"].replace('alg="', 'algo="')},
        lambda h: {**h, "Signature": "tessera=:not base64!:"},
        lambda h: {k: v for k, v in h.items() if k != "Content-Digest"},
    ],
    ids=["params", "signature", "no-digest"],
)
def test_a_malformed_signature_is_refused_signature_malformed(jobworld: Any, spoil: Any) -> None:
    body = _idle_body()
    assert _refusal(_post(body, spoil(jobworld.gateway.signed(body)))) == (401, "signature_malformed")


def test_a_body_that_is_not_the_signed_one_is_refused_digest_mismatch(jobworld: Any) -> None:
    body = _idle_body()
    headers = jobworld.gateway.signed(body)
    assert _refusal(_post(body.replace(b"test", b"evil"), headers)) == (401, "digest_mismatch")


def test_a_key_no_device_has_is_refused_unknown_key(jobworld: Any) -> None:
    body = _idle_body()
    stranger = ec.generate_private_key(ec.SECP256R1())
    headers = sign_request(private_key=stranger, method="POST", path=EXCHANGE_PATH, body=body)
    assert _refusal(_post(body, headers)) == (401, "unknown_key")


def test_a_suspended_device_is_refused_at_once_and_readmitted_on_reactivation(jobworld: Any) -> None:
    from devices.services import device_reactivate, device_suspend

    # given a device whose identity the endpoint has cached (a first poll)
    assert jobworld.gateway.post(Client(), _idle_body()).status_code == 200
    # when its manufacturer suspends it, the very next poll is refused
    device_suspend(actor=jobworld.sei_actor, device=jobworld.device)
    assert _refusal(jobworld.gateway.post(Client(), _idle_body())) == (401, "device_suspended")
    # and once reactivated, it is served again
    jobworld.device.refresh_from_db()
    device_reactivate(actor=jobworld.sei_actor, device=jobworld.device)
    assert jobworld.gateway.post(Client(), _idle_body()).status_code == 200


@pytest.mark.parametrize("skew", [-310, 310])  # clear of the 300 s bound however slow the run
def test_a_request_created_too_far_from_now_is_refused_stale(jobworld: Any, skew: int) -> None:
    body = _idle_body()
    headers = jobworld.gateway.signed(body, created=int(time.time()) + skew)
    assert _refusal(_post(body, headers)) == (401, "stale")


def test_the_same_signed_request_twice_is_refused_replayed(jobworld: Any) -> None:
    body = _idle_body()
    headers = jobworld.gateway.signed(body)
    assert _post(body, headers).status_code == 200
    assert _refusal(_post(body, headers)) == (401, "replayed")


def test_a_signature_by_another_key_is_refused_bad_signature(jobworld: Any) -> None:
    body = _idle_body()
    headers = jobworld.gateway.signed(body)
    forger = ec.generate_private_key(ec.SECP256R1())
    forged = sign_request(private_key=forger, method="POST", path=EXCHANGE_PATH, body=body)
    # the device's key id and parameters, someone else's signature
    assert _refusal(_post(body, {**headers, "Signature": forged["Signature"]})) == (401, "bad_signature")


def test_a_refused_signature_does_not_burn_the_nonce(jobworld: Any) -> None:
    body = _idle_body()
    headers = jobworld.gateway.signed(body)
    forged = sign_request(
        private_key=ec.generate_private_key(ec.SECP256R1()), method="POST", path=EXCHANGE_PATH, body=body
    )
    assert _refusal(_post(body, {**headers, "Signature": forged["Signature"]})) == (401, "bad_signature")
    assert _post(body, headers).status_code == 200


def test_a_body_over_256_kib_is_refused_413(jobworld: Any) -> None:
    body = b'{"protocol": 1, "pad": "' + b"x" * MAX_BODY_BYTES + b'"}'
    response = _post(body, jobworld.gateway.signed(body))
    assert _refusal(response) == (413, "body_too_large")


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        b'{"protocol": 2, "agent": {}, "results": [], "health": {}}',
        b'{"protocol": 1, "agent": {}, "results": [{"item": "x", "status": "done"}], "health": {}}',
        b'{"protocol": 1, "agent": {}, "results": [], "health": {}, "extra": 1}',
    ],
    ids=["syntax", "array", "version", "status", "unknown-field"],
)
def test_a_signed_but_malformed_message_is_refused_400(jobworld: Any, body: bytes) -> None:
    response = _post(body, jobworld.gateway.signed(body))
    assert _refusal(response) == (400, "malformed_request")


def test_get_is_refused_405_with_allow(jobworld: Any) -> None:
    response = Client().get(EXCHANGE_PATH)
    assert _refusal(response) == (405, "method_not_allowed")
    assert response["Allow"] == "POST"


def test_an_idle_poll_costs_zero_sql_queries(jobworld: Any, django_assert_num_queries: Any) -> None:
    # given a first poll that warmed the identity cache
    assert jobworld.gateway.post(Client(), _idle_body()).status_code == 200
    # when the gateway polls again with nothing to report and nothing waiting for it
    with django_assert_num_queries(0):
        response = jobworld.gateway.post(Client(), _idle_body())
    # then it is answered from the cache alone
    assert response.status_code == 200
    assert json.loads(response.content)["work"] == []


def test_refusals_from_the_cache_cost_zero_sql_queries(jobworld: Any, django_assert_num_queries: Any) -> None:
    body = _idle_body()
    stranger = ec.generate_private_key(ec.SECP256R1())
    first = sign_request(private_key=stranger, method="POST", path=EXCHANGE_PATH, body=body)
    assert _refusal(_post(body, first)) == (401, "unknown_key")  # the miss is cached too
    again = sign_request(private_key=stranger, method="POST", path=EXCHANGE_PATH, body=body)
    with django_assert_num_queries(0):
        assert _refusal(_post(body, again)) == (401, "unknown_key")
