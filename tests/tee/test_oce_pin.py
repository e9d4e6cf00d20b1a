"""The agent's own check of a confidential envelope's OCE signature against the CA root pinned at
enrolment (agent/ocepin.py, docs/tee-bridge.md §8.4): the portal relays the provider's signature
with the envelope, and a compromised portal cannot get a key from an uncertified sender into the
token once a root is pinned."""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.test import Client

from agent import tokenops
from agent.backends.pkcs11 import TokenBackend
from agent.config import AgentConfig, PollSettings, TokenSettings
from agent.errors import ConfigError
from agent.journal import Journal
from agent.ocepin import parse_root
from agent.protocol import KIND_TOKEN_OPS, Command, WorkItem
from agent.runner import Runner
from devices.models import SecurityDomain
from gp import tokenwrap
from jobs.models import JobState, JobStep
from jobs.services import job_request
from jobs.tee import key_check_value
from keys.models import ServiceMasterKey
from tests.agent.fakes import FakeServer

AID = "A0000001515350DD01"


def self_signed_ca(name: str = "Rogue Root") -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """Another CA's root (what a compromised portal could certify its own OCE key with)."""
    from cryptography.hazmat.primitives.serialization import Encoding

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(Encoding.DER)


def _pinned(world):
    from keys.models import CertificateAuthority

    ca = CertificateAuthority.objects.get(status="active")
    return parse_root(bytes(ca.root_certificate))


def _create_sd(world):
    job = job_request(
        actor=world.tsm_for_sei,
        device=world.device,
        kind="create_security_domain",
        params={"aid": AID, "owner": "supplier"},
    )
    world.gateway.run(Client())
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, (job.error_code, job.error_message)


def _load(world, key: bytes, kvn: int = 0x40):
    envelope = tokenwrap.wrap_for_token(
        key, world.gateway.token.receive_public_point(), f"tessera/sd/{AID}/{kvn:02X}"
    )
    job = job_request(
        actor=world.provider_actor,
        device=world.device,
        kind="load_keys_confidential",
        params=world.confidential(envelope, key_check_value(key)),
    )
    world.gateway.run(Client())
    job.refresh_from_db()
    return job, envelope


def test_with_the_ca_root_pinned_the_agent_verifies_the_relayed_signature_and_receives(teeworld):
    world, token = teeworld, teeworld.gateway.token
    world.gateway.oce_root = _pinned(world)
    _create_sd(world)
    job, _ = _load(world, os.urandom(32))
    assert job.state == JobState.SUCCEEDED, (job.error_code, job.error_message)
    assert [k.label for k in token.list_keys()] == [f"tessera/sd/{AID}/40"]
    # the operation the device ran carried the provider's chain and signature
    step = JobStep.objects.filter(job=job).order_by("-created_at").first()
    op = json.loads(bytes.fromhex(step.commands[0]["apdu"]))
    assert op["op"] == "receive_key" and set(op["oce"]) == {"certificates", "signature"}
    assert op["oce"]["certificates"] == world.oce_chain


def test_a_root_other_than_the_envelopes_ca_fails_the_job_and_the_token_keeps_its_key(teeworld):
    world, token = teeworld, teeworld.gateway.token
    _create_sd(world)
    # the agent pinned another CA than the one that certified the provider's OCE key
    world.gateway.oce_root = parse_root(self_signed_ca()[1])
    job, _ = _load(world, os.urandom(32))
    assert job.state == JobState.FAILED
    assert job.error_code == "envelope_unauthenticated", (job.error_code, job.error_message)
    assert [k.label for k in token.list_keys()] == [f"tessera/sd/{AID}/30"]  # the created SD's key only
    sd = SecurityDomain.objects.get(secure_element=world.se, aid=AID)
    assert ServiceMasterKey.objects.get(security_domain=sd, status="active").kvn == 0x30


def _op(envelope, oce=None, kcv=None) -> bytes:
    args = {"envelope": envelope.to_json(), "replace": True, **({"kcv": kcv} if kcv else {})}
    if oce is not None:
        args["oce"] = oce
    return tokenops.encode_op("receive_key", expect=["received", "present"], **args)


def test_what_a_compromised_portal_could_relay_is_refused_before_the_token(teeworld):
    """The operations a portal compromised after enrolment could send, run on the agent's side."""
    world, token = teeworld, teeworld.gateway.token
    root = _pinned(world)
    point = token.receive_public_point()
    label = f"tessera/sd/{AID}/41"
    envelope = tokenwrap.wrap_for_token(os.urandom(16), point, label)
    good = world.confidential(envelope, "000000")
    oce = {"certificates": good["certificates"], "signature": good["signature"]}

    def run(op):
        return tokenops.execute(token, op, oce_root=lambda: root)

    # 1. a key of its own, signed by its own OCE key certified by a CA of its own
    rogue_ca_key, _ = self_signed_ca()
    forged = {**oce, "signature": tokenops.sign_envelope(rogue_ca_key, envelope, token.device_id())}
    assert run(_op(envelope, forged)).outcome == "unauthenticated"
    # 2. the provider's signature over another envelope (the portal swaps the key)
    other = tokenwrap.wrap_for_token(os.urandom(16), point, label)
    assert run(_op(other, oce)).outcome == "unauthenticated"
    # 3. the provider's envelope for another device, relayed here
    elsewhere = world.confidential(envelope, "000000", device_id=bytes.fromhex("0102030405060708"))
    result = run(
        _op(envelope, {"certificates": elsewhere["certificates"], "signature": elsewhere["signature"]})
    )
    assert (result.outcome, result.ok) == ("unauthenticated", False)
    assert "signature does not verify" in result.data["detail"]
    assert token.list_keys() == []  # nothing reached the token
    # the genuine one is received
    genuine = run(_op(envelope, oce))
    assert genuine.outcome == "received"
    assert [k.label for k in token.list_keys()] == [label]


def test_without_a_pinned_root_the_envelope_is_received_as_before(teeworld):
    world, token = teeworld, teeworld.gateway.token
    envelope = tokenwrap.wrap_for_token(os.urandom(16), token.receive_public_point(), f"tessera/sd/{AID}/42")
    rogue_key, _ = self_signed_ca()
    oce = {
        "certificates": list(world.oce_chain),
        "signature": tokenops.sign_envelope(rogue_key, envelope, token.device_id()),
    }
    assert tokenops.execute(token, _op(envelope, oce), oce_root=lambda: None).outcome == "received"
    assert tokenops.execute(token, _op(envelope, oce)).outcome == "present"


# --- the runner reads the pinned root from its config, once, and fails closed ----------------------


def _config(tmp_path: Path, oce_root: Path | None) -> AgentConfig:
    return AgentConfig(
        server_url="http://127.0.0.1:9",
        serial="GW-TEE-1",
        identity_key=None,
        backend="pkcs11:tee-a",
        journal=tmp_path / "journal.sqlite",
        poll=PollSettings(min_s=1.0, max_s=600.0, backoff_base_s=2.0, backoff_cap_s=60.0),
        token=TokenSettings(tmp_path / "module.so", "tee-a", tmp_path / "pin", "pin", oce_root),
    )


@pytest.mark.parametrize("root_file", ["pinned", "garbage", "rogue"])
def test_the_runner_checks_against_the_root_file_in_its_config(teeworld, tmp_path, root_file):
    world, token = teeworld, teeworld.gateway.token
    from keys.models import CertificateAuthority

    path = tmp_path / "agent.ca-root.der"
    path.write_bytes(
        {
            "pinned": bytes(CertificateAuthority.objects.get(status="active").root_certificate),
            "garbage": b"not a certificate",
            "rogue": self_signed_ca()[1],
        }[root_file]
    )
    envelope = tokenwrap.wrap_for_token(os.urandom(16), token.receive_public_point(), f"tessera/sd/{AID}/43")
    good = world.confidential(envelope, "000000")
    op = _op(envelope, {"certificates": good["certificates"], "signature": good["signature"]})
    server = FakeServer(queue=[WorkItem("c1", "job-1", KIND_TOKEN_OPS, 0, (Command(op, ("9000",)),))])
    journal = Journal(tmp_path / "journal.sqlite")
    try:
        Runner(_config(tmp_path, path), server, TokenBackend(token), journal).run_once()
    finally:
        journal.close()
    result = server.results["c1"]
    if root_file == "pinned":
        assert result.status == "completed", result.detail
        assert [k.label for k in token.list_keys()] == [f"tessera/sd/{AID}/43"]
    else:
        assert result.status == "failed", result.detail
        assert (
            ("not an X.509" in result.detail)
            if root_file == "garbage"
            else ("unauthenticated" in result.detail)
        )
        assert token.list_keys() == []


def test_parse_root_refuses_what_is_not_a_ca_root(teeworld):
    with pytest.raises(ConfigError, match="not an X.509"):
        parse_root(b"\x30\x03\x02\x01\x00")
    leaf = bytes.fromhex(teeworld.oce_chain[0])  # a GP 7F21 certificate, not an X.509 root
    with pytest.raises(ConfigError):
        parse_root(leaf)
