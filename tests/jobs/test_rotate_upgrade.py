"""rotate_keys to a stronger algorithm (issue 5 part 7): AES-128 → AES-256 on the software SE,
in process (request → compile → signed exchange → card → database), and never a downgrade."""

from __future__ import annotations

import pytest
from django.test import Client

from devices.models import SecurityDomain
from gp.scp03 import kcv
from jobs.errors import InvalidJobRequest
from jobs.models import Job, JobState
from jobs.services import job_request
from keys.models import KeySet
from keys.services import keyset_static_keys
from tests.conftest import client_for
from tests.gp.cardkit import Terminal

AID = "A0000001515350AA07"


def _run(jobworld, actor, kind, params):
    job = job_request(actor=actor, device=jobworld.device, kind=kind, params=params)
    jobworld.gateway.run(Client())
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, (job.error_code, job.error_message)
    return job


def _card_key_sets(card, aid_hex: str) -> dict[int, dict[int, bytes]]:
    """The SD's key sets as the card holds them: {kvn: {kid: key value}} (test inspection only)."""
    app = next(a for a in card.state_dict()["applications"] if a["aid"] == aid_hex.lower())
    return {ks["kvn"]: {k["kid"]: bytes.fromhex(k["value"]) for k in ks["keys"]} for ks in app["keys"]}


def _provider_sd(jobworld, key_length: int = 16) -> SecurityDomain:
    _run(
        jobworld,
        jobworld.tsm_for_sei,
        "create_security_domain",
        {"aid": AID, "owner": "supplier", "key_length": key_length},
    )
    return SecurityDomain.objects.get(secure_element=jobworld.se, aid=AID)


def test_a_provider_moves_its_aes_128_key_set_to_aes_256_on_the_card(jobworld):
    # given a provider SD created with AES-128 keys
    sd = _provider_sd(jobworld)
    old = sd.key_sets.get(status="active")
    assert old.key_length == 16
    assert {len(v) for v in _card_key_sets(jobworld.gateway.card, AID)[old.kvn].values()} == {16}
    # when the provider rotates to AES-256
    job = _run(jobworld, jobworld.provider_actor, "rotate_keys", {"sd": AID, "key_length": 32})
    # then the database holds one active AES-256 key set with a crypto-period, the old one destroyed
    assert job.params["key_length"] == 32
    new = sd.key_sets.get(status="active")
    assert new.kvn != old.kvn and new.key_length == 32 and new.algorithm == "AES"
    assert new.crypto_period_end is not None and new.crypto_period_end > new.created_at.date()
    assert KeySet.objects.get(pk=old.pk).status == "destroyed"
    # and the card holds only the new KVN, three 32-byte keys whose KCVs are the recorded ones
    on_card = _card_key_sets(jobworld.gateway.card, AID)
    assert set(on_card) == {new.kvn}
    assert {len(v) for v in on_card[new.kvn].values()} == {32}
    assert [kcv(on_card[new.kvn][kid]).hex().upper() for kid in (1, 2, 3)] == [
        new.kcv_enc,
        new.kcv_mac,
        new.kcv_dek,
    ]
    # and an SCP03 session opens on the card with the vault's new keys (S16 not needed: AES-256
    # static keys with 8-byte challenges, Amd D §6.2.1)
    keys = keyset_static_keys(keyset=new)
    assert keys.key_length == 32
    term = Terminal(jobworld.gateway.card).open(keys, aid=bytes.fromhex(AID), kvn=new.kvn)
    assert term.session is not None


def test_a_rotation_without_key_length_keeps_the_current_length(jobworld):
    sd = _provider_sd(jobworld, key_length=24)
    job = _run(jobworld, jobworld.provider_actor, "rotate_keys", {"sd": AID})
    assert job.params["key_length"] == 24
    new = sd.key_sets.get(status="active")
    assert new.key_length == 24
    assert {len(v) for v in _card_key_sets(jobworld.gateway.card, AID)[new.kvn].values()} == {24}


def test_the_issuer_upgrades_its_isd_keys_and_the_next_job_uses_them(jobworld):
    isd = SecurityDomain.objects.get(secure_element=jobworld.se, is_isd=True)
    _run(jobworld, jobworld.sei_actor, "rotate_keys", {"key_length": 32})
    assert isd.key_sets.get(status="active").key_length == 32
    # the next ISD job opens its session with the AES-256 keys
    _run(jobworld, jobworld.sei_actor, "read_status", {})


def test_a_downgrade_is_refused_and_no_job_is_created(jobworld):
    sd = _provider_sd(jobworld, key_length=32)
    before = Job.objects.count()
    with pytest.raises(InvalidJobRequest) as exc:
        job_request(
            actor=jobworld.provider_actor,
            device=jobworld.device,
            kind="rotate_keys",
            params={"sd": AID, "key_length": 16},
        )
    assert exc.value.fields == {"key_length": ["downgrade"]}
    assert "AES-128" in str(exc.value) and "AES-256" in str(exc.value)
    assert Job.objects.count() == before
    assert sd.key_sets.get(status="active").key_length == 32


def test_the_api_answers_a_downgrade_with_400_and_a_stranger_with_404(jobworld):
    _provider_sd(jobworld, key_length=24)
    url = f"/api/v1/orgs/supplier/devices/{jobworld.device.pk}/jobs/"
    body = {"kind": "rotate_keys", "params": {"sd": AID, "key_length": 16}}
    resp = client_for(jobworld.users["supplier"]).post(url, body, format="json")
    assert resp.status_code == 400, resp.content
    assert resp.json()["error"]["code"] == "invalid_job"
    assert "key_length" in resp.json()["error"]["fields"]
    # a stranger learns nothing about the key length: the device is not theirs
    resp = client_for(jobworld.users["stranger"]).post(
        f"/api/v1/orgs/stranger/devices/{jobworld.device.pk}/jobs/", body, format="json"
    )
    assert resp.status_code == 404
    # an upgrade through the API is accepted
    body["params"]["key_length"] = 32
    resp = client_for(jobworld.users["supplier"]).post(url, body, format="json")
    assert resp.status_code == 201, resp.content


def test_the_request_form_rotates_at_the_current_length_by_default_and_refuses_a_downgrade(jobworld):
    _provider_sd(jobworld, key_length=32)
    client = Client()
    client.force_login(jobworld.users["supplier"])
    url = f"/o/supplier/devices/{jobworld.device.pk}/jobs/new/"
    form = {"kind": "rotate_keys", "mode": "precomputed", "sd": AID, "key_length": "16"}
    resp = client.post(url, form)
    assert resp.status_code == 400 and "never moves to a weaker key" in resp.content.decode()
    assert not Job.objects.filter(kind="rotate_keys").exists()
    resp = client.post(url, {**form, "key_length": ""})
    assert resp.status_code in (200, 302), resp.content[:300]
    assert Job.objects.get(kind="rotate_keys").params == {"sd": AID, "key_length": 32}
