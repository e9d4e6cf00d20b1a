"""Confidential key loading through the job engine, in process (issue 5 item 4; DESIGN §6):
the CA certifies the SE's CASD, the SE issuer personalises it (casd_personalize), a TSM creates the
provider's SD, the provider loads its keys with its own package (load_keys_confidential), checks
the receipt, and personalises its SD with its own SCP03 script (run_script). Tessera relays bytes;
the provider's keys are nowhere in its database afterwards."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography import x509
from django.db import connection
from django.test import Client
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.models import SecurityDomain
from gp import gpcert, keyload
from gp.apdu import ResponseAPDU
from gp.commands import DGI, DataStructure, GetData, InitializeUpdate, StoreData
from gp.scp03 import StaticKeys
from jobs.compiler.session import PayloadCommand, new_plan, precomputed_script, unwrap_responses
from jobs.errors import InvalidJobRequest, JobNotAllowed
from jobs.models import Job, JobState
from jobs.services import job_request
from keys import ca as ca_services
from keys.models import Certificate, KeySet
from tests.conftest import client_for
from tests.support.ca import ca_actor, make_ca, make_csr

SSD = "A0000001515350AA07"
KVN = 0x31


@dataclass
class Provider:
    """The provider's own side: its OCE key and certificate, the CA root it pins, its new keys."""

    oce_key: Any
    oce: Any
    root_key: Any
    casd_key: Any
    se_id: bytes


def _run(w: Any, actor: Any, kind: str, params: dict[str, Any], mode: str | None = None) -> Job:
    job = job_request(actor=actor, device=w.device, kind=kind, params=params, mode=mode)
    w.gateway.run(Client())
    job.refresh_from_db()
    return job


def _ok(job: Job) -> Job:
    assert job.state == JobState.SUCCEEDED, (job.error_code, job.error_message)
    return job


@pytest.fixture
def cworld(jobworld: Any) -> Any:
    """The flow up to "the provider holds an OCE certificate": CASD certified and personalised,
    the provider's SD created by the TSM."""
    w = jobworld
    make_ca()
    # the CA certifies the public key generated inside the SE
    casd_cert = ca_services.casd_certify(
        actor=ca_actor(), secure_element=w.se, public_key=w.gateway.card.casd_public_key()
    )
    # the SE issuer personalises the CASD: CA key, CASD certificate, revoked serials
    job = _ok(_run(w, w.sei_actor, "casd_personalize", {}))
    casd_cert.refresh_from_db()
    assert casd_cert.on_card_at is not None
    assert job.result["certificate_serial"] == casd_cert.serial
    # the TSM creates the provider's SD (portal-held first keys, KVN 30)
    _ok(_run(w, w.tsm_for_sei, "create_security_domain", {"aid": SSD, "owner": "supplier"}))
    # the provider gets its OCE certificate from its CSR
    oce_key, csr = make_csr()
    oce = ca_services.oce_request(actor=w.provider_actor, csr_pem=csr)
    # provider side: verify the SE's CASD certificate to the pinned root; take PK.CASD and the SE id
    root_key = x509.load_der_x509_certificate(bytes(oce.issuer.root_certificate)).public_key()
    leaf = gpcert.verify_chain([bytes(casd_cert.gp_der)], root_key)
    w.provider = Provider(oce_key, oce, root_key, leaf.public_key, leaf.subject_identifier)
    return w


def _package(
    w: Any, *, counter: int, se_id: bytes | None = None, oce_der: bool = False
) -> tuple[Any, StaticKeys]:
    p = w.provider
    keys = StaticKeys(os.urandom(16), os.urandom(16), os.urandom(16))
    built = keyload.build_package_with_receipt(
        casd_public_key=p.casd_key,
        se_id=p.se_id if se_id is None else se_id,
        sd_aid=bytes.fromhex(SSD),
        kvn=KVN,
        keys=(keys.enc, keys.mac, keys.dek),
        counter=counter,
        oce_private_key=p.oce_key,
        oce_certificates=[bytes(p.oce.der if oce_der else p.oce.gp_der)],
    )
    return built, keys


def _provider_script(w: Any, keys: StaticKeys, payload: list[PayloadCommand]) -> tuple[Any, list[str]]:
    """The provider learns the counter with one INITIALIZE UPDATE, then precomputes its session."""
    iu = InitializeUpdate(os.urandom(8), KVN).to_apdu().encode().hex()
    job = _ok(_run(w, w.provider_actor, "run_script", {"sd": SSD, "commands": [iu]}))
    counter = int.from_bytes(ResponseAPDU.parse(bytes.fromhex(job.result["responses"][0])).data[29:32], "big")
    plan = new_plan(sd_aid=SSD, kvn=KVN, i_param=0x70, sequence_counter=counter + 1, mode="precomputed")
    script = precomputed_script(keys=keys, plan=plan, payload=payload)
    return plan, [c.apdu.hex() for c in script.commands[1:]]  # Tessera SELECTs the SD itself


def _keysets() -> list[tuple[Any, ...]]:
    return sorted((str(k.pk), k.status, k.kvn, k.custody) for k in KeySet.objects.all())


def test_the_provider_loads_its_keys_confidentially_then_personalises_its_sd_with_its_own_script(cworld):
    w = cworld
    built, keys = _package(w, counter=1)
    # when the provider submits its package
    job = _ok(
        _run(w, w.provider_actor, "load_keys_confidential", {"sd": SSD, "package": built.package.hex()})
    )
    # then the receipt only it can check verifies, and the job names the key set
    keyload.verify_receipt(bytes.fromhex(job.result["receipt"]), expected_receipt=built.expected_receipt)
    kcvs = dict(zip(("enc", "mac", "dek"), (k.hex().upper() for k in built.kcvs), strict=True))
    assert (job.result["kvn"], job.result["counter"], job.result["kcvs"]) == (KVN, 1, kcvs)
    assert "package" not in json.dumps(job.params).lower().replace("package_", "")
    assert job.secrets_sealed is None
    # and the SD records a provider-held key set: KCVs, no key material
    sd = SecurityDomain.objects.get(aid=SSD)
    held = sd.key_sets.get(kvn=KVN)
    assert (held.custody, held.status, bytes(held.sealed), held.kcvs) == ("provider", "active", b"", kcvs)
    assert sd.key_sets.get(kvn=0x30).custody == "portal"  # the TSM's first keys are still there
    # when the provider runs its own SCP03 session to its SD through Tessera
    perso = StoreData(0, DGI(0x0101, b"https://billing.example/sp2").encode(), True, DataStructure.DGI)
    payload = [
        PayloadCommand(GetData(0x00E0).to_apdu().encode(), ("9000",), "GET DATA key information"),
        PayloadCommand(perso.to_apdu().encode(), ("9000",), "STORE DATA"),
    ]
    plan, commands = _provider_script(w, keys, payload)
    job = _ok(_run(w, w.provider_actor, "run_script", {"sd": SSD, "commands": commands}))
    # then the provider verifies every R-MAC of the answers itself
    outcome = unwrap_responses(
        keys=keys,
        plan=plan,
        payload=payload,
        responses=[b"\x90\x00"] + [bytes.fromhex(r) for r in job.result["responses"]],
    )
    assert outcome.completed
    # and the card holds its personalisation
    app = w.gateway.card._state.applications[
        next(a for a in w.gateway.card._state.applications if bytes(a).hex().upper() == SSD)
    ]
    assert any(b"billing.example" in d for _, d in app.personalization)
    # blindness: the provider's keys appear nowhere in the database, raw or hex
    _assert_nowhere_in_database([keys.enc, keys.mac, keys.dek])


def _assert_nowhere_in_database(secrets: list[bytes]) -> None:
    needles_bytes = list(secrets)
    needles_text = [s.hex() for s in secrets] + [s.hex().upper() for s in secrets]
    scanned = 0
    with connection.cursor() as cur:
        for table in connection.introspection.table_names():
            cur.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - table names from introspection
            for row in cur.fetchall():
                for value in row:
                    scanned += 1
                    if isinstance(value, (bytes, bytearray, memoryview)):
                        raw = bytes(value)
                        assert not any(n in raw for n in needles_bytes), f"key bytes in {table}"
                        text = raw.hex()
                        assert not any(n.lower() in text for n in needles_text), f"key hex in {table}"
                    elif isinstance(value, str):
                        assert not any(n in value or n.lower() in value.lower() for n in needles_text), (
                            f"key hex in {table}"
                        )
    assert scanned > 100


def test_a_package_over_an_x509_oce_chain_works_too(cworld):
    built, keys = _package(cworld, counter=7, oce_der=True)
    job = _ok(
        _run(
            cworld,
            cworld.provider_actor,
            "load_keys_confidential",
            {"sd": SSD, "package": built.package.hex()},
        )
    )
    keyload.verify_receipt(bytes.fromhex(job.result["receipt"]), expected_receipt=built.expected_receipt)


def test_a_package_for_another_se_is_refused_at_the_request(cworld):
    built, _ = _package(cworld, counter=1, se_id=b"SE9999")
    with pytest.raises(InvalidJobRequest) as exc:
        job_request(
            actor=cworld.provider_actor,
            device=cworld.device,
            kind="load_keys_confidential",
            params={"sd": SSD, "package": built.package.hex()},
        )
    assert exc.value.code == "package_wrong_se"


def test_a_replayed_package_fails_on_the_card_with_6985_and_changes_no_key_set(cworld):
    built, _ = _package(cworld, counter=3)
    _ok(
        _run(
            cworld,
            cworld.provider_actor,
            "load_keys_confidential",
            {"sd": SSD, "package": built.package.hex()},
        )
    )
    before = _keysets()
    job = _run(
        cworld, cworld.provider_actor, "load_keys_confidential", {"sd": SSD, "package": built.package.hex()}
    )
    assert (job.state, job.error_code) == (JobState.FAILED, "card_6985")
    assert _keysets() == before


def test_a_revoked_oce_certificate_is_refused_at_the_request(cworld):
    ca_services.certificate_revoke(actor=ca_actor(), certificate=cworld.provider.oce, reason="key_compromise")
    built, _ = _package(cworld, counter=1)
    resp = client_for(cworld.users["supplier"]).post(
        f"/api/v1/orgs/supplier/devices/{cworld.device.pk}/jobs/",
        {"kind": "load_keys_confidential", "params": {"sd": SSD, "package": built.package.hex()}},
        format="json",
    )
    assert resp.status_code == 400, resp.content
    assert resp.json()["error"]["code"] == "oce_certificate_revoked"
    assert not Job.objects.filter(kind="load_keys_confidential").exists()


def test_a_stranger_gets_404_and_bad_input_gets_400_with_a_code(cworld):
    built, _ = _package(cworld, counter=1)
    url = f"/api/v1/orgs/{{org}}/devices/{cworld.device.pk}/jobs/"
    body = {"kind": "load_keys_confidential", "params": {"sd": SSD, "package": built.package.hex()}}
    stranger = client_for(cworld.users["stranger"])
    assert stranger.post(url.format(org="stranger"), body, format="json").status_code == 404
    body = {"kind": "run_script", "params": {"sd": SSD, "commands": ["80CA00E000"]}}
    assert stranger.post(url.format(org="stranger"), body, format="json").status_code == 404
    provider = client_for(cworld.users["supplier"])
    isd = SecurityDomain.objects.get(is_isd=True).aid
    cases = [
        ("load_keys_confidential", {"sd": SSD, "package": "zz"}, "invalid_job"),
        ("load_keys_confidential", {"sd": SSD, "package": "BF7400"}, "package_malformed"),
        ("load_keys_confidential", {"sd": SSD, "package": "AB" * 20000}, "invalid_job"),
        ("load_keys_confidential", {"sd": isd, "package": built.package.hex()}, "invalid_job"),
        ("load_keys_confidential", {"sd": "A000000151535099", "package": built.package.hex()}, "invalid_job"),
        ("run_script", {"sd": SSD, "commands": []}, "invalid_job"),
        ("run_script", {"sd": SSD, "commands": ["80CA"]}, "invalid_job"),
        ("run_script", {"sd": SSD, "commands": ["80CA00E0"] * 65}, "invalid_job"),
        ("run_script", {"sd": SSD, "commands": ["00A4040008A000000151000000"]}, "invalid_job"),
        ("run_script", {"sd": SSD, "commands": ["81CA00E000"]}, "invalid_job"),
        ("run_script", {"sd": SSD, "commands": ["80CA00E000"], "extra": 1}, "invalid_job"),
        ("run_script", {"sd": isd, "commands": ["80CA00E000"]}, "invalid_job"),
        ("casd_personalize", {"revoked": ["xyz"]}, "invalid_job"),
    ]
    for kind, params, code in cases:
        org = "sei" if kind == "casd_personalize" else "supplier"
        client = client_for(cworld.users[org]) if org == "sei" else provider
        resp = client.post(url.format(org=org), {"kind": kind, "params": params}, format="json")
        assert resp.status_code == 400, (kind, params, resp.content[:200])
        assert resp.json()["error"]["code"] == code, (kind, params, resp.json())
    # the SD's owner's script is the owner's alone: another org that sees the device may not run one
    with pytest.raises(JobNotAllowed):
        job_request(
            actor=cworld.sei_actor,
            device=cworld.device,
            kind="run_script",
            params={"sd": SSD, "commands": ["80CA00E000"]},
        )


def test_a_refused_command_stops_the_script_and_the_job_fails_with_the_answers_so_far(cworld):
    # GET DATA runs outside a session; STORE DATA needs one (6982); the third never runs
    commands = ["80CA00E000", "80E2800003010100", "80CA00E000"]
    job = _run(cworld, cworld.provider_actor, "run_script", {"sd": SSD, "commands": commands})
    assert (job.state, job.error_code) == (JobState.FAILED, "card_6982")
    responses = job.result["responses"]
    assert len(responses) == 2 and responses[0].endswith("9000") and responses[1] == "6982"
    assert "provider command 1" in job.error_message


def test_casd_personalize_needs_a_certified_casd_and_is_the_issuers_alone(jobworld):
    from jobs.errors import JobConflict

    with pytest.raises(JobConflict) as exc:
        job_request(actor=jobworld.sei_actor, device=jobworld.device, kind="casd_personalize", params={})
    assert exc.value.code == "no_casd_certificate"
    make_ca()
    ca_services.casd_certify(
        actor=ca_actor(), secure_element=jobworld.se, public_key=jobworld.gateway.card.casd_public_key()
    )
    with pytest.raises(JobNotAllowed):
        job_request(actor=jobworld.provider_actor, device=jobworld.device, kind="casd_personalize", params={})
    # revoked serials of the CA travel to the card (DGI 0093)
    _, csr = make_csr()
    from tenants.access import Actor
    from tenants.models import MemberRole

    stranger = Actor(user=jobworld.users["stranger"], org=jobworld.stranger, member_role=MemberRole.OWNER)
    revoked = ca_services.oce_request(actor=stranger, csr_pem=csr)
    ca_services.certificate_revoke(actor=ca_actor(), certificate=revoked, reason="key_compromise")
    job = _ok(_run(jobworld, jobworld.sei_actor, "casd_personalize", {}))
    assert job.result["revoked"] == 1
    card_revoked = jobworld.gateway.card._state.casd.revoked
    assert int(revoked.serial, 16).to_bytes(16, "big") in card_revoked
    assert Certificate.objects.filter(kind="casd", on_card_at__isnull=False).count() == 1


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_any_bytes_as_a_relay_command_are_accepted_or_refused_with_a_compiler_error(raw):
    from jobs.compiler.confidential import check_relay_command
    from jobs.compiler.session import CompilerError

    try:
        cmd = check_relay_command(raw)
    except CompilerError:
        return
    assert cmd.ins not in (0xA4, 0x70) and len(raw) <= 261


@given(st.lists(st.binary(max_size=40), max_size=6), st.integers(min_value=1, max_value=5))
@settings(max_examples=300, deadline=None)
def test_any_responses_to_a_relayed_script_read_as_an_outcome_or_a_compiler_error(responses, n):
    from jobs.compiler.confidential import relay_outcome
    from jobs.compiler.session import CompilerError

    try:
        out = relay_outcome(n_commands=n, responses=responses)
    except CompilerError:
        return
    assert len(out.responses) <= n
    assert not (out.completed and out.failed_sw is not None)


def test_the_provider_reads_its_receipt_through_the_api_and_the_se_issuer_sees_no_kcvs(cworld):
    built, _ = _package(cworld, counter=11)
    job = _ok(
        _run(
            cworld,
            cworld.provider_actor,
            "load_keys_confidential",
            {"sd": SSD, "package": built.package.hex()},
        )
    )
    mine = client_for(cworld.users["supplier"]).get(f"/api/v1/orgs/supplier/jobs/{job.pk}/").json()
    keyload.verify_receipt(bytes.fromhex(mine["result"]["receipt"]), expected_receipt=built.expected_receipt)
    assert mine["params"]["kcvs"] == mine["result"]["kcvs"]
    theirs = client_for(cworld.users["sei"]).get(f"/api/v1/orgs/sei/jobs/{job.pk}/")
    assert theirs.status_code == 200
    assert theirs.json()["result"] == {} and theirs.json()["params"]["kcvs"] == "hidden"
