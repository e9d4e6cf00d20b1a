"""HttpTransport over real HTTP(S) against a fake portal that verifies every signature, and
PortalConnection's TLS verification, timeouts, keep-alive, size limit and redirects on real sockets."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.config import Timeouts
from agent.errors import BadResponse, ClientError, NetworkError, ServerError, TransportTimeout, Unauthorized
from agent.protocol import ExchangeRequest, WorkResult
from agent.transport import HttpTransport, PortalConnection
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


def test_a_portal_that_accepts_but_never_answers_is_a_transport_timeout(config, identity) -> None:
    listener = socket.create_server(("127.0.0.1", 0))  # accepts (backlog) and never answers
    try:
        port = listener.getsockname()[1]
        quick = replace(
            config, server_url=f"http://127.0.0.1:{port}", timeouts=Timeouts(connect_s=2, read_s=0.3)
        )
        started = time.monotonic()
        with pytest.raises(TransportTimeout, match="in time"):
            HttpTransport(quick, identity).exchange(ExchangeRequest())
        assert time.monotonic() - started < 5
    finally:
        listener.close()


# -- a scripted HTTP(S) server -------------------------------------------------------------------


class _Scripted(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as daphne and a reverse proxy answer
    server: Any

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        srv = self.server
        srv.seen.append((self.path, dict(self.headers.items()), body, self.client_address[1]))
        status, headers, payload = srv.answer
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST  # noqa: N815


_OK = (200, {"Content-Type": "application/json"}, b'{"protocol": 1, "acks": [], "work": [], "poll_after": 3}')


@contextmanager
def _serving(context: ssl.SSLContext | None = None) -> Iterator[Any]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    server.seen, server.answer = [], _OK
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    scheme = "https" if context is not None else "http"
    server.url = f"{scheme}://localhost:{server.server_address[1]}"
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_the_signature_covers_the_full_path_under_a_prefixed_server_url(config, identity) -> None:
    with _serving() as server:
        transport = HttpTransport(replace(config, server_url=server.url + "/tessera"), identity)
        assert transport.exchange(ExchangeRequest()).poll_after == 3
        transport.close()
    path, headers, _, _ = server.seen[0]
    assert path == transport.path == "/tessera/agent/v1/exchange"
    assert headers["Content-Type"] == "application/json" and "Signature-Input" in headers
    assert '"@path"' in headers["Signature-Input"] and headers["User-Agent"].startswith("tessera-agent/")


def test_one_connection_is_kept_alive_and_replaced_when_the_portal_closes_it(config, identity) -> None:
    with _serving() as server:
        transport = HttpTransport(replace(config, server_url=server.url), identity)
        for _ in range(3):
            transport.exchange(ExchangeRequest())
        assert len({port for *_, port in server.seen}) == 1  # one TCP connection for three exchanges
        server.answer = (_OK[0], {**_OK[1], "Connection": "close"}, _OK[2])
        transport.exchange(ExchangeRequest())  # the portal closes after answering
        server.answer = _OK
        transport.exchange(ExchangeRequest())  # a new connection, no error
        transport.close()
    assert len({port for *_, port in server.seen}) == 2 and len(server.seen) == 5


def test_a_redirect_is_not_followed(config, identity) -> None:
    with _serving() as server:
        server.answer = (302, {"Location": "https://elsewhere.example/agent/v1/exchange"}, b"")
        with pytest.raises(ClientError, match="unexpected HTTP 302"):
            HttpTransport(replace(config, server_url=server.url), identity).exchange(ExchangeRequest())
    assert len(server.seen) == 1


def test_a_response_over_the_limit_is_refused(config, identity) -> None:
    with _serving() as server:
        server.answer = (200, {}, b" " * 5000)
        url = replace(config, server_url=server.url)
        small = PortalConnection(server.url, connect_timeout=2, read_timeout=2, max_response_bytes=4096)
        with pytest.raises(BadResponse, match="exceeds 4096 bytes"):
            HttpTransport(url, identity, small).exchange(ExchangeRequest())


# -- TLS -----------------------------------------------------------------------------------------


def _certificate(subject: str, key: Any, issuer: tuple[str, Any] | None, *, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer if issuer is not None else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
        ).add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture
def tls(tmp_path: Path) -> dict[str, Any]:
    """A private CA (its PEM in ca.pem) and a server context for ``localhost`` it issued."""
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_cert = _certificate("Test portal CA", ca_key, None, ca=True)
    server_cert = _certificate("localhost", server_key, ("Test portal CA", ca_key), ca=False)
    pem = serialization.Encoding.PEM
    (tmp_path / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
    (tmp_path / "server.pem").write_bytes(server_cert.public_bytes(pem))
    (tmp_path / "server.key").write_bytes(
        server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    return {"ca_file": tmp_path / "ca.pem", "server": context}


def test_tls_with_the_configured_ca_is_accepted(config, identity, tls) -> None:
    with _serving(tls["server"]) as server:
        transport = HttpTransport(replace(config, server_url=server.url, ca_file=tls["ca_file"]), identity)
        assert transport.exchange(ExchangeRequest()).poll_after == 3
        transport.close()
    assert len(server.seen) == 1


def test_tls_to_a_certificate_outside_the_trust_store_is_refused(config, identity, tls) -> None:
    with _serving(tls["server"]) as server:
        # No ca_file: the system trust store, which does not hold the private CA.
        with pytest.raises(NetworkError, match="unreachable") as e:
            HttpTransport(replace(config, server_url=server.url), identity).exchange(ExchangeRequest())
        assert isinstance(e.value.__cause__, ssl.SSLCertVerificationError)
        # The right CA but the wrong host name (the certificate names localhost only).
        ip_url = server.url.replace("localhost", "127.0.0.1")
        with pytest.raises(NetworkError) as e:
            HttpTransport(replace(config, server_url=ip_url, ca_file=tls["ca_file"]), identity).exchange(
                ExchangeRequest()
            )
        assert isinstance(e.value.__cause__, ssl.SSLCertVerificationError)
        assert "127.0.0.1" in str(e.value.__cause__)
    assert server.seen == []  # nothing was sent to an unverified peer
