"""Writes of the switches app: asking for a provider switch and running it as a saga of jobs.

The saga (DESIGN §7, issue 6 item 2) is make-before-break:

    create_sd → [install_app → personalize_app] → load_keys → verify → delete_old… → finish

``create_sd``, ``verify`` (GET STATUS) and ``delete_old`` run in the SE issuer's ISD session (as
``jobs.services`` requires for creating and deleting security domains); ``load_keys`` and the
application steps run as the new provider, the application steps with the SD's first keys. ``load_keys`` is either the new provider's own confidential load (the
saga waits in ``awaiting_keys`` for the provider's tooling to submit its CA-certified package; the
keys never reach Tessera) or, in ``portal`` mode, a key rotation into the new provider's vault.

Any step that fails before the old provider's SD is gone compensates: the card's registry is read
over the ISD (``inspect``: a step that failed half-way may have left an SD the database does not
know), then the new provider's SD (with its keys and application) is deleted, the new contract canceled, and the old provider keeps
serving (``rolled_back``). The old provider's contract ends only in ``finish``, in the same
transaction that activates the new one, so the subscriber always has exactly one provider of
record. Each job of the saga waits for a sleeping device (``TESSERA_SWITCH_STEP_NO_SHOW_SECONDS``):
a device asleep for days resumes where it stopped.

Advancing is idempotent: ``switch_advance`` locks the switch row and acts only when its current
job has ended (or there is none); the job-finished hook and the sweeper may both call it.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from audit.models import AuditTag
from audit.services import audit_record
from devices.models import Device, SecurityDomain
from jobs.models import TERMINAL_STATES, Application, Job, JobKind, JobState
from portal.errors import DomainError
from portal.events import publish
from switches.errors import SwitchConflict, SwitchNotAllowed, SwitchRequestInvalid
from switches.models import (
    ACTIVE_SWITCH_STATES,
    Initiator,
    KeysMode,
    Switch,
    SwitchState,
)
from tenants.access import Action, Actor, require
from tenants.models import (
    Consent,
    ConsentStatus,
    Contract,
    ContractStatus,
    MemberRole,
    Organisation,
    OrgRole,
    OrgStatus,
)

log = logging.getLogger(__name__)

PROVIDER_ROLES = {OrgRole.SERVICE_PROVIDER, OrgRole.APPLICATION_PROVIDER}
MAX_STEP_ATTEMPTS = 3
INSPECT = "inspect"
COMPENSATE = "delete_new"
FINISH = "finish"
DONE = "done"


# --- the saga's shape -------------------------------------------------------------------------


def forward_steps(switch: Switch) -> list[str]:
    steps = ["create_sd"]
    if switch.app.get("instance_aid"):
        steps.append("install_app")
        if switch.app.get("data"):
            steps.append("personalize_app")
    # The keys come after the application: once a confidential load has replaced the SD's first
    # key set, nobody but the new provider can open a session to its SD — Tessera included.
    steps += ["load_keys", "verify"]
    steps += [f"delete_old:{i}" for i in range(len(switch.old_sd_aids))]
    steps.append(FINISH)
    return steps


def _issuer_side(switch: Switch) -> Actor:
    return Actor(user=None, org=switch.issuer, member_role=MemberRole.OWNER)


def _new_provider_side(switch: Switch) -> Actor:
    return Actor(user=None, org=switch.new_provider, member_role=MemberRole.OWNER)


def _job_for_step(switch: Switch, step: str) -> tuple[Actor, str, dict[str, Any]] | None:
    """(actor, kind, params) of the job running ``step``, or None for a step without a job."""
    sd = switch.new_sd_aid
    app = switch.app
    if step == "create_sd":
        return (
            _issuer_side(switch),
            JobKind.CREATE_SECURITY_DOMAIN,
            {"aid": sd, "owner": switch.new_provider.slug},
        )
    if step == "load_keys":
        return _new_provider_side(switch), JobKind.ROTATE_KEYS, {"sd": sd}
    if step == "install_app":
        from jobs.services import DEMO_LOAD_FILE_AID

        params = {"sd": sd, "instance_aid": app["instance_aid"]}
        for key in ("load_file_aid", "module_aid"):
            if app.get(key):
                params[key] = app[key]
        load_file = params.get("load_file_aid", DEMO_LOAD_FILE_AID)
        if "load" in app:
            params["load"] = app["load"]
        elif load_file == DEMO_LOAD_FILE_AID:
            # Load the file unless an application instantiated from it shows it is on the card
            # already (the card refuses a second LOAD of the same file).
            params["load"] = not Application.objects.filter(
                secure_element__device=switch.device, load_file_aid=load_file
            ).exists()
        return _new_provider_side(switch), JobKind.INSTALL_APPLICATION, params
    if step == "personalize_app":
        return (
            _new_provider_side(switch),
            JobKind.PERSONALIZE_APPLICATION,
            {"sd": sd, "instance_aid": app["instance_aid"], "data": app["data"]},
        )
    if step == "verify":
        # The card's registry, read in the issuer's ISD session (GET STATUS lists every SD and
        # application; after a confidential load Tessera holds no key of the new SD).
        return _issuer_side(switch), JobKind.READ_STATUS, {}
    if step.startswith("delete_old:"):
        aid = switch.old_sd_aids[int(step.partition(":")[2])]
        return _issuer_side(switch), JobKind.DELETE_SECURITY_DOMAIN, {"aid": aid}
    if step == INSPECT:
        return _issuer_side(switch), JobKind.READ_STATUS, {}
    if step == COMPENSATE:
        return _issuer_side(switch), JobKind.DELETE_SECURITY_DOMAIN, {"aid": sd}
    return None


# --- who sees what ----------------------------------------------------------------------------


def audience(switch: Switch) -> set[Any]:
    """Who follows the switch as it runs: never the old provider (it learns the outcome only)."""
    return {
        o
        for o in (switch.subscriber_id, switch.issuer_id, switch.new_provider_id, switch.requested_by_id)
        if o
    }


def _event(switch: Switch, event: str, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "switch",
        "event": event,
        "switch": str(switch.pk),
        "device": switch.device.serial,
        "service": switch.new_contract.service,
        "state": switch.state,
        "step": switch.step,
        **({"campaign": str(switch.campaign_id)} if switch.campaign_id else {}),
        **extra,
    }


def _audit(switch: Switch, actor: Actor | None, tag: str, **details: Any) -> None:
    audit_record(
        actor=actor,
        tag=tag,
        target=switch,
        details={"device": switch.device.serial, "state": switch.state, "step": switch.step, **details},
        concerns=audience(switch),
    )


# --- requesting -------------------------------------------------------------------------------


def _provider(slug: Any) -> Organisation:
    org = (
        Organisation.objects.filter(slug=slug, status=OrgStatus.ACTIVE).first()
        if isinstance(slug, str)
        else None
    )
    if org is None or not (set(org.roles) & PROVIDER_ROLES):
        raise SwitchRequestInvalid(
            "new_provider must name an active service or application provider (its short name).",
            fields={"new_provider": ["invalid"]},
        )
    return org


def clean_app(app: Any) -> dict[str, Any]:
    """The ``app`` of a switch request, validated (``SwitchRequestInvalid`` otherwise); shared with
    campaigns, which check it once for all their devices."""
    from jobs.services import AID_RE, _personalisation

    if app in (None, {}):
        return {}
    if not isinstance(app, dict) or set(app) - {
        "instance_aid",
        "load_file_aid",
        "module_aid",
        "data",
        "load",
    }:
        raise SwitchRequestInvalid(
            "app takes instance_aid, and optionally load_file_aid, module_aid, load and data.",
            fields={"app": ["invalid"]},
        )
    clean: dict[str, Any] = {}
    if "load" in app:
        if not isinstance(app["load"], bool):
            raise SwitchRequestInvalid("app.load must be true or false.", fields={"app": ["load"]})
        clean["load"] = app["load"]
    for key in ("instance_aid", "load_file_aid", "module_aid"):
        value = app.get(key)
        if value is None and key != "instance_aid":
            continue
        if not isinstance(value, str) or not AID_RE.match(value.upper()):
            raise SwitchRequestInvalid(
                f"app.{key} must be an AID of 5–16 bytes in hex.", fields={"app": [key]}
            )
        clean[key] = value.upper()
    if app.get("data") is not None:
        try:
            clean["data"] = _personalisation(app["data"])
        except DomainError as e:
            raise SwitchRequestInvalid(f"app.data: {e}", fields={"app": ["data"]}) from None
    return clean


def switch_request(
    *,
    actor: Actor,
    device: Device,
    new_provider: Any,
    service: str | None = None,
    new_sd_aid: Any = None,
    keys_mode: Any = KeysMode.CONFIDENTIAL,
    app: Any = None,
    campaign_id: Any = None,
) -> Switch:
    """Start moving ``service`` on ``device`` to ``new_provider``.

    Who may: the device's subscriber when its contract allows switching (``switch_allowed``), or
    the SE issuer (owner or lessor of the device; a campaign's switches are the issuer's). The
    actor sees the device (the caller resolved it). Refused (409 ``switch_running``) while another
    switch of this device runs; 400 for a provider that is not one, the same provider, no contract
    in force, an AID already on the card. Effects: a pending contract for the new provider (same
    terms); for a subscriber's request its consent for the new provider's SD, for an issuer's on a
    contract that needs consent the new provider's consent request to the subscriber; the switch
    in ``running`` and its first job requested.
    """
    se = device.secure_elements.select_related("issuer").first()
    if se is None:
        raise SwitchRequestInvalid("This device has no registered secure element.")
    subject = actor.subject
    if device.subscriber_id and subject.pk == device.subscriber_id:
        require(actor, Action.CONSENTS_MANAGE)
        initiator = Initiator.SUBSCRIBER
    elif subject.pk == se.issuer_id and actor.on_behalf_of is None:
        require(actor, Action.JOBS_REQUEST)
        initiator = Initiator.ISSUER
    else:
        raise SwitchNotAllowed("Only the device's subscriber or its SE issuer may switch its provider.")
    if keys_mode not in KeysMode.values:
        raise SwitchRequestInvalid(
            f"keys_mode must be one of {', '.join(KeysMode.values)}.", fields={"keys_mode": ["invalid"]}
        )
    provider = _provider(new_provider)
    contracts = Contract.objects.filter(device=device, status=ContractStatus.ACTIVE).select_related(
        "provider"
    )
    if service is not None:
        contracts = contracts.filter(service=service)
    old = contracts.order_by("-starts_at").first()
    if old is None:
        raise SwitchRequestInvalid(
            "There is no contract in force for this service on this device.",
            fields={"service": ["no_contract"]},
        )
    if initiator == Initiator.SUBSCRIBER and not old.switch_allowed:
        raise SwitchNotAllowed(
            f"Your contract with {old.provider.name} for {old.service} does not allow switching provider."
        )
    if old.provider_id == provider.pk:
        raise SwitchRequestInvalid(
            f"{provider.name} already provides {old.service} on this device.",
            fields={"new_provider": ["same"]},
        )
    from jobs.services import AID_RE

    aid = new_sd_aid if new_sd_aid is not None else _default_sd_aid(provider, old)
    if not isinstance(aid, str) or not AID_RE.match(aid.upper()):
        raise SwitchRequestInvalid(
            "new_sd_aid must be an AID of 5–16 bytes in hex.", fields={"new_sd_aid": ["invalid"]}
        )
    aid = aid.upper()
    if SecurityDomain.objects.filter(secure_element=se, aid=aid).exists():
        raise SwitchRequestInvalid(
            f"A security domain {aid} already exists on this device.", fields={"new_sd_aid": ["exists"]}
        )
    old_sds = SecurityDomain.objects.filter(secure_element=se, owner_id=old.provider_id, is_isd=False)
    if old.sd_aid:
        old_sds = old_sds.filter(aid=old.sd_aid)
    app_params = clean_app(app)
    now = timezone.now()
    try:
        with transaction.atomic():
            new = Contract.objects.create(
                subscriber_id=old.subscriber_id,
                provider=provider,
                device=device,
                service=old.service,
                switch_allowed=old.switch_allowed,
                notice_days=old.notice_days,
                connectivity_payer_id=old.connectivity_payer_id,
                on_consent_end=old.on_consent_end,
                consent_required=old.consent_required,
                sd_aid=aid,
                status=ContractStatus.PENDING,
                starts_at=now,
            )
            switch = Switch.objects.create(
                device=device,
                subscriber_id=device.subscriber_id,
                issuer_id=se.issuer_id,
                old_provider_id=old.provider_id,
                new_provider=provider,
                old_contract=old,
                new_contract=new,
                initiator=initiator,
                requested_by=actor.org,
                campaign_id=campaign_id,
                keys_mode=keys_mode,
                new_sd_aid=aid,
                old_sd_aids=sorted(old_sds.values_list("aid", flat=True)),
                app=app_params,
                state=SwitchState.RUNNING,
                step="create_sd",
            )
            if initiator == Initiator.ISSUER and new.consent_required and device.subscriber_id:
                # The subscriber decides: the new provider's request for its SD is put to it now
                # (its work waits in awaiting_consent; a denial rolls the switch back).
                from tenants.consent import consent_request

                consent_request(
                    actor=_new_provider_side(switch),
                    device=device,
                    purpose=old.service,
                    scopes=["own_security_domain"],
                    duration_days=None,
                    sd_aid=aid,
                )
            if initiator == Initiator.SUBSCRIBER and new.consent_required:
                # Choosing the new provider is the subscriber's consent to its security domain.
                Consent.objects.create(
                    subscriber_id=device.subscriber_id,
                    grantee=provider,
                    device=device,
                    purpose=old.service,
                    scopes=["own_security_domain"],
                    sd_aid=aid,
                    status=ConsentStatus.GRANTED,
                    decided_at=now,
                    granted_at=now,
                )
            _audit(
                switch,
                actor,
                AuditTag.SWITCH_REQUEST,
                new_provider=provider.slug,
                service=old.service,
                initiator=initiator,
                keys_mode=keys_mode,
            )
            publish(audience(switch), _event(switch, "requested"))
            _start_step(switch, "create_sd")
    except IntegrityError:
        raise SwitchConflict(
            "A provider switch is already running for this device; wait for it to finish.",
            code="switch_running",
        ) from None
    return switch


def _default_sd_aid(provider: Organisation, contract: Contract) -> str:
    """A provider's SD AID when none is given: the RID of the demo range plus the provider's name."""
    tail = provider.slug.upper().encode()[:7].hex().upper()
    return "A000000151" + "5350" + tail


# --- running ----------------------------------------------------------------------------------


def _no_show_seconds() -> int:
    return int(settings.TESSERA_SWITCH_STEP_NO_SHOW_SECONDS)


def _start_step(switch: Switch, step: str, *, attempt: int = 1) -> None:
    """Enter ``step``: request its job (or wait for the provider's keys, or finish). Inside the
    caller's transaction, with the switch row locked."""
    from jobs.services import job_request

    switch.step = step
    switch.step_attempt = attempt
    switch.current_job = None
    switch.updated_at = timezone.now()
    if step == FINISH:
        _finish(switch)
        return
    if step == DONE:
        _rolled_back(switch)
        return
    if step == "load_keys" and switch.keys_mode == KeysMode.CONFIDENTIAL:
        switch.state = SwitchState.AWAITING_KEYS
        switch.keys_deadline = timezone.now() + timedelta(seconds=int(settings.TESSERA_SWITCH_KEYS_SECONDS))
        switch.save()
        _audit(switch, None, AuditTag.SWITCH_STEP, awaiting="the new provider's key-loading package")
        publish(audience(switch), _event(switch, "awaiting_keys", sd=switch.new_sd_aid))
        return
    if step.startswith("delete_old:"):
        aid = switch.old_sd_aids[int(step.partition(":")[2])]
        if not SecurityDomain.objects.filter(secure_element__device=switch.device, aid=aid).exists():
            _log(switch, step, None, "skipped", "already gone")
            _start_step(switch, _next_forward(switch, step))
            return
    if (
        step == COMPENSATE
        and not SecurityDomain.objects.filter(
            secure_element__device=switch.device, aid=switch.new_sd_aid
        ).exists()
    ):
        _log(switch, step, None, "skipped", "nothing of the new provider on the card")
        _start_step(switch, DONE)
        return
    spec = _job_for_step(switch, step)
    assert spec is not None
    actor, kind, params = spec
    try:
        with transaction.atomic():
            job = job_request(
                actor=actor,
                device=switch.device,
                kind=kind,
                params=params,
                no_show_seconds=_no_show_seconds(),
            )
    except DomainError as e:
        _step_failed(switch, f"{step}: {e}"[:500], getattr(e, "code", "job_refused"), job=None)
        return
    switch.current_job = job
    switch.save()
    _audit(switch, None, AuditTag.SWITCH_STEP, job=str(job.pk), kind=kind, attempt=attempt)
    publish(audience(switch), _event(switch, "step", job=str(job.pk)))


def _log(switch: Switch, step: str, job: Job | None, outcome: str, detail: str = "") -> None:
    switch.log = [
        *switch.log,
        {
            "step": step,
            "job": str(job.pk) if job else None,
            "outcome": outcome,
            **({"detail": detail[:200]} if detail else {}),
            "at": timezone.now().isoformat(),
        },
    ]


def _next_forward(switch: Switch, step: str) -> str:
    steps = forward_steps(switch)
    return steps[steps.index(step) + 1]


def _compensating(switch: Switch) -> bool:
    return switch.state == SwitchState.COMPENSATING


def _old_sd_already_deleted(switch: Switch) -> bool:
    return any(
        e["step"].startswith("delete_old:") and e["outcome"] in ("succeeded", "skipped") for e in switch.log
    )


def _step_failed(switch: Switch, reason: str, code: str, *, job: Job | None) -> None:
    """A step failed: compensate (before the break), retry it forward (after an old SD is gone),
    retry the compensation (while compensating), or give up to ``failed``."""
    step = switch.step
    _log(switch, step, job, "failed", reason)
    switch.error_code = code[:64]
    switch.error_message = reason[:500]
    if _compensating(switch) or _old_sd_already_deleted(switch):
        if switch.step_attempt < MAX_STEP_ATTEMPTS:
            switch.save()
            _start_step(switch, step, attempt=switch.step_attempt + 1)
            return
        switch.state = SwitchState.FAILED
        switch.finished_at = timezone.now()
        switch.save()
        _audit(switch, None, AuditTag.SWITCH_STATE, error=code, reason=reason[:200])
        publish(audience(switch), _event(switch, "failed", error=code))
        _notify_finished(switch)
        return
    switch.state = SwitchState.COMPENSATING
    switch.save()
    _audit(switch, None, AuditTag.SWITCH_STATE, error=code, reason=reason[:200], compensating=True)
    publish(audience(switch), _event(switch, "compensating", error=code))
    # The card is the truth: a step that failed half-way (an SD installed, its keys refused) left
    # something the database does not know. Read the registry over the ISD first (it records what it
    # finds), then delete what of the new provider is there.
    _start_step(switch, INSPECT)


def _verified(switch: Switch) -> str:
    """Empty when the card's registry (as the verify step's GET STATUS recorded it) shows the new
    SD with the new provider's keys and application; else what is missing."""
    from keys.models import KeySet

    sd = SecurityDomain.objects.filter(secure_element__device=switch.device, aid=switch.new_sd_aid).first()
    if sd is None or sd.owner_id != switch.new_provider_id:
        return "the new security domain is not on the card"
    active = KeySet.objects.filter(security_domain=sd, status="active")
    if not active.exists():
        return "the new security domain has no active key set"
    if switch.keys_mode == KeysMode.CONFIDENTIAL and active.filter(custody="portal").exists():
        return (
            "Tessera still holds a usable key set of the new security domain: the provider's package "
            "must replace its first key set (its KVN)"
        )
    if switch.app.get("instance_aid"):
        app = Application.objects.filter(
            secure_element=sd.secure_element, aid=switch.app["instance_aid"], security_domain=sd
        ).first()
        if app is None or app.life_cycle in ("LOCKED", "INSTALLED"):
            return "the new provider's application is not installed and selectable"
    return ""


def switch_advance(switch_id: Any) -> Switch | None:
    """Take the next step of the switch if its current one has ended. Idempotent."""
    with transaction.atomic():
        switch = (
            Switch.objects.select_for_update(of=("self",))
            .select_related("device", "new_provider", "issuer", "new_contract", "old_contract")
            .filter(pk=switch_id)
            .first()
        )
        if switch is None or switch.state not in (SwitchState.RUNNING, SwitchState.COMPENSATING):
            return switch
        job = Job.objects.filter(pk=switch.current_job_id).first() if switch.current_job_id else None
        if job is None:
            # A crash between two steps (or a refused job waiting to be retried): enter it again.
            _start_step(switch, switch.step, attempt=switch.step_attempt)
            return switch
        if job.state not in TERMINAL_STATES:
            return switch
        _after_job(switch, job)
        return switch


def _after_job(switch: Switch, job: Job) -> None:
    step = switch.step
    if job.state != JobState.SUCCEEDED:
        _step_failed(
            switch,
            f"{step}: the job ended {job.state}" + (f" ({job.error_message})" if job.error_message else ""),
            job.error_code or job.state,
            job=job,
        )
        return
    if step == "verify":
        missing = _verified(switch)
        if missing:
            _step_failed(switch, f"verify: {missing}", "verify_mismatch", job=job)
            return
    _log(switch, step, job, "succeeded")
    if step == INSPECT:
        _start_step(switch, COMPENSATE)
        return
    if step == COMPENSATE:
        _start_step(switch, DONE)
        return
    _start_step(switch, _next_forward(switch, step))


def switch_keys_loaded(switch: Switch, job: Job) -> None:
    """The new provider's own confidential key load (its tooling's job on the new SD) ended."""
    with transaction.atomic():
        locked = (
            Switch.objects.select_for_update(of=("self",))
            .select_related("device", "new_provider", "issuer", "new_contract")
            .get(pk=switch.pk)
        )
        if locked.state != SwitchState.AWAITING_KEYS:
            return
        locked.state = SwitchState.RUNNING
        locked.current_job = job
        locked.keys_deadline = None
        _after_job(locked, job)


def _finish(switch: Switch) -> None:
    """Break: the old contract ends and the new one starts, in one transaction."""
    now = timezone.now()
    old, new = switch.old_contract, switch.new_contract
    Contract.objects.filter(pk=old.pk).update(status=ContractStatus.ENDED, ends_at=now, end_reason="switched")
    Contract.objects.filter(pk=new.pk).update(status=ContractStatus.ACTIVE, starts_at=now)
    # The old provider's consents on this device have nothing left to cover.
    Consent.objects.filter(
        Consent.active_q(), device=switch.device, grantee_id=switch.old_provider_id
    ).update(status=ConsentStatus.REVOKED, revoked_at=now)
    switch.state = SwitchState.COMPLETED
    switch.finished_at = now
    switch.error_code = ""
    switch.error_message = ""
    _log(switch, FINISH, None, "succeeded")
    switch.save()
    _audit(switch, None, AuditTag.SWITCH_STATE, completed=True)
    publish(audience(switch), _event(switch, "completed"))
    # The old provider learns that it lost the device — not to whom.
    audit_record(
        actor=None,
        tag=AuditTag.CONTRACT_END,
        target=old,
        details={"device": switch.device.serial, "service": old.service, "reason": "switched"},
        concerns=[o for o in (old.provider_id, old.subscriber_id, switch.issuer_id) if o],
    )
    publish(
        [old.provider_id],
        {
            "kind": "switch",
            "event": "lost",
            "device": switch.device.serial,
            "service": old.service,
            "contract": str(old.pk),
        },
    )
    _notify_finished(switch)


def _rolled_back(switch: Switch) -> None:
    now = timezone.now()
    Contract.objects.filter(pk=switch.new_contract_id).update(
        status=ContractStatus.CANCELED, ends_at=now, end_reason="switch_rolled_back"
    )
    Consent.objects.filter(
        Consent.active_q(), device=switch.device, grantee_id=switch.new_provider_id, sd_aid=switch.new_sd_aid
    ).update(status=ConsentStatus.REVOKED, revoked_at=now)
    switch.state = SwitchState.ROLLED_BACK
    switch.finished_at = now
    switch.save()
    _audit(switch, None, AuditTag.SWITCH_STATE, rolled_back=True, error=switch.error_code)
    publish(audience(switch), _event(switch, "rolled_back", error=switch.error_code))
    _notify_finished(switch)


def _notify_finished(switch: Switch) -> None:
    from switches.hooks import switch_finished

    switch_id, state = switch.pk, switch.state
    transaction.on_commit(lambda: switch_finished(switch_id, state))


# --- hooks from the jobs app, and the sweeper -------------------------------------------------


def switch_for_finished_job(job_id: Any) -> tuple[Switch, bool] | None:
    """The switch a finished job belongs to: (switch, is_the_providers_key_load), or None."""
    switch = Switch.objects.filter(current_job_id=job_id, state__in=ACTIVE_SWITCH_STATES).first()
    if switch is not None:
        return switch, False
    job = Job.objects.filter(pk=job_id).only("device_id", "kind", "target_aid", "beneficiary_id").first()
    if job is None or job.kind not in (JobKind.LOAD_KEYS_CONFIDENTIAL, JobKind.LOAD_KEYS_SCP11):
        return None
    switch = Switch.objects.filter(
        state=SwitchState.AWAITING_KEYS,
        device_id=job.device_id,
        new_sd_aid=job.target_aid,
        new_provider_id=job.beneficiary_id,
    ).first()
    return (switch, True) if switch is not None else None


def on_job_finished(job_id: Any, switch_id: Any, is_key_load: bool) -> None:
    """Advance ``switch_id`` after its job ``job_id`` ended (the hook found the pair)."""
    if is_key_load:
        switch = Switch.objects.filter(pk=switch_id).first()
        if switch is not None:
            switch_keys_loaded(switch, Job.objects.get(pk=job_id))
    else:
        switch_advance(switch_id)


def switch_sweep(now: Any = None) -> dict[str, int]:
    """Recover what a lost hook or a crash left: switches whose current job ended (or that have
    none) a while ago are advanced; a new provider that never sent its keys gets compensated."""
    now = now or timezone.now()
    counts = {"advanced": 0, "keys_timeout": 0}
    stale = now - timedelta(seconds=int(settings.TESSERA_SWITCH_SWEEP_AFTER_SECONDS))
    idle = Switch.objects.filter(
        Q(current_job__isnull=True) | Q(current_job__state__in=TERMINAL_STATES),
        state__in=[SwitchState.RUNNING, SwitchState.COMPENSATING],
        updated_at__lt=stale,
    )
    for switch_id in idle.values_list("pk", flat=True):
        switch_advance(switch_id)
        counts["advanced"] += 1
    for switch in Switch.objects.filter(state=SwitchState.AWAITING_KEYS, keys_deadline__lt=now):
        with transaction.atomic():
            locked = (
                Switch.objects.select_for_update(of=("self",))
                .select_related("device", "new_provider", "issuer", "new_contract")
                .get(pk=switch.pk)
            )
            if locked.state != SwitchState.AWAITING_KEYS:
                continue
            _step_failed(
                locked,
                "load_keys: the new provider sent no key-loading package in time",
                "keys_timeout",
                job=None,
            )
            counts["keys_timeout"] += 1
    return counts
