"""load_keys_scp11, in process (issue 5 item 4, "for online devices over SCP11a directly";
docs/key-loading-package.md §8): the provider opens SCP11a with the SE's CASD itself and delivers
its SD's key set under the session's S-DEK, in two rounds on one card session. Tessera relays
ciphertext and MACs, holds the device for the job between the rounds, and never holds the keys."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from django.test import Client
from django.utils import timezone

from devices.models import SecurityDomain
from gp import keydelivery
from gp.apdu import ResponseAPDU
from gp.commands import DGI, DataStructure, GetData, StoreData
from gp.scp03 import StaticKeys, kcv
from gp.scp11 import HostSession
from jobs.compiler.session import PayloadCommand, unwrap_responses
from jobs.engine import scp11_input_seconds
from jobs.errors import JobNotAllowed
from jobs.models import Job, JobState, JobStep, StepState
from jobs.services import job_input, job_request
from jobs.sweeper import sweep
from tests.conftest import client_for
from tests.jobs.test_confidential import SSD, _assert_nowhere_in_database, _ok, _provider_script, _run
from tests.jobs.test_confidential import cworld as _cworld  # noqa: F401 - the fixture

cworld = _cworld
KVN = 0x31  # as tests.jobs.test_confidential's provider script expects


class Provider:
    """The provider's side of one SCP11a session: the session, and its twin that checks each R-MAC
    in its place (the same ephemeral key gives the same session keys)."""

    def __init__(self, w: Any, *, level: int = 0x34) -> None:
        p = w.provider
        eph = ec.generate_private_key(ec.SECP256R1())
        kw: dict[str, Any] = {
            "sd_public_key": p.casd_key,
            "key_version": 0x01,
            "key_id": 0x11,
            "oce_private_key": p.oce_key,
            "oce_certificates": [bytes(p.oce.gp_der)],
            "oce_key_version": 0x01,
            "oce_key_id": 0x10,
            "security_level": level,
            "ephemeral_private_key": eph,
        }
        self.host, self.checker = HostSession("a", **kw), HostSession("a", **kw)
        self.opening = self.host.authenticate_commands()
        self.checker.authenticate_commands()
        self.keys = StaticKeys(os.urandom(16), os.urandom(16), os.urandom(16))

    def complete(self, job: Job) -> None:
        answer = bytes.fromhex(job.result["authenticate"][-1])
        self.host.complete(answer)
        self.checker.complete(answer)

    def delivery(self, *, sd: str = SSD) -> tuple[list[bytes], dict[str, Any]]:
        plain = keydelivery.delivery_commands(
            sd_aid=bytes.fromhex(sd),
            kvn=KVN,
            keys=(self.keys.enc, self.keys.mac, self.keys.dek),
            dek=self.host.dek,
        )
        self.plain = plain
        wrapped = [self.host.wrap(c) for c in plain]
        kcvs = {
            n: kcv(k).hex().upper()
            for n, k in zip(("enc", "mac", "dek"), (self.keys.enc, self.keys.mac, self.keys.dek), strict=True)
        }
        return wrapped, {"commands": [c.hex() for c in wrapped], "kvn": KVN, "key_length": 16, "kcvs": kcvs}

    def verify(self, job: Job) -> tuple[int, tuple[bytes, ...]]:
        """Every answer's R-MAC checked in its place; the card's KVN and KCVs."""
        answers = []
        for command, raw in zip(self.plain, job.result["responses"], strict=True):
            self.checker.wrap(command)
            answers.append(ResponseAPDU.parse(self.checker.unwrap(bytes.fromhex(raw))))
        assert [a.sw for a in answers] == [0x9000, 0x9000]
        return keydelivery.parse_response(answers[-1].data)


def _request(w: Any, provider: Provider) -> Job:
    return _run(
        w,
        w.provider_actor,
        "load_keys_scp11",
        {"sd": SSD, "authenticate": [c.hex() for c in provider.opening]},
    )


def _input_url(job: Job, org: str = "supplier") -> str:
    return f"/api/v1/orgs/{org}/jobs/{job.pk}/input/"


def test_the_provider_loads_its_keys_over_its_own_scp11a_session_in_two_rounds(cworld: Any) -> None:
    w = cworld
    p = Provider(w)
    # round 1: the opening is relayed after SELECT ISD; the job waits for the provider's input
    job = _request(w, p)
    assert job.state == JobState.AWAITING_INPUT, (job.error_code, job.error_message)
    assert job.input_deadline is not None and job.mode == "interactive"
    p.complete(job)  # the receipt verifies: this SE's CASD, this session
    # round 2: the provider's wrapped INSTALL [for personalization] + key-set STORE DATA
    _wrapped, body = p.delivery()
    resp = client_for(w.users["supplier"]).post(_input_url(job), body, format="json")
    assert resp.status_code == 200, resp.content
    assert resp.json()["state"] == "queued"
    w.gateway.run(Client())
    job.refresh_from_db()
    _ok(job)
    # the provider checks the card's R-MAC'd answer: its KVN and KCVs
    assert p.verify(job) == (KVN, (kcv(p.keys.enc), kcv(p.keys.mac), kcv(p.keys.dek)))
    # the SD records a provider-held key set: KCVs, no key material
    sd = SecurityDomain.objects.get(aid=SSD)
    held = sd.key_sets.get(kvn=KVN)
    assert (held.custody, held.status, bytes(held.sealed)) == ("provider", "active", b"")
    assert held.kcvs == body["kcvs"]
    # and the provider's own SCP03 session to its SD opens with the new keys through Tessera
    perso = StoreData(0, DGI(0x0101, b"https://billing.example/online").encode(), True, DataStructure.DGI)
    payload = [
        PayloadCommand(GetData(0x00E0).to_apdu().encode(), ("9000",), "GET DATA key information"),
        PayloadCommand(perso.to_apdu().encode(), ("9000",), "STORE DATA"),
    ]
    plan, commands = _provider_script(w, p.keys, payload)
    done = _ok(_run(w, w.provider_actor, "run_script", {"sd": SSD, "commands": commands}))
    outcome = unwrap_responses(
        keys=p.keys,
        plan=plan,
        payload=payload,
        responses=[b"\x90\x00"] + [bytes.fromhex(r) for r in done.result["responses"]],
    )
    assert outcome.completed
    # blindness: the keys and the session's S-DEK are nowhere in the database
    _assert_nowhere_in_database([p.keys.enc, p.keys.mac, p.keys.dek, p.host.dek])


def test_another_job_requested_between_the_rounds_waits_and_runs_after(cworld: Any) -> None:
    w = cworld
    p = Provider(w)
    job = _request(w, p)
    assert job.state == JobState.AWAITING_INPUT
    p.complete(job)
    isd = SecurityDomain.objects.get(is_isd=True).aid
    # when the SE issuer asks for a status read while the provider's session is open
    other = _run(w, w.sei_actor, "read_status", {"sd": isd})
    # then its step is compiled but not handed to the device
    assert other.state == JobState.QUEUED
    assert list(JobStep.objects.filter(job=other).values_list("state", flat=True)) == [StepState.READY]
    executed_before = len(w.gateway.executed)
    # and round 2 runs on the same card session
    _wrapped, body = p.delivery()
    job = job_input(actor=w.provider_actor, job=job, body=body)
    w.gateway.run(Client())
    job.refresh_from_db()
    other.refresh_from_db()
    _ok(job)
    _ok(other)  # released when the provider's job ended
    sent = w.gateway.executed[executed_before:]
    assert sent[:2] == [bytes.fromhex(c) for c in body["commands"]]  # round 2 first, nothing before it


def test_no_input_before_the_deadline_fails_the_job_input_timeout_and_frees_the_device(cworld: Any) -> None:
    w = cworld
    p = Provider(w)
    job = _request(w, p)
    isd = SecurityDomain.objects.get(is_isd=True).aid
    other = _run(w, w.sei_actor, "read_status", {"sd": isd})
    assert other.state == JobState.QUEUED
    # when the sweeper runs after the input deadline
    counts = sweep(now=timezone.now() + timedelta(seconds=scp11_input_seconds() + 1))
    job.refresh_from_db()
    assert counts["input_timeout"] == 1
    assert (job.state, job.error_code) == (JobState.FAILED, "input_timeout")
    # then the other job runs, and a late input is refused
    w.gateway.run(Client())
    other.refresh_from_db()
    _ok(other)
    p.complete(job)
    _wrapped, body = p.delivery()
    resp = client_for(w.users["supplier"]).post(_input_url(job), body, format="json")
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "not_awaiting_input"
    assert not SecurityDomain.objects.get(aid=SSD).key_sets.filter(kvn=KVN).exists()


def test_an_agent_restart_between_the_rounds_fails_the_job_cleanly(cworld: Any) -> None:
    w = cworld
    p = Provider(w)
    job = _request(w, p)
    p.complete(job)
    w.gateway.card.reset()  # what a restarted agent finds: a card without the SCP11 session
    _wrapped, body = p.delivery()
    job_input(actor=w.provider_actor, job=job, body=body)
    w.gateway.run(Client())
    job.refresh_from_db()
    assert (job.state, job.error_code) == (JobState.FAILED, "card_6982")
    assert "SCP11 session" in job.error_message
    assert not SecurityDomain.objects.get(aid=SSD).key_sets.filter(kvn=KVN).exists()


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda w, p: ["80CA00E000", p.opening[-1].hex()], id="get-data-instead-of-pso"),
        pytest.param(lambda w, p: [c.hex() for c in p.opening[:-1]], id="no-mutual-authenticate"),
        pytest.param(lambda w, p: [p.opening[-1].hex(), *(c.hex() for c in p.opening[:-1])], id="order"),
        pytest.param(
            lambda w, p: [c.hex() for c in Provider(w, level=0x3C).opening], id="level-3c-hides-the-sd"
        ),
        pytest.param(
            lambda w, p: [c.hex() for c in p.opening[:-1]] + ["80880111" + p.opening[-1][4:].hex()],
            id="scp11b",
        ),
        pytest.param(lambda w, p: ["zz"], id="not-hex"),
        pytest.param(lambda w, p: "80CA00E000", id="not-a-list"),
    ],
)
def test_round_1_with_other_command_types_is_400(cworld: Any, make: Any) -> None:
    p = Provider(cworld)
    body = {"kind": "load_keys_scp11", "params": {"sd": SSD, "authenticate": make(cworld, p)}}
    resp = client_for(cworld.users["supplier"]).post(
        f"/api/v1/orgs/supplier/devices/{cworld.device.pk}/jobs/", body, format="json"
    )
    assert resp.status_code == 400, resp.content
    assert resp.json()["error"]["code"] == "invalid_job"
    assert not Job.objects.filter(kind="load_keys_scp11").exists()


def test_round_2_must_address_the_jobs_sd_and_carry_the_declared_key_set(cworld: Any) -> None:
    w = cworld
    p = Provider(w)
    job = _request(w, p)
    p.complete(job)
    client = client_for(w.users["supplier"])
    isd = SecurityDomain.objects.get(is_isd=True).aid
    # another SD (here the ISD): refused before anything reaches the card
    _, body = p.delivery(sd=isd)
    resp = client.post(_input_url(job), body, format="json")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_job"
    # KCVs that are not the STORE DATA's
    _, body = p.delivery()
    body["kcvs"] = {**body["kcvs"], "enc": "000000"}
    resp = client.post(_input_url(job), body, format="json")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "delivery_mismatch"
    job.refresh_from_db()
    assert job.state == JobState.AWAITING_INPUT


def test_strangers_get_404_and_parties_without_the_job_get_403(cworld: Any) -> None:
    w = cworld
    p = Provider(w)
    url = f"/api/v1/orgs/stranger/devices/{w.device.pk}/jobs/"
    body = {"kind": "load_keys_scp11", "params": {"sd": SSD, "authenticate": [c.hex() for c in p.opening]}}
    assert client_for(w.users["stranger"]).post(url, body, format="json").status_code == 404
    job = _request(w, p)
    p.complete(job)
    _, delivery = p.delivery()
    assert (
        client_for(w.users["stranger"]).post(_input_url(job, "stranger"), delivery, format="json").status_code
        == 404
    )
    # the SE issuer sees the job (its ISD relays it) but the input is the provider's
    resp = client_for(w.users["sei"]).post(_input_url(job, "sei"), delivery, format="json")
    assert resp.status_code == 403
    with pytest.raises(JobNotAllowed):
        job_request(
            actor=w.sei_actor,
            device=w.device,
            kind="load_keys_scp11",
            params={"sd": SSD, "authenticate": [c.hex() for c in p.opening]},
        )
    # and the SE issuer's view of the job hides the provider's commands and KCVs
    theirs = client_for(w.users["sei"]).get(f"/api/v1/orgs/sei/jobs/{job.pk}/").json()
    assert theirs["params"]["authenticate"] == "hidden" and theirs["result"] == {}
