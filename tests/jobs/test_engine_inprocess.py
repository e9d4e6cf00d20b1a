"""The job engine end to end in one process: request → compile → signed exchange → software SE →
verify → database, on the embedded default (Celery eager)."""

from __future__ import annotations

from django.test import Client

from devices.models import SecurityDomain
from jobs.models import JobState
from jobs.services import job_request


def test_a_tsm_creates_a_security_domain_for_a_provider_and_the_card_agrees(jobworld):
    # given a TSM mandated by the SE issuer and by the provider
    job = job_request(
        actor=jobworld.tsm_for_sei,
        device=jobworld.device,
        kind="create_security_domain",
        params={"aid": "A0000001515350AA01", "owner": "supplier"},
    )
    # when the gateway polls until nothing is left
    jobworld.gateway.run(Client())
    # then the job succeeded, the SD is recorded for the provider with an active key set
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, (job.error_code, job.error_message)
    sd = SecurityDomain.objects.get(secure_element=jobworld.se, aid="A0000001515350AA01")
    assert sd.owner == jobworld.provider
    assert sd.key_sets.get().status == "active"
    # and the card itself holds it
    assert bytes.fromhex("A0000001515350AA01") in jobworld.gateway.card.registry


def _run(jobworld, actor, kind, params, mode=None):
    job = job_request(actor=actor, device=jobworld.device, kind=kind, params=params, mode=mode)
    jobworld.gateway.run(Client())
    job.refresh_from_db()
    return job


def _registry_kvns(card, aid_hex):
    reg = card.registry
    return next(v for k, v in reg.key_versions.items() if bytes(k) == bytes.fromhex(aid_hex))


def test_the_whole_life_of_a_provider_sd_in_interactive_and_precomputed_modes(jobworld):
    aid = "A0000001515350AA02"
    tsm = jobworld.tsm_for_sei
    job = _run(jobworld, tsm, "create_security_domain", {"aid": aid, "owner": "supplier"}, mode="interactive")
    assert job.state == JobState.SUCCEEDED, job.error_message
    assert {s.phase for s in job.steps.all()} == {"open", "continue"}
    # the provider rotates its own keys (precomputed: the counter is known now)
    provider = jobworld.provider_actor
    old = SecurityDomain.objects.get(aid=aid).key_sets.get(status="active")
    job = _run(jobworld, provider, "rotate_keys", {"sd": aid, "key_length": 32})
    assert job.state == JobState.SUCCEEDED, job.error_message
    new = SecurityDomain.objects.get(aid=aid).key_sets.get(status="active")
    assert new.kvn != old.kvn and new.key_length == 32
    assert _registry_kvns(jobworld.gateway.card, aid) == (new.kvn,)
    # the issuer reads the card's status; the database matches the card
    job = _run(jobworld, jobworld.sei_actor, "read_status", {})
    assert job.state == JobState.SUCCEEDED, job.error_message
    # the TSM deletes the SD; card and database agree it is gone
    job = _run(jobworld, tsm, "delete_security_domain", {"aid": aid})
    assert job.state == JobState.SUCCEEDED, job.error_message
    assert not SecurityDomain.objects.filter(aid=aid).exists()
    assert bytes.fromhex(aid) not in jobworld.gateway.card.registry


def test_a_wrong_sequence_counter_is_learned_and_the_step_is_recompiled(jobworld):
    from keys.models import KeySet

    KeySet.objects.filter(security_domain__is_isd=True).update(sequence_counter=7)
    job = _run(jobworld, jobworld.sei_actor, "read_status", {})
    assert job.state == JobState.SUCCEEDED, job.error_message
    assert job.steps.filter(outcome__has_key="counter_mismatch").exists() or job.steps.count() >= 2
