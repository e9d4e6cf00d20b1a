"""The consent gate in process (issue 6 part 1): a provider's work on a subscriber's device waits for
the subscriber's consent, stops when it is denied, revoked or runs out — also when that happens
between the job's request and its dispatch — and the end of a consent removes the provider's SD."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from audit.models import AuditEvent, AuditTag
from devices.models import SecurityDomain
from jobs.models import Job, JobKind, JobState, StepState
from jobs.services import job_request
from tenants.access import Action, Actor, visible_to
from tenants.consent import consent_decide, consent_request, consent_revoke
from tenants.models import Consent, ConsentStatus, MemberRole, OrgRole
from tests import factories as f

AID = "A0000001515350AA01"
OTHER_AID = "A0000001515350BB01"


@pytest.fixture
def home(jobworld: Any) -> Actor:
    """The device gets a subscriber (a homeowner); returns the homeowner acting for itself."""
    subscriber = f.OrganisationFactory(slug="home-ana", name="Ana", roles=[OrgRole.SERVICE_SUBSCRIBER])
    user = f.MembershipFactory(org=subscriber, user=f.UserFactory(username="ana"), role=MemberRole.OWNER).user
    jobworld.device.subscriber = subscriber
    jobworld.device.save(update_fields=["subscriber"])
    return Actor(user=user, org=subscriber, member_role=MemberRole.OWNER)


def _create_sd(jobworld: Any, owner: str = "supplier", aid: str = AID) -> Job:
    return job_request(
        actor=jobworld.sei_actor,
        device=jobworld.device,
        kind="create_security_domain",
        params={"aid": aid, "owner": owner},
    )


def _ask(jobworld: Any, actor: Any = None, aid: str = AID, days: int | None = 30) -> Consent:
    return consent_request(
        actor=actor or jobworld.provider_actor,
        device=jobworld.device,
        purpose="Billing your electricity",
        scopes=["own_security_domain", "readings"],
        duration_days=days,
        sd_aid=aid,
    )


def _run(jobworld: Any) -> None:
    jobworld.gateway.run(Client())


def _granted_sd(jobworld: Any, home: Actor, days: int | None = 30) -> Consent:
    consent = consent_decide(actor=home, consent=_ask(jobworld, days=days), approve=True)
    job = _create_sd(jobworld)
    _run(jobworld)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.error_message
    return consent


def test_a_providers_job_waits_for_consent_and_is_never_dispatched_meanwhile(jobworld, home):
    job = _create_sd(jobworld)
    assert job.state == JobState.AWAITING_CONSENT
    _run(jobworld)
    job.refresh_from_db()
    assert job.state == JobState.AWAITING_CONSENT
    assert not job.steps.exists()
    assert bytes.fromhex(AID) not in jobworld.gateway.card.registry


def test_a_denial_ends_the_waiting_job_rejected_at_once(jobworld, home):
    # given a job waiting for the subscriber's answer
    consent = _ask(jobworld)
    job = _create_sd(jobworld)
    # when the subscriber says no
    consent_decide(actor=home, consent=consent, approve=False)
    # then the job is rejected without waiting for any deadline, and nothing reached the card
    job.refresh_from_db()
    assert (job.state, job.error_code) == (JobState.REJECTED, "consent_denied")
    _run(jobworld)
    assert bytes.fromhex(AID) not in jobworld.gateway.card.registry
    assert AuditEvent.objects.filter(tag=AuditTag.CONSENT_DENY, target_id=str(consent.pk)).exists()


def test_an_approval_queues_the_waiting_job_and_it_runs(jobworld, home):
    consent = _ask(jobworld)
    job = _create_sd(jobworld)
    consent_decide(actor=home, consent=consent, approve=True)
    job.refresh_from_db()
    assert job.state == JobState.QUEUED
    _run(jobworld)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.error_message
    assert bytes.fromhex(AID) in jobworld.gateway.card.registry
    # and later work of the provider on its SD no longer waits
    rotate = job_request(
        actor=jobworld.provider_actor, device=jobworld.device, kind="rotate_keys", params={"sd": AID}
    )
    assert rotate.state == JobState.QUEUED


def test_issuer_work_and_a_device_without_subscriber_need_no_consent(jobworld):
    job = _create_sd(jobworld)  # the device has no subscriber here
    assert job.state == JobState.QUEUED
    status = job_request(actor=jobworld.sei_actor, device=jobworld.device, kind="read_status", params={})
    assert status.state == JobState.QUEUED


def test_a_job_queued_before_its_consent_ran_out_and_dispatched_after_does_not_run(jobworld, home):
    # given the provider's SD, and a rotation queued (its step compiled) while consent is in force
    consent = _granted_sd(jobworld, home)
    rotate = job_request(
        actor=jobworld.provider_actor, device=jobworld.device, kind="rotate_keys", params={"sd": AID}
    )
    assert rotate.steps.filter(state=StepState.READY).exists()
    kvns_before = jobworld.gateway.card.registry.key_versions[bytes.fromhex(AID)]
    # when the consent runs out before the device polls (the sweeper has not noticed yet)
    Consent.objects.filter(pk=consent.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    _run(jobworld)
    # then the gate at dispatch ends it rejected (audited) and the card never saw it
    rotate.refresh_from_db()
    assert (rotate.state, rotate.error_code) == (JobState.REJECTED, "consent_missing")
    assert not rotate.steps.filter(dispatched_at__isnull=False).exists()
    assert jobworld.gateway.card.registry.key_versions[bytes.fromhex(AID)] == kvns_before
    assert AuditEvent.objects.filter(
        tag=AuditTag.JOB_STATE, target_id=str(rotate.pk), details__error="consent_missing"
    ).exists()


def test_a_revocation_stops_queued_work_and_removes_the_providers_sd_visibly_to_the_subscriber(
    jobworld, home
):
    consent = _granted_sd(jobworld, home)
    rotate = job_request(
        actor=jobworld.provider_actor, device=jobworld.device, kind="rotate_keys", params={"sd": AID}
    )
    kvns_before = jobworld.gateway.card.registry.key_versions[bytes.fromhex(AID)]
    # when the homeowner withdraws consent
    consent = consent_revoke(actor=home, consent=consent)
    # then the queued rotation is rejected and a removal of the SD is requested by the issuer side
    rotate.refresh_from_db()
    assert rotate.state == JobState.REJECTED
    removal = Job.objects.get(pk=consent.removal_job_id)
    assert (removal.kind, removal.requested_by, removal.target_aid) == (
        JobKind.DELETE_SECURITY_DOMAIN,
        jobworld.sei,
        AID,
    )
    _run(jobworld)
    removal.refresh_from_db()
    assert removal.state == JobState.SUCCEEDED, removal.error_message
    assert bytes.fromhex(AID) not in jobworld.gateway.card.registry
    assert not SecurityDomain.objects.filter(aid=AID).exists()
    assert kvns_before  # the rotation never ran: the SD went with its original keys
    # and the homeowner sees the removal job done
    assert visible_to(Job, home, Action.JOBS_VIEW).filter(pk=removal.pk, state=JobState.SUCCEEDED).exists()


def test_expiry_by_the_sweeper_starts_the_removal(jobworld, home):
    from jobs.sweeper import sweep

    consent = _granted_sd(jobworld, home, days=1)
    assert consent.expires_at - consent.granted_at == timedelta(days=1)
    # a day later (moved back rather than the clock forward: the removal job's deadlines are real)
    Consent.objects.filter(pk=consent.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    counts = sweep()
    assert counts["consents_expired"] == 1
    consent.refresh_from_db()
    assert consent.status == ConsentStatus.EXPIRED
    assert AuditEvent.objects.filter(tag=AuditTag.CONSENT_EXPIRE, target_id=str(consent.pk)).exists()
    _run(jobworld)
    assert Job.objects.get(pk=consent.removal_job_id).state == JobState.SUCCEEDED
    assert bytes.fromhex(AID) not in jobworld.gateway.card.registry


def test_a_contract_saying_lock_locks_instead_of_deleting(jobworld, home):
    f.ContractFactory(
        subscriber=home.org, provider=jobworld.provider, device=jobworld.device, on_consent_end="lock"
    )
    consent = consent_revoke(actor=home, consent=_granted_sd(jobworld, home))
    removal = Job.objects.get(pk=consent.removal_job_id)
    assert removal.kind == JobKind.LOCK
    _run(jobworld)
    removal.refresh_from_db()
    assert removal.state == JobState.SUCCEEDED, removal.error_message


def test_two_providers_racing_for_one_device_each_need_their_own_consent(jobworld, home):
    # given two providers asking for the same device, each with its own SD
    supplier_consent = _ask(jobworld)
    rival_consent = _ask(jobworld, actor=jobworld.stranger_actor, aid=OTHER_AID)
    supplier_job = _create_sd(jobworld)
    rival_job = _create_sd(jobworld, owner="stranger", aid=OTHER_AID)
    # when the homeowner approves the supplier only
    consent_decide(actor=home, consent=supplier_consent, approve=True)
    _run(jobworld)
    supplier_job.refresh_from_db()
    rival_job.refresh_from_db()
    assert supplier_job.state == JobState.SUCCEEDED, supplier_job.error_message
    assert rival_job.state == JobState.AWAITING_CONSENT
    # a consent without a named SD still covers only its own grantee's work
    Consent.objects.filter(pk=supplier_consent.pk).update(sd_aid="")
    late = _create_sd(jobworld, owner="stranger", aid="A0000001515350BB02")
    assert late.state == JobState.AWAITING_CONSENT
    # and the rival's denial ends only the rival's jobs
    consent_decide(actor=home, consent=rival_consent, approve=False)
    rival_job.refresh_from_db()
    late.refresh_from_db()
    assert rival_job.state == JobState.REJECTED
    assert late.state == JobState.AWAITING_CONSENT  # another SD than the one the rival asked for
    assert bytes.fromhex(OTHER_AID) not in jobworld.gateway.card.registry
    supplier_job.refresh_from_db()
    assert supplier_job.state == JobState.SUCCEEDED
