"""The consent gate (issue 6 part 1): a provider's work on a subscriber's device needs the
subscriber's active consent, checked when the job is requested and again whenever one of its
steps is compiled (``jobs.engine.job_advance``) or handed to the device (``jobs.exchange``).

Which jobs need it: the kinds that put or change a provider's things on the card
(``CONSENT_KINDS``), on a device that has a subscriber, for a beneficiary (the SD's owner) that
is neither the subscriber itself nor the SE issuer. Removals (delete, lock, unlock, delete
application) and status reads never wait: they are what ending a consent sets off.

A contract whose terms waive consent (``Contract.consent_required`` False: a leased kit whose
provider the lessor assigns) stands in for it while it is pending or in force.

Which consent covers it: granted and in force, for this device, given by the device's current
subscriber to the job's beneficiary (one provider's consent never covers another's), naming the
job's security domain (``sd_aid``, if the consent names one) and, for application jobs, its
instance (``application_aid``, if the consent names one).
"""

from __future__ import annotations

from typing import Any

from jobs.models import Job, JobKind, JobState
from tenants.models import Consent, Contract, ContractStatus

CONSENT_KINDS = frozenset(
    {
        JobKind.CREATE_SECURITY_DOMAIN,
        JobKind.INSTALL_APPLICATION,
        JobKind.PERSONALIZE_APPLICATION,
        JobKind.ROTATE_KEYS,
        JobKind.LOAD_KEYS_CONFIDENTIAL,
        JobKind.LOAD_KEYS_SCP11,
        JobKind.RUN_SCRIPT,
    }
)
APPLICATION_KINDS = frozenset({JobKind.INSTALL_APPLICATION, JobKind.PERSONALIZE_APPLICATION})


def job_sd_aid(kind: str, params: dict[str, Any], target_aid: str) -> str:
    """The AID of the security domain a job works in (the one it creates, for a create)."""
    if kind == JobKind.CREATE_SECURITY_DOMAIN:
        return str(params.get("aid", target_aid))
    return str(params.get("sd", target_aid))


def consent_needed(*, kind: str, subscriber_id: Any, beneficiary_id: Any, issuer_id: Any) -> bool:
    return (
        kind in CONSENT_KINDS
        and subscriber_id is not None
        and beneficiary_id is not None
        and beneficiary_id not in (subscriber_id, issuer_id)
    )


def contract_waives_consent(*, device_id: Any, provider_id: Any) -> bool:
    """True while a pending or active contract of ``provider_id`` on the device waives consent."""
    return Contract.objects.filter(
        device_id=device_id,
        provider_id=provider_id,
        consent_required=False,
        status__in=[ContractStatus.PENDING, ContractStatus.ACTIVE],
    ).exists()


def covering_q(
    *, device_id: Any, subscriber_id: Any, grantee_id: Any, kind: str, sd_aid: str, app_aid: str
) -> Any:
    from django.db.models import Q

    q = Consent.active_q() & Q(device_id=device_id, subscriber_id=subscriber_id, grantee_id=grantee_id)
    q &= Q(sd_aid="") | Q(sd_aid=sd_aid)
    if kind in APPLICATION_KINDS:
        q &= Q(application_aid="") | Q(application_aid=app_aid)
    return q


def consent_covers(consent: Consent, *, kind: str, params: dict[str, Any], target_aid: str) -> bool:
    """Whether ``consent`` (whatever its status) is for this job's SD and application."""
    if consent.sd_aid and consent.sd_aid != job_sd_aid(kind, params, target_aid):
        return False
    if kind in APPLICATION_KINDS and consent.application_aid:
        return consent.application_aid == params.get("instance_aid", target_aid)
    return True


def covering_consent(job: Job) -> Consent | None:
    """The active consent covering ``job``, or None."""
    subscriber_id = job.device.subscriber_id
    return (
        Consent.objects.filter(
            covering_q(
                device_id=job.device_id,
                subscriber_id=subscriber_id,
                grantee_id=job.beneficiary_id,
                kind=job.kind,
                sd_aid=job_sd_aid(job.kind, job.params, job.target_aid),
                app_aid=str(job.params.get("instance_aid", job.target_aid)),
            )
        )
        .order_by("-granted_at")
        .first()
    )


def job_needs_consent(job: Job) -> bool:
    if job.kind not in CONSENT_KINDS:  # no query for the kinds that never wait
        return False
    return consent_needed(
        kind=job.kind,
        subscriber_id=job.device.subscriber_id,
        beneficiary_id=job.beneficiary_id,
        issuer_id=job.secure_element.issuer_id,
    ) and not contract_waives_consent(device_id=job.device_id, provider_id=job.beneficiary_id)


def consent_gate(job: Job) -> bool:
    """Called before a step of ``job`` is compiled or handed out. True: go on. False: the consent
    it needs is gone (revoked, expired, never given) — the job has been ended ``rejected``
    (audited, its ready steps superseded) and nothing of it may reach the card."""
    if not job_needs_consent(job) or covering_consent(job) is not None:
        return True
    from jobs.services import job_transition

    if job.state == JobState.AWAITING_CONSENT:
        return False  # still waiting for the subscriber's answer: not dispatched, not ended
    job_transition(
        job=job,
        to=JobState.REJECTED,
        reason="the subscriber's consent for this work is no longer in force",
        error_code="consent_missing",
    )
    return False
