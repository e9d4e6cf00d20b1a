"""Pinning the Controlling Authority's root (``agent init --ca-root``, ``agent pin-ca-root``) in
real processes, and doctor's check of it: a URL only with the fingerprint, a wrong fingerprint or a
certificate that is not a CA root pins nothing, the rest of the configuration is kept."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from agent.config import load_config
from agent.doctor import FAIL, OK, WARN, check_oce_root
from tests.agent_pkcs11.test_cli import _agent, _init
from tests.tee.test_oce_pin import self_signed_ca

pytestmark = pytest.mark.services


def _pem(der: bytes) -> bytes:
    from cryptography import x509

    return x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM)


def test_init_pins_a_root_file_and_doctor_shows_it(softhsm_agent, tmp_path):
    _, der = self_signed_ca("Tessera Test Root")
    (tmp_path / "root.pem").write_bytes(_pem(der))
    run = _init(softhsm_agent, tmp_path, "tee-only", "--force", "--ca-root", str(tmp_path / "root.pem"))
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    fingerprint = hashlib.sha256(der).hexdigest()
    assert out["ca_root"]["sha256"] == fingerprint and "Tessera Test Root" in out["ca_root"]["subject"]
    config = load_config(tmp_path / "agent.toml")
    assert config.token.oce_root == tmp_path / "agent.ca-root.der"
    assert config.token.oce_root.read_bytes() == der  # pinned as DER
    check = check_oce_root(config)
    assert check.status == OK and fingerprint in check.message


def test_without_a_pinned_root_doctor_warns_and_a_broken_one_fails(softhsm_agent, tmp_path):
    assert _init(softhsm_agent, tmp_path, "tee-only", "--force").returncode == 0
    config = load_config(tmp_path / "agent.toml")
    assert config.token.oce_root is None
    check = check_oce_root(config)
    assert check.status == WARN and "pin-ca-root" in check.fix
    # a pinned file that no longer parses (altered on disk) FAILs
    (tmp_path / "agent.ca-root.der").write_bytes(b"garbage")
    broken = replace(config, token=replace(config.token, oce_root=tmp_path / "agent.ca-root.der"))
    assert check_oce_root(broken).status == FAIL


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--ca-root", "https://portal.example/api/v1/ca/x/root/"), "give --ca-root-sha256 too"),
        (("--ca-root", "ROOT", "--ca-root-sha256", "00" * 32), "not the expected"),
        (("--ca-root", "LEAF"), "not a CA certificate"),
        (("--ca-root-sha256", "00" * 32), "goes with --ca-root"),
    ],
)
def test_init_refuses_a_root_it_cannot_trust_and_writes_nothing(softhsm_agent, tmp_path, extra, message):
    _, der = self_signed_ca()
    (tmp_path / "root.der").write_bytes(der)
    leaf = _leaf(tmp_path)  # self-signed, but not a CA certificate
    extra = tuple(
        str(tmp_path / "root.der") if a == "ROOT" else str(leaf) if a == "LEAF" else a for a in extra
    )
    run = _init(softhsm_agent, tmp_path, "tee-only", "--force", *extra)
    assert run.returncode == 2, run.stdout
    assert message in run.stderr
    assert not (tmp_path / "agent.toml").exists() and not (tmp_path / "agent.ca-root.der").exists()


def _leaf(tmp_path: Path) -> Path:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "leaf")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "leaf.der"
    path.write_bytes(cert.public_bytes(Encoding.DER))
    return path


def test_pin_ca_root_fetches_the_portals_root_by_url_and_keeps_the_rest_of_the_config(
    softhsm_agent, tmp_path
):
    assert _init(softhsm_agent, tmp_path, "tee-only", "--force").returncode == 0
    config_path = tmp_path / "agent.toml"
    sock = tmp_path / "agent.sock"
    config_path.write_text(
        config_path.read_text()
        + f'\n[localapi]\nsocket = "{sock}"\n\n[[localapi.apps]]\nname = "meter"\nuid = 4242\n'
        'sd = "A000000151535001"\nservices = ["meter.reading"]\n'
    )
    _, der = self_signed_ca("Served Root")

    class Root(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "application/pkix-cert")
            self.end_headers()
            self.wfile.write(der)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Root)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/api/v1/ca/1/root/"
    try:
        wrong = _agent(softhsm_agent, "pin-ca-root", "--config", str(config_path), "--ca-root", url,
                       "--ca-root-sha256", hashlib.sha256(b"other").hexdigest())  # fmt: skip
        assert wrong.returncode == 2 and "not the expected" in wrong.stderr
        assert load_config(config_path).token.oce_root is None
        run = _agent(softhsm_agent, "pin-ca-root", "--config", str(config_path), "--ca-root", url,
                     "--ca-root-sha256", hashlib.sha256(der).hexdigest().upper())  # fmt: skip
        assert run.returncode == 0, run.stderr
    finally:
        server.shutdown()
    config = load_config(config_path)
    assert config.token.oce_root.read_bytes() == der
    assert config.localapi is not None and config.localapi.apps[0].name == "meter"  # kept
    assert json.loads(run.stdout)["ca_root"]["sha256"] == hashlib.sha256(der).hexdigest()
