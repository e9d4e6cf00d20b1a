"""Writes of the jobs app: requesting, canceling, and moving jobs through their states.

Every state change is a compare-and-set (``UPDATE … WHERE state IN (…)``) with its audit event in
the same transaction and a live event to every organisation that may see the job, sent on commit.
The engine (``jobs.engine``) compiles and interprets steps; the exchange (``jobs.exchange``)
hands steps to agents and records their results.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.models import AuditTag
from audit.services import audit_record
from devices.models import Device, SecurityDomain
from jobs import confidential
from jobs.compiler import demo_app as _demo
from jobs.errors import InvalidJobRequest, JobConflict, JobNotAllowed
from jobs.models import ACTIVE_STATES, TERMINAL_STATES, Job, JobKind, JobState, ScriptMode
from keys import selectors as key_selectors
from keys.vault import vault_seal
from portal.events import publish
from tenants.access import Action, Actor, require
from tenants.models import Mandate, MandateAction, Organisation, OrgStatus

MANDATE_FOR_KIND: dict[str, str] = {
    JobKind.CREATE_SECURITY_DOMAIN: MandateAction.SD_CREATE,
    JobKind.DELETE_SECURITY_DOMAIN: MandateAction.SD_DELETE,
    JobKind.ROTATE_KEYS: MandateAction.KEYS_ROTATE,
    JobKind.INSTALL_APPLICATION: MandateAction.APPS_MANAGE,
    JobKind.PERSONALIZE_APPLICATION: MandateAction.APPS_MANAGE,
    JobKind.DELETE_APPLICATION: MandateAction.APPS_MANAGE,
    JobKind.LOCK: MandateAction.SD_LOCK,
    JobKind.UNLOCK: MandateAction.SD_LOCK,
    JobKind.READ_STATUS: MandateAction.STATUS_READ,
    JobKind.CASD_PERSONALIZE: MandateAction.KEYS_LOAD,
    JobKind.LOAD_KEYS_CONFIDENTIAL: MandateAction.KEYS_LOAD,
    JobKind.RUN_SCRIPT: MandateAction.APPS_MANAGE,
    JobKind.LOAD_KEYS_SCP11: MandateAction.KEYS_LOAD,
}

ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    JobState.AWAITING_CONSENT: frozenset(
        {JobState.QUEUED, JobState.REJECTED, JobState.EXPIRED, JobState.CANCELED}
    ),
    # rejected: the consent gate (jobs.consent_gate) found the subscriber's consent gone.
    JobState.QUEUED: frozenset(
        {
            JobState.DISPATCHED,
            JobState.CANCELED,
            JobState.TIMED_OUT,
            JobState.EXPIRED,
            JobState.FAILED,
            JobState.REJECTED,
        }
    ),
    JobState.DISPATCHED: frozenset(
        {
            JobState.AWAITING_INPUT,
            JobState.RUNNING,
            JobState.QUEUED,
            JobState.FAILED,
            JobState.TIMED_OUT,
            JobState.CANCELED,
            JobState.SUCCEEDED,
            JobState.REJECTED,
        }
    ),
    JobState.RUNNING: frozenset(
        {
            JobState.DISPATCHED,
            JobState.QUEUED,
            JobState.SUCCEEDED,
            JobState.FAILED,
            JobState.TIMED_OUT,
            JobState.CANCELED,
            JobState.REJECTED,
            JobState.AWAITING_INPUT,
        }
    ),
    # load_keys_scp11 between its rounds: the provider's input, its timeout, a cancel.
    JobState.AWAITING_INPUT: frozenset(
        {JobState.QUEUED, JobState.FAILED, JobState.TIMED_OUT, JobState.CANCELED}
    ),
}
for _terminal in TERMINAL_STATES:
    ALLOWED_TRANSITIONS[_terminal] = frozenset()

AID_RE = re.compile(r"^(?:[0-9A-F]{2}){5,16}$")
PRIVILEGE_NAMES = {
    "security_domain",
    "dap_verification",
    "delegated_management",
    "card_lock",
    "card_terminate",
    "card_reset",
    "cvm_management",
    "mandated_dap",
    "trusted_path",
    "authorized_management",
    "token_verification",
    "global_delete",
    "global_lock",
    "global_registry",
    "final_application",
    "global_service",
    "receipt_generation",
    "ciphered_load_file_data_block",
}
CARD_WIDE_PRIVILEGES = {
    "card_lock",
    "card_terminate",
    "card_reset",
    "cvm_management",
    "global_delete",
    "global_lock",
    "global_registry",
    "trusted_path",
    "global_service",
}


def job_event(job: Job, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "job",
        "job": str(job.id),
        "job_kind": job.kind,
        "state": job.state,
        "device": str(job.device_id),
        "step": job.step_index,
        **extra,
    }


def job_audience(job: Job) -> set[Any]:
    """Organisations that may see this job (mirrors ``jobs.access``) — for live events."""
    se = job.secure_element
    orgs = {
        job.requested_by_id,
        job.on_behalf_of_id,
        job.beneficiary_id,
        se.issuer_id,
        job.device.subscriber_id,
    }
    return {o for o in orgs if o}


# --- requesting -----------------------------------------------------------------------------


def _aid(value: Any, field: str) -> str:
    if not isinstance(value, str) or not AID_RE.match(value.upper()):
        raise InvalidJobRequest(f"{field} must be an AID of 5–16 bytes in hex.", fields={field: ["invalid"]})
    return value.upper()


def _has_mandate(grantor: Organisation, grantee: Organisation, action: str) -> bool:
    mandates = Mandate.objects.filter(Mandate.active_q(), grantor=grantor, grantee=grantee).only("actions")
    return any(action in m.actions for m in mandates)


def _sd_by_aid(device: Device, aid: str) -> SecurityDomain:
    sd = (
        SecurityDomain.objects.select_related("secure_element", "owner")
        .filter(secure_element__device=device, aid=aid)
        .first()
    )
    if sd is None:
        raise InvalidJobRequest(
            f"No security domain {aid} is recorded on this device.", fields={"aid": ["unknown"]}
        )
    return sd


def _check_actor_may(
    actor: Actor, kind: str, *, on: Organisation, beneficiary: Organisation | None = None
) -> None:
    """The card's rules plus mandates: ``on`` is the organisation whose keys open the session
    (the SE issuer for ISD work, the SD owner for its own SD)."""
    subject = actor.subject
    needed = MANDATE_FOR_KIND[kind]
    if actor.mandate is not None and needed not in actor.mandate.actions:
        raise JobNotAllowed(f"Your mandate from {subject.slug} does not include '{needed}'.")
    if subject.pk != on.pk:
        raise JobNotAllowed(f"Only {on.name} (or a TSM it mandated) may do this: the session uses its keys.")
    # A TSM creating or changing an SD that belongs to a third party needs that party's mandate too.
    if (
        actor.mandate is not None
        and beneficiary is not None
        and beneficiary.pk not in (subject.pk, actor.org.pk)
    ):
        if not _has_mandate(beneficiary, actor.org, needed):
            raise JobNotAllowed(f"{beneficiary.name} has not mandated {actor.org.name} to '{needed}' for it.")


def job_request(
    *,
    actor: Actor,
    device: Device,
    kind: str,
    params: dict[str, Any] | None = None,
    mode: str | None = None,
    no_show_seconds: int | None = None,
) -> Job:
    """Ask for one change on ``device``'s secure element.

    Preconditions: the actor sees the device (caller resolved it through ``visible_to``); the kind's
    rules hold (who may open which session, mandates from the SE issuer and the SD's owner).
    ``no_show_seconds`` lengthens the no-show (and overall) deadline for orchestrations that wait
    for a sleeping device (a provider switch resumes when the device wakes days later).
    Effects: a ``queued`` job with its deadlines, a ``job:request`` audit event, and — on commit —
    the engine is asked to compile its first step.
    """
    require(actor, Action.JOBS_REQUEST)
    params = dict(params or {})
    if kind not in JobKind.values:
        raise InvalidJobRequest(
            f"kind must be one of {', '.join(JobKind.values)}.", fields={"kind": ["invalid"]}
        )
    if mode is not None and mode not in ScriptMode.values:
        raise InvalidJobRequest(
            f"mode must be one of {', '.join(ScriptMode.values)}.", fields={"mode": ["invalid"]}
        )
    if device.status != "active":
        raise JobConflict("This device is suspended or retired; no job can run on it.")
    se = device.secure_elements.select_related("issuer").first()
    if se is None:
        raise InvalidJobRequest("This device has no registered secure element.")
    isd = SecurityDomain.objects.filter(secure_element=se, is_isd=True).first()
    if isd is None:
        raise InvalidJobRequest("The secure element has no Issuer Security Domain recorded.")
    if se.kind == "tee" and kind not in ("create_security_domain", "delete_security_domain", "rotate_keys",
                                         "load_keys_confidential", "read_status"):  # fmt: skip
        raise InvalidJobRequest(
            f"{kind} does not apply to a TEE: its security domains hold keys in a token, no applications "
            "or APDU scripts (docs/tee-bridge.md §8).",
            fields={"kind": ["not_for_tee"]},
        )
    target_sd: SecurityDomain | None = None
    beneficiary: Organisation | None = None
    clean: dict[str, Any] = {}
    sealed_package: bytes | None = None

    if kind == JobKind.CREATE_SECURITY_DOMAIN:
        clean["aid"] = _aid(params.get("aid"), "aid")
        owner_slug = params.get("owner")
        beneficiary = (
            Organisation.objects.filter(slug=owner_slug, status=OrgStatus.ACTIVE).first()
            if isinstance(owner_slug, str)
            else None
        )
        if beneficiary is None:
            raise InvalidJobRequest(
                "owner must name an active organisation (its short name).", fields={"owner": ["invalid"]}
            )
        privileges = params.get("privileges", ["security_domain", "authorized_management"])
        if (
            not isinstance(privileges, list)
            or not set(privileges) <= PRIVILEGE_NAMES
            or "security_domain" not in privileges
        ):
            raise InvalidJobRequest(
                "privileges must be a list of privilege names including security_domain.",
                fields={"privileges": ["invalid"]},
            )
        if set(privileges) & CARD_WIDE_PRIVILEGES:
            raise InvalidJobRequest(
                "Card-wide privileges stay with the Issuer Security Domain.",
                fields={"privileges": ["invalid"]},
            )
        clean["privileges"] = sorted(set(privileges))
        clean["key_length"] = _key_length(params.get("key_length", 16))
        clean["kvn"] = _kvn(params.get("kvn", 0x30))
        if SecurityDomain.objects.filter(secure_element=se, aid=clean["aid"]).exists():
            raise JobConflict(f"A security domain {clean['aid']} already exists on this device.")
        _check_actor_may(actor, kind, on=se.issuer, beneficiary=beneficiary)
        target_aid = clean["aid"]
        target_sd = isd
    elif kind in (JobKind.DELETE_SECURITY_DOMAIN, JobKind.LOCK, JobKind.UNLOCK):
        target_aid = _aid(params.get("aid"), "aid")
        sd = SecurityDomain.objects.filter(secure_element=se, aid=target_aid).first()
        if sd is not None and sd.is_isd:
            raise InvalidJobRequest("The Issuer Security Domain cannot be deleted or locked by a job.")
        if sd is None and kind == JobKind.DELETE_SECURITY_DOMAIN:
            raise InvalidJobRequest(f"No security domain {target_aid} is recorded on this device.")
        beneficiary = sd.owner if sd else None
        _check_actor_may(actor, kind, on=se.issuer, beneficiary=beneficiary)
        clean["aid"] = target_aid
        target_sd = sd
    elif kind == JobKind.ROTATE_KEYS:
        sd = _sd_by_aid(device, _aid(params.get("sd", isd.aid), "sd"))
        clean["sd"] = sd.aid
        beneficiary = sd.owner
        _check_actor_may(actor, kind, on=sd.owner, beneficiary=sd.owner)
        clean["key_length"] = _rotation_key_length(sd, params.get("key_length"))
        target_aid = sd.aid
        target_sd = sd
    elif kind in (JobKind.INSTALL_APPLICATION, JobKind.PERSONALIZE_APPLICATION, JobKind.DELETE_APPLICATION):
        sd = _sd_by_aid(device, _aid(params.get("sd", isd.aid), "sd"))
        clean["sd"] = sd.aid
        clean["instance_aid"] = _aid(params.get("instance_aid"), "instance_aid")
        if kind == JobKind.INSTALL_APPLICATION:
            clean["load_file_aid"] = _aid(params.get("load_file_aid", DEMO_LOAD_FILE_AID), "load_file_aid")
            clean["module_aid"] = _aid(params.get("module_aid", DEMO_MODULE_AID), "module_aid")
            clean["load"] = bool(params.get("load", clean["load_file_aid"] == DEMO_LOAD_FILE_AID))
        if kind == JobKind.PERSONALIZE_APPLICATION:
            clean["data"] = _personalisation(params.get("data"))
        beneficiary = sd.owner
        _check_actor_may(actor, kind, on=sd.owner, beneficiary=sd.owner)
        target_aid = clean["instance_aid"]
        target_sd = sd
    elif kind == JobKind.CASD_PERSONALIZE:
        # The SE issuer's ISD session carries public data: the CA key, the SE's certificate.
        _check_actor_may(actor, kind, on=se.issuer, beneficiary=se.issuer)
        clean = confidential.clean_casd_personalize(se, params)
        beneficiary = se.issuer
        target_aid = isd.aid
        target_sd = isd
    elif kind in (JobKind.LOAD_KEYS_CONFIDENTIAL, JobKind.RUN_SCRIPT, JobKind.LOAD_KEYS_SCP11):
        # The SD's owner (or its mandated TSM) asks; for a package the SE issuer's ISD session
        # relays it, for a script nobody's session but the provider's own runs.
        sd = _sd_by_aid(device, _aid(params.get("sd"), "sd"))
        if sd.is_isd:
            raise InvalidJobRequest(
                "This job kind is for a provider's security domain, never the Issuer Security Domain.",
                fields={"sd": ["isd"]},
            )
        _check_actor_may(actor, kind, on=sd.owner, beneficiary=sd.owner)
        if kind == JobKind.LOAD_KEYS_CONFIDENTIAL and se.kind == "tee":
            from jobs import tee  # the provider's envelope for the token (docs/tee-bridge.md §8)

            clean, sealed_package = tee.clean_load_keys(se, sd, params)
        elif kind == JobKind.LOAD_KEYS_CONFIDENTIAL:
            clean, sealed_package = confidential.clean_load_keys(se, sd, params)
        elif kind == JobKind.LOAD_KEYS_SCP11:
            clean = confidential.clean_load_keys_scp11(se, sd, params)
            mode = ScriptMode.INTERACTIVE  # two rounds on one card session: an online device
        else:
            clean = {"sd": sd.aid, "commands": confidential.clean_run_script(params)}
        beneficiary = sd.owner
        target_aid = sd.aid
        target_sd = sd
    else:  # read_status
        sd = _sd_by_aid(device, _aid(params.get("sd", isd.aid), "sd"))
        clean["sd"] = sd.aid
        _check_actor_may(actor, kind, on=sd.owner, beneficiary=sd.owner)
        beneficiary = sd.owner
        target_aid = sd.aid
        target_sd = sd

    no_show = no_show_seconds if isinstance(no_show_seconds, int) and no_show_seconds > 0 else None
    now = timezone.now()
    waits = _awaits_consent(device, se, kind, beneficiary, clean, target_aid)
    with transaction.atomic():
        if Job.objects.filter(secure_element=se, state__in=ACTIVE_STATES, target_aid=target_aid).exists():
            raise JobConflict(
                "Another job on this security domain or application is still running; wait for it or cancel it."
            )
        job = Job.objects.create(
            kind=kind,
            state=JobState.AWAITING_CONSENT if waits else JobState.QUEUED,
            device=device,
            secure_element=se,
            target_sd=target_sd,
            target_aid=target_aid,
            requested_by=actor.org,
            on_behalf_of=actor.on_behalf_of,
            beneficiary=beneficiary,
            requested_by_user=actor.user if getattr(actor.user, "is_authenticated", False) else None,
            mode=mode or ScriptMode.PRECOMPUTED,
            params=clean,
            no_show_deadline=now + timedelta(seconds=no_show or settings.TESSERA_JOB_NO_SHOW_SECONDS),
            overall_deadline=now
            + timedelta(seconds=max(no_show or 0, settings.TESSERA_JOB_OVERALL_SECONDS)),
        )
        if sealed_package is not None:
            # Not secret (the keys inside are encrypted to the SE), but kept out of params and
            # logs: sealed with the job until the card has it (jobs.effects drops it then).
            job.secrets_sealed = vault_seal(
                org_id=job.beneficiary_id,
                purpose=f"job:{job.id}",
                plaintext=json.dumps({"package": sealed_package.hex()}).encode(),
            )
            job.save(update_fields=["secrets_sealed"])
        audit_record(
            actor=actor,
            tag=AuditTag.JOB_REQUEST,
            target=job,
            details={"kind": kind, "device": device.serial, "target": target_aid, "mode": job.mode},
            concerns=job_audience(job),
        )
        publish(job_audience(job), job_event(job))
        if not waits:
            from jobs.tasks import enqueue_advance

            enqueue_advance(job.id)
    return job


def _awaits_consent(
    device: Device,
    se: Any,
    kind: str,
    beneficiary: Organisation | None,
    clean: dict[str, Any],
    target_aid: str,
) -> bool:
    """A provider's work on a subscriber's device without the subscriber's active consent waits in
    ``awaiting_consent`` (``jobs.consent_gate``; the consent services release or reject it)."""
    from jobs import consent_gate as gate
    from tenants.models import Consent

    if not gate.consent_needed(
        kind=kind,
        subscriber_id=device.subscriber_id,
        beneficiary_id=beneficiary.pk if beneficiary else None,
        issuer_id=se.issuer_id,
    ):
        return False
    if gate.contract_waives_consent(device_id=device.pk, provider_id=beneficiary.pk if beneficiary else None):
        return False
    return not Consent.objects.filter(
        gate.covering_q(
            device_id=device.pk,
            subscriber_id=device.subscriber_id,
            grantee_id=beneficiary.pk if beneficiary else None,
            kind=kind,
            sd_aid=gate.job_sd_aid(kind, clean, target_aid),
            app_aid=str(clean.get("instance_aid", target_aid)),
        )
    ).exists()


DEMO_LOAD_FILE_AID = bytes(_demo.DEMO_LOAD_FILE_AID).hex().upper()
DEMO_MODULE_AID = bytes(_demo.DEMO_MODULE_AID).hex().upper()


def _key_length(value: Any) -> int:
    if value not in (16, 24, 32):
        raise InvalidJobRequest(
            "key_length must be 16, 24 or 32 (AES-128/192/256).", fields={"key_length": ["invalid"]}
        )
    return int(value)


def _rotation_key_length(sd: SecurityDomain, value: Any) -> int:
    """A rotation keeps the current key length (``None``) or moves to a longer one; never shorter."""
    current = key_selectors.active_keyset(sd)
    current_length = current.key_length if current is not None else 16
    if value is None:
        return current_length
    length = _key_length(value)
    if length < current_length:
        raise InvalidJobRequest(
            f"key_length {length} (AES-{8 * length}) is shorter than the current key set's "
            f"{current_length} (AES-{8 * current_length}); a rotation never moves to a weaker key.",
            fields={"key_length": ["downgrade"]},
        )
    return length


def _kvn(value: Any) -> int:
    if not isinstance(value, int) or not 1 <= value <= 0x7F:
        raise InvalidJobRequest("kvn must be an integer from 1 to 127.", fields={"kvn": ["invalid"]})
    return value


def _personalisation(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not 0 < len(value) <= 64:
        raise InvalidJobRequest(
            "data must be a list of 1–64 {dgi, value} items.", fields={"data": ["invalid"]}
        )
    out = []
    for item in value:
        if not isinstance(item, dict) or set(item) != {"dgi", "value"}:
            raise InvalidJobRequest(
                'Each data item is {"dgi": 4 hex digits, "value": hex}.', fields={"data": ["invalid"]}
            )
        dgi, val = item["dgi"], item["value"]
        if not (isinstance(dgi, str) and re.fullmatch(r"[0-9A-Fa-f]{4}", dgi)):
            raise InvalidJobRequest("dgi must be 4 hex digits.", fields={"data": ["invalid"]})
        if not (isinstance(val, str) and re.fullmatch(r"(?:[0-9A-Fa-f]{2}){0,239}", val)):
            raise InvalidJobRequest("value must be hex, at most 239 bytes.", fields={"data": ["invalid"]})
        out.append({"dgi": dgi.upper(), "value": val.upper()})
    return out


# --- state changes --------------------------------------------------------------------------


def job_transition(
    *, job: Job, to: str, actor: Any = None, reason: str = "", error_code: str = "", **fields: Any
) -> bool:
    """Compare-and-set ``job`` into ``to`` from any state allowed to reach it. Returns False (and
    changes nothing) when another process moved the job first."""
    sources = [s for s, targets in ALLOWED_TRANSITIONS.items() if to in targets]
    now = timezone.now()
    values: dict[str, Any] = {"state": to, "updated_at": now, **fields}
    if to in TERMINAL_STATES:
        values["finished_at"] = now
    if error_code:
        values["error_code"] = error_code[:64]
        values["error_message"] = reason[:500]
    with transaction.atomic():
        old = job.state
        updated = Job.objects.filter(pk=job.pk, state__in=sources).update(**values)
        if not updated:
            return False
        job.refresh_from_db()
        if to in TERMINAL_STATES and job.kind == JobKind.LOAD_KEYS_SCP11:
            # The device's card session is free again: other jobs' steps held back may go now.
            transaction.on_commit(lambda: _release_device(job.device_id))
        if to in TERMINAL_STATES:
            # A step compiled but never handed out must not reach the card of an ended job.
            from jobs.hooks import job_finished
            from jobs.models import JobStep, StepState

            JobStep.objects.filter(job=job, state=StepState.READY).update(state=StepState.SUPERSEDED)
            job_id = job.pk
            transaction.on_commit(lambda: job_finished(job_id, to))
        audit_record(
            actor=actor,
            tag=AuditTag.JOB_STATE,
            target=job,
            details={
                "from": old,
                "to": to,
                **({"reason": reason[:300]} if reason else {}),
                **({"error": error_code} if error_code else {}),
            },
            concerns=job_audience(job),
        )
        publish(job_audience(job), job_event(job, reason=reason[:300]))
    return True


def _release_device(device_id: Any) -> None:
    from jobs.engine import mark_has_work

    mark_has_work(device_id)


def job_input(*, actor: Actor, job: Job, body: dict[str, Any]) -> Job:
    """Round 2 of ``load_keys_scp11``: the provider's wrapped INSTALL [for personalization] and
    key-set STORE DATA, for the card session round 1 opened.

    Preconditions: the actor sees the job and is its requester or beneficiary (else
    :class:`JobNotAllowed`); the job awaits input (else :class:`JobConflict` ``not_awaiting_input``);
    the commands address the job's SD and carry the declared key set (else 400, see
    :func:`jobs.confidential.clean_scp11_input`). Effects: the params gain the delivery and the
    declared KVN, length and KCVs; the job goes back to ``queued`` (audited) and its next step is
    compiled on commit."""
    require(actor, Action.JOBS_REQUEST)
    if actor.subject.pk not in (job.requested_by_id, job.on_behalf_of_id, job.beneficiary_id):
        raise JobNotAllowed("Only the requester or the beneficiary may answer this job.")
    if job.kind != JobKind.LOAD_KEYS_SCP11 or job.state != JobState.AWAITING_INPUT:
        raise JobConflict(f"This job is not awaiting input ({job.state}).", code="not_awaiting_input")
    added = confidential.clean_scp11_input(job, body)
    with transaction.atomic():
        locked = Job.objects.select_for_update().get(pk=job.pk)
        if locked.state != JobState.AWAITING_INPUT:
            raise JobConflict(f"This job is not awaiting input ({locked.state}).", code="not_awaiting_input")
        if not job_transition(
            job=locked,
            to=JobState.QUEUED,
            actor=actor,
            reason="the provider sent its key set (round 2)",
            params={**locked.params, **added},
            input_deadline=None,
        ):  # pragma: no cover - the row is locked
            raise JobConflict("This job changed meanwhile.", code="not_awaiting_input")
        from jobs.tasks import enqueue_advance

        enqueue_advance(locked.id)
    return locked


def job_cancel(*, actor: Actor, job: Job) -> Job:
    """Cancel a job that has not finished. A step already on its way to the device may still run:
    its result is recorded when it arrives and the card's state is then reconciled (the job stays
    canceled; nothing further is sent)."""
    require(actor, Action.JOBS_REQUEST)
    if (
        actor.subject.pk not in (job.requested_by_id, job.on_behalf_of_id, job.beneficiary_id)
        and actor.org.pk != job.requested_by_id
    ):
        raise JobNotAllowed("Only the requester or the beneficiary may cancel this job.")
    if job.is_terminal:
        raise JobConflict(f"This job already ended ({job.state}).")
    from jobs.models import JobStep, StepState

    with transaction.atomic():
        if not job_transition(
            job=job, to=JobState.CANCELED, actor=actor, reason="canceled by request", error_code="canceled"
        ):
            job.refresh_from_db()
            raise JobConflict(f"This job already ended ({job.state}).")
        JobStep.objects.filter(job=job, state=StepState.READY).update(state=StepState.SUPERSEDED)
    return job
