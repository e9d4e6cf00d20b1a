"""HttpTransport over real HTTP against a fake portal that verifies every signature."""

from __future__ import annotations

import time
from dataclasses import replace

import httpx
import pytest

from agent.errors import BadResponse, ClientError, NetworkError, ServerError, TransportTimeout, Unauthorized
from agent.protocol import ExchangeRequest, WorkResult
from agent.transport import HttpTransport
from tests.agent.fakes import SELECT_ISD, FakeServer, HttpFakePortal, script


@pytest.fixture
def portal(identity):
    portal = HttpFakePortal(FakeServer(poll_after=12, queue=[script("i1", (SELECT_ISD, ("9000",)))]))
    portal.register(identity.public_key())
    with portal.serving():
        yield portal


def _transport(config, identity, portal, **kw) -> HttpTransport:
    return HttpTransport(replace(config, server_url=portal.url), identity, **kw)


def test_a_signed_exchange_is_accepted_and_answered(config, identity, portal) -> None:
    transport = _transport(config, identity, portal)
    request = ExchangeRequest({"version": "0.1.0"}, (WorkResult("old", "completed", (b"\x90\x00",)),), {})
    response = transport.exchange(request)
    assert response.acks == ("old",)
    assert [w.item for w in response.work] == ["i1"] and response.poll_after == 12
    assert portal.fake.results["old"].responses == (b"\x90\x00",)
    transport.close()


def test_every_request_carries_a_fresh_nonce(config, identity, portal) -> None:
    transport = _transport(config, identity, portal)
    for _ in range(3):
        transport.exchange(ExchangeRequest())
    assert len(portal.nonces) == 3


def test_an_unknown_device_gets_unauthorized_with_the_portal_reason(config, identity, portal) -> None:
    portal.keys.clear()
    with pytest.raises(Unauthorized) as e:
        _transport(config, identity, portal).exchange(ExchangeRequest())
    assert e.value.code == "unknown_key"


def test_a_skewed_clock_gets_unauthorized_stale(config, identity, portal) -> None:
    transport = _transport(config, identity, portal, clock=lambda: time.time() - 3600)
    with pytest.raises(Unauthorized) as e:
        transport.exchange(ExchangeRequest())
    assert e.value.code == "stale"


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, ClientError), (404, ClientError), (500, ServerError), (503, ServerError)],
)
def test_http_errors_map_to_transport_errors(config, identity, portal, status, error) -> None:
    portal.status_override = (status, {"error": {"code": "nope", "message": "secret-free"}})
    with pytest.raises(error) as e:
        _transport(config, identity, portal).exchange(ExchangeRequest())
    assert e.value.status == status


def test_an_invalid_200_body_is_a_bad_response(config, identity, portal) -> None:
    portal.status_override = (200, {"protocol": 1, "acks": [], "work": "none", "poll_after": 1})
    with pytest.raises(BadResponse, match="work"):
        _transport(config, identity, portal).exchange(ExchangeRequest())


def test_an_unreachable_portal_is_a_network_error(config, identity) -> None:
    transport = HttpTransport(replace(config, server_url="http://127.0.0.1:9"), identity)
    with pytest.raises(NetworkError, match="unreachable"):
        transport.exchange(ExchangeRequest())


def test_a_timeout_is_a_transport_timeout(config, identity) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    client = httpx.Client(transport=httpx.MockTransport(handler))
    with pytest.raises(TransportTimeout):
        HttpTransport(config, identity, client).exchange(ExchangeRequest())


def test_the_signature_covers_the_full_path_under_a_prefixed_server_url(config, identity) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        assert request.headers["content-type"] == "application/json"
        assert "signature-input" in request.headers
        return httpx.Response(200, json={"protocol": 1, "acks": [], "work": [], "poll_after": 3})

    client = httpx.Client(transport=httpx.MockTransport(handler))
    transport = HttpTransport(replace(config, server_url="https://portal.example/tessera"), identity, client)
    assert transport.exchange(ExchangeRequest()).poll_after == 3
    assert seen == ["/tessera/agent/v1/exchange"] and transport.path == "/tessera/agent/v1/exchange"
