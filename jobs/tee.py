"""Jobs on a TEE-backed device: security domains in a PKCS#11 token (docs/tee-bridge.md §8).

A TEE (``SecureElement.kind == "tee"``) takes the same job kinds as an SE, compiled into token
operations (:mod:`agent.tokenops`) instead of APDUs. An SD on a TEE is the label namespace
``tessera/sd/<AID>/`` in the token; its key of version KVN is the AES key ``tessera/sd/<AID>/<KVN>``
(received by derivation, :mod:`gp.tokenwrap`, never extractable), recorded here as the SD's
``ServiceMasterKey`` of that KVN — the key the local API derives session keys from, so the
portal's session-keys API gives the same keys for a portal-held key.

==========================  ======================================================================
``create_security_domain``  ``receive_key``: a key the worker generates once (kept sealed in the
                            beneficiary's vault with the job) wrapped to the device's receive key
                            → SD recorded, its key in portal custody (vault copy), KCV checked
``load_keys_confidential``  ``receive_key`` of the provider's own envelope (Tessera relays it, never
                            sees the key), then ``delete_key`` of the SD's other versions → the
                            key recorded in provider custody with the KCV the token answered,
                            which must equal the one the provider declared
``rotate_keys``             ``receive_key`` (new KVN, portal-generated) then ``delete_key`` (old)
``delete_security_domain``  ``delete_sd`` → the SD and its keys forgotten
``read_status``             ``list`` → the records follow the token (:func:`reconcile_token`)
==========================  ======================================================================

Each job is one work item. Every operation is idempotent by outcome (a key already there is
``present``, a deleted one ``absent``), so an interrupted item (agent restarted, token away) is
simply sent again as a new attempt, bounded by ``max_attempts``; the records change only once the
token's answer is in.

Envelope authenticity (docs/tee-bridge.md §8.4): a portal-held key's envelope is made by the worker
and reaches the device only inside the authenticated exchange (TLS, the device's signed requests,
the portal's answer to them), exactly as an SE's SCP03-wrapped PUT KEY does. A confidential
envelope is the provider's: it must carry the provider's OCE signature with a chain that verifies
to the CA that certified the TEE's receive key (:func:`clean_load_keys`); its key confirmation tag
binds it to the device's receive key and to the label (SD, KVN), and the token keeps the key only
if its KCV is the one the provider declared.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agent import tokenops
from agent.protocol import KIND_TOKEN_OPS
from audit.models import AuditTag
from audit.services import audit_record
from devices.models import SDLifeCycle, SecureElement, SecureElementKind, SecurityDomain
from gp import tokenwrap
from jobs.errors import InvalidJobRequest
from jobs.models import Job, JobState, JobStep, StepState
from jobs.services import job_transition
from keys.models import KeyCustody, MasterKeyStatus, ServiceMasterKey
from keys.vault import vault_open, vault_seal

__all__ = [
    "TEE_KINDS",
    "TOKEN_MODE",
    "advance",
    "clean_load_keys",
    "interpret",
    "is_tee",
    "key_check_value",
    "receive_point",
    "reconcile_token",
]

TOKEN_MODE = "token"  # JobStep.session["mode"] of a TEE step
TEE_KINDS = frozenset(
    {
        "create_security_domain",
        "delete_security_domain",
        "rotate_keys",
        "load_keys_confidential",
        "read_status",
    }
)
_STEP_NAMES = {
    "create_security_domain": "receive_sd_key",
    "delete_security_domain": "delete_sd",
    "rotate_keys": "rotate_sd_key",
    "load_keys_confidential": "relay_envelope",
    "read_status": "list_keys",
}


def is_tee(se: SecureElement) -> bool:
    return se.kind == SecureElementKind.TEE


def key_check_value(key: bytes) -> str:
    """The KCV of a key held in a token (:func:`agent.tokenops.key_check_value`)."""
    return tokenops.key_check_value(key)


def receive_point(se: SecureElement) -> bytes:
    """The token's receive key (65-byte point), registered as the TEE's ``casd_public_key``."""
    der = bytes(se.casd_public_key or b"")
    if not der:
        raise tokenwrap.EnvelopeError("the TEE has no registered receive key (casd_public_key)")
    try:
        key = serialization.load_der_public_key(der)
    except ValueError:
        raise tokenwrap.EnvelopeError("the TEE's registered receive key is not a public key") from None
    return tokenwrap.point_bytes(key)  # type: ignore[arg-type]


# --- request rules (load_keys_confidential) -------------------------------------------------------


def clean_load_keys(se: SecureElement, sd: SecurityDomain, params: dict[str, Any]) -> tuple[dict, bytes]:
    """A provider's envelope for ``sd`` on the TEE ``se``: ``{sd, envelope, kcv, certificates, signature}``.

    The envelope (made by the provider's tooling with ``gp.tokenwrap.wrap_for_token`` to the TEE's
    registered receive key) must name ``tessera/sd/<AID>/<KVN>`` of this SD; ``kcv`` is the key's
    check value (:func:`key_check_value`, 6 hex digits); ``signature`` is the provider's OCE key's
    ECDSA signature (DER, hex) of :func:`agent.tokenops.envelope_signed_data` for this device, and
    ``certificates`` its OCE chain (hex, leaf last), which must verify to the CA that certified the
    TEE's receive key — the checks an SE's key-loading package gets (``oce_chain_invalid``,
    ``oce_certificate_unknown``, ``oce_certificate_revoked``; 409 ``no_casd_certificate``), plus
    ``envelope_signature_invalid``. Returns the job's params and the envelope bytes to keep sealed
    with the job (they are not secret, but stay out of params and logs).
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from gp import gpcert
    from jobs.confidential import _check_oce_chain

    allowed = {"sd", "envelope", "kcv", "certificates", "signature"}
    unknown = set(params) - allowed
    if unknown:
        raise InvalidJobRequest(
            "load_keys_confidential on a TEE takes sd, envelope, kcv, certificates and signature.",
            fields={k: ["unknown"] for k in sorted(unknown)},
        )
    try:
        envelope = tokenwrap.Envelope.from_json(params.get("envelope"))
    except tokenwrap.EnvelopeError as e:
        raise InvalidJobRequest(f"envelope: {e}", fields={"envelope": ["invalid"]}) from None
    prefix = f"tessera/sd/{sd.aid.upper()}/"
    tail = envelope.label[len(prefix) :]
    if not envelope.label.startswith(prefix) or len(tail) != 2:
        raise InvalidJobRequest(
            f"envelope: its label must be {prefix}<KVN> (this security domain's key).",
            fields={"envelope": ["label"]},
        )
    try:
        kvn = int(tail, 16)
    except ValueError:
        raise InvalidJobRequest(
            "envelope: the label's KVN is not hex.", fields={"envelope": ["label"]}
        ) from None
    if not 1 <= kvn <= 0x7F or envelope.label != tokenwrap.master_key_label(sd.aid, kvn):
        raise InvalidJobRequest("envelope: the label's KVN must be 01..7F.", fields={"envelope": ["label"]})
    kcv = params.get("kcv")
    if not isinstance(kcv, str) or len(kcv) != 6 or any(c not in "0123456789abcdefABCDEF" for c in kcv):
        raise InvalidJobRequest("kcv must be 3 bytes in hex (6 digits).", fields={"kcv": ["invalid"]})
    try:
        receive_point(se)
    except tokenwrap.EnvelopeError as e:
        raise InvalidJobRequest(str(e), fields={"sd": ["no_receive_key"]}) from None
    certificates = params.get("certificates")
    if (
        not isinstance(certificates, list)
        or not 1 <= len(certificates) <= 4
        or not all(isinstance(c, str) and _is_hex(c, 2048) for c in certificates)
    ):
        raise InvalidJobRequest(
            "certificates must be the OCE certificate chain: 1-4 certificates in hex, leaf last.",
            fields={"certificates": ["invalid"]},
        )
    signature = params.get("signature")
    if not isinstance(signature, str) or not _is_hex(signature, 80):
        raise InvalidJobRequest(
            "signature must be the OCE key's ECDSA signature (DER) of the envelope, in hex.",
            fields={"signature": ["invalid"]},
        )
    chain = [bytes.fromhex(c) for c in certificates]
    leaf_row = _check_oce_chain(se, chain, field="certificates", what="envelope's")
    leaf = gpcert.parse_certificate(chain[-1])
    try:
        leaf.public_key.verify(
            bytes.fromhex(signature),
            tokenops.envelope_signed_data(envelope, bytes.fromhex(se.serial)),
            ec.ECDSA(hashes.SHA256()),
        )
    except (InvalidSignature, ValueError):
        raise InvalidJobRequest(
            "The envelope's signature does not verify with the OCE certificate (made for another "
            "device, altered, or signed by another key).",
            code="envelope_signature_invalid",
            fields={"signature": ["invalid"]},
        ) from None
    clean = {
        "sd": sd.aid,
        "kvn": kvn,
        "key_length": envelope.key_length,
        "kcv": kcv.upper(),
        "oce_certificate": str(leaf_row.pk),
        "oce_org": leaf_row.subject_org.slug if leaf_row.subject_org_id else "",
    }
    # kept sealed with the job: the envelope and its OCE signature, relayed to the device, whose
    # agent checks the signature again against the CA root pinned at its enrolment (§8.4)
    relayed = {
        "envelope": envelope.to_json(),
        "oce": {"certificates": [c.upper() for c in certificates], "signature": signature.upper()},
    }
    return clean, json.dumps(relayed).encode()


def _is_hex(value: str, max_bytes: int) -> bool:
    return (
        0 < len(value) <= 2 * max_bytes
        and len(value) % 2 == 0
        and all(c in "0123456789abcdefABCDEF" for c in value)
    )


# --- compiling ----------------------------------------------------------------------------------


def _secrets(job: Job) -> dict[str, Any]:
    if not job.secrets_sealed:
        return {}
    return json.loads(
        vault_open(org_id=job.beneficiary_id, purpose=f"job:{job.id}", blob=bytes(job.secrets_sealed))
    )


def _seal(job: Job, secrets: dict[str, Any]) -> None:
    job.secrets_sealed = vault_seal(
        org_id=job.beneficiary_id, purpose=f"job:{job.id}", plaintext=json.dumps(secrets).encode()
    )
    job.save(update_fields=["secrets_sealed"])


def _active_master(sd: SecurityDomain | None) -> ServiceMasterKey | None:
    if sd is None:
        return None
    return ServiceMasterKey.objects.filter(security_domain=sd, status=MasterKeyStatus.ACTIVE).first()


def _next_kvn(current: int) -> int:
    return current + 1 if current < 0x7F else 0x01


def _portal_key(job: Job, *, kvn: int, length: int) -> tuple[bytes, int]:
    """The job's new key, generated once and kept sealed in the beneficiary's vault, so every
    attempt sends the same key (the token may already hold it: outcome ``present``)."""
    secrets = _secrets(job)
    if "new_key" not in secrets:
        secrets["new_key"] = os.urandom(length).hex()
        secrets["new_kvn"] = kvn
        _seal(job, secrets)
    return bytes.fromhex(secrets["new_key"]), int(secrets["new_kvn"])


def _receive_op(
    envelope: tokenwrap.Envelope, *, kcv: str, replace: bool = False, oce: dict[str, Any] | None = None
) -> bytes:
    args: dict[str, Any] = {"envelope": envelope.to_json(), "kcv": kcv}
    if replace:
        args["replace"] = True
    if oce is not None:
        args["oce"] = oce
    return tokenops.encode_op("receive_key", expect=["received", "present"], **args)


def _operations(job: Job) -> list[bytes]:
    se = job.secure_element
    params = job.params
    kind = job.kind
    if kind == "create_security_domain":
        key, kvn = _portal_key(
            job, kvn=int(params.get("kvn", 0x30)), length=int(params.get("key_length", 16))
        )
        label = tokenwrap.master_key_label(params["aid"], kvn)
        return [
            _receive_op(tokenwrap.wrap_for_token(key, receive_point(se), label), kcv=key_check_value(key))
        ]
    if kind == "rotate_keys":
        sd = SecurityDomain.objects.get(secure_element=se, aid=params["sd"])
        current = _active_master(sd)
        if current is None:
            raise tokenwrap.EnvelopeError(f"security domain {sd.aid} has no key recorded to rotate")
        key, kvn = _portal_key(
            job, kvn=_next_kvn(current.kvn), length=max(int(params.get("key_length", 16)), current.key_length)
        )
        new_label = tokenwrap.master_key_label(sd.aid, kvn)
        return [
            _receive_op(
                tokenwrap.wrap_for_token(key, receive_point(se), new_label),
                kcv=key_check_value(key),
                replace=True,
            ),
            tokenops.encode_op(
                "delete_key",
                expect=["deleted", "absent"],
                label=tokenwrap.master_key_label(sd.aid, current.kvn),
            ),
        ]
    if kind == "load_keys_confidential":
        package = _secrets(job).get("package")
        if not package:
            raise tokenwrap.EnvelopeError("the provider's envelope is no longer held")
        relayed = json.loads(bytes.fromhex(package))
        oce = None
        if "envelope" in relayed:  # {envelope, oce}; a job requested before the OCE relay: the envelope
            relayed, oce = relayed["envelope"], relayed.get("oce")
        envelope = tokenwrap.Envelope.from_json(relayed)
        sd = SecurityDomain.objects.get(secure_element=se, aid=params["sd"])
        others = ServiceMasterKey.objects.filter(security_domain=sd, status=MasterKeyStatus.ACTIVE).exclude(
            kvn=params["kvn"]
        )
        return [
            _receive_op(envelope, kcv=params["kcv"], replace=True, oce=oce),
            *(
                tokenops.encode_op(
                    "delete_key",
                    expect=["deleted", "absent"],
                    label=tokenwrap.master_key_label(sd.aid, mk.kvn),
                )
                for mk in others
            ),
        ]
    if kind == "delete_security_domain":
        return [tokenops.encode_op("delete_sd", expect=["deleted", "absent"], aid=params["aid"].upper())]
    # read_status: the ISD sees every SD, a provider's SD its own keys
    sd = SecurityDomain.objects.filter(secure_element=se, aid=params.get("sd", "")).first()
    prefix = "tessera/sd/" if sd is None or sd.is_isd else tokenops.sd_prefix(sd.aid.upper())
    return [tokenops.encode_op("list", expect=["listed"], prefix=prefix)]


def advance(job: Job) -> JobStep | None:
    """The job's next work item (caller holds the job row locked and has checked nothing is in
    flight); None when the job ended here (succeeded, or failed to compile)."""
    if job.kind not in TEE_KINDS:
        job_transition(
            job=job,
            to=JobState.FAILED,
            reason=f"{job.get_kind_display()} does not apply to a TEE (no applications, no APDU scripts)",
            error_code="not_for_tee",
        )
        return None
    if job.step_index >= 1:
        job_transition(
            job=job, to=JobState.SUCCEEDED, result={**job.result, "completed_steps": job.step_index}
        )
        return None
    name = _STEP_NAMES[job.kind]
    attempt = JobStep.objects.filter(job=job, index=0, name=name).count() + 1
    try:
        ops = _operations(job)
    except (tokenwrap.EnvelopeError, tokenops.TokenOpError) as exc:
        job_transition(
            job=job,
            to=JobState.FAILED,
            reason=f"cannot compile step {name}: {exc}",
            error_code="compile_error",
        )
        return None
    now = timezone.now()
    return JobStep.objects.create(
        job=job,
        index=0,
        name=name,
        attempt=attempt,
        phase="script",
        item_id=f"{job.id}.0t.{attempt}.script",
        state=StepState.READY,
        session={"mode": TOKEN_MODE, "kind": KIND_TOKEN_OPS},
        commands=[{"apdu": op.hex(), "expect": ["9000"]} for op in ops],
        deadline=now + timedelta(seconds=settings.TESSERA_JOB_STEP_SECONDS),
    )


# --- interpreting -------------------------------------------------------------------------------

_FAILURE_CODES = {
    "rejected": "envelope_rejected",
    "conflict": "key_conflict",
    "kcv_mismatch": "kcv_mismatch",
    "unauthenticated": "envelope_unauthenticated",  # the agent's own OCE check (agent.ocepin)
}


def interpret(job: Job, step: JobStep, *, retry_later: Any, continue_job: Any) -> None:
    """One reported TEE step (caller holds step and job locked; ``rejected`` is handled before)."""
    answers: list[dict[str, Any]] = []
    failed_at: tuple[int, dict[str, Any]] | None = None
    try:
        for index, hex_answer in enumerate(step.responses):
            answer, ok = tokenops.decode_result(bytes.fromhex(hex_answer))
            answers.append(answer)
            if not ok and failed_at is None:
                failed_at = (index, answer)
    except ValueError:
        step.state = StepState.FAILED
        step.outcome = {"error": "unreadable answers"}
        step.save(update_fields=["state", "outcome"])
        retry_later(job, "the device's answers could not be read", "device_error")
        return
    step.outcome = {
        "ran": len(answers),
        "completed": len(answers) == len(step.commands) and failed_at is None,
        "outcomes": [a["outcome"] for a in answers],
    }
    if step.report_status == "completed" and step.outcome["completed"]:
        step.state = StepState.COMPLETED
        step.save(update_fields=["state", "outcome"])
        problem = apply_token_effects(job, step, answers)
        if problem is not None:
            job_transition(job=job, to=JobState.FAILED, reason=problem[1], error_code=problem[0])
            return
        job.step_index += 1
        job.save(update_fields=["step_index"])
        continue_job(job)
        return
    step.state = StepState.FAILED
    step.save(update_fields=["state", "outcome"])
    if failed_at is not None:
        index, answer = failed_at
        outcome = answer["outcome"]
        detail = f": {answer['detail']}" if answer.get("detail") else ""
        job_transition(
            job=job,
            to=JobState.FAILED,
            reason=f"the token answered '{outcome}' to operation {index}{detail}",
            error_code=_FAILURE_CODES.get(outcome, f"token_{outcome}"),
        )
        return
    # interrupted (agent restarted, token away) or failed without an answer: every operation is
    # idempotent by outcome, so the same operations go out again as the next attempt — at once
    # after an interruption (the agent is back), with backoff when the token gave no answer.
    if step.report_status == "interrupted":
        if job.attempts + 1 >= job.max_attempts + 2:
            job_transition(
                job=job,
                to=JobState.FAILED,
                reason=f"interrupted again and again: {step.report_detail}"[:300],
                error_code="interrupted_exhausted",
            )
            return
        job.attempts += 1
        job.save(update_fields=["attempts"])
        continue_job(job)
        return
    retry_later(
        job,
        f"the device did not finish the token operations: {step.report_detail or 'no answer'}",
        "device_error",
    )


# --- effects ------------------------------------------------------------------------------------


def _engine_actor(org: Any) -> Any:
    from jobs.effects import engine_actor

    return engine_actor(org)


def _record_master(
    job: Job, sd: SecurityDomain, *, kvn: int, length: int, custody: str, kcv: str, key: bytes | None
) -> ServiceMasterKey:
    """The SD's key of version ``kvn`` as its active master key; the previous ones retired (wiped)."""
    now = timezone.now()
    ServiceMasterKey.objects.filter(security_domain=sd, status=MasterKeyStatus.ACTIVE).update(
        status=MasterKeyStatus.RETIRED, retired_at=now, sealed=b""
    )
    mk = ServiceMasterKey.objects.create(
        owner=sd.owner, security_domain=sd, kvn=kvn, key_length=length, custody=custody, kcv=kcv
    )
    if key is not None:
        from keys.sessionkeys import master_key_purpose

        mk.sealed = vault_seal(org_id=mk.owner_id, purpose=master_key_purpose(mk.pk), plaintext=key)
        mk.save(update_fields=["sealed"])
    audit_record(
        actor=_engine_actor(sd.owner),
        tag=AuditTag.MASTERKEY_REGISTER,
        target=sd,
        details={
            "kcv": kcv,
            "custody": custody,
            "kvn": kvn,
            "key_length": length,
            "job": str(job.id),
            "tee": True,
        },
        concerns=[o for o in (sd.owner_id, job.requested_by_id, job.secure_element.issuer_id) if o],
    )
    return mk


def _received(answers: list[dict[str, Any]]) -> dict[str, Any]:
    return next(a for a in answers if "kcv" in a and a["outcome"] in ("received", "present"))


def apply_token_effects(job: Job, step: JobStep, answers: list[dict[str, Any]]) -> tuple[str, str] | None:
    """What the token confirmed, in the records. Returns (error_code, reason) when the token's
    answer contradicts what the job sent (the KCV differs): nothing is recorded then."""
    se = job.secure_element
    params = job.params
    details: dict[str, Any] = {"step": step.name, "tee": True}
    if job.kind in ("create_security_domain", "rotate_keys"):
        key, kvn = _portal_key(job, kvn=0, length=16)  # generated when compiled: only read here
        got = _received(answers)
        if got["kcv"] != key_check_value(key):
            return "kcv_mismatch", "the token's key check value differs from the key sent"
        if job.kind == "create_security_domain":
            isd = SecurityDomain.objects.get(secure_element=se, is_isd=True)
            sd, _ = SecurityDomain.objects.get_or_create(
                secure_element=se,
                aid=params["aid"],
                defaults={
                    "owner": job.beneficiary,
                    "parent": isd,
                    "privileges": params["privileges"],
                    "life_cycle": SDLifeCycle.PERSONALIZED,
                },
            )
            Job.objects.filter(pk=job.pk).update(target_sd=sd)
        else:
            sd = SecurityDomain.objects.get(secure_element=se, aid=params["sd"])
        _record_master(job, sd, kvn=kvn, length=len(key), custody=KeyCustody.PORTAL, kcv=got["kcv"], key=key)
        job.secrets_sealed = None  # the vault copy is the master key's now
        job.result = {**job.result, "sd": sd.aid, "kvn": kvn, "kcv": got["kcv"], "custody": KeyCustody.PORTAL}
        job.save(update_fields=["secrets_sealed", "result"])
        details.update({"sd": sd.aid, "kvn": kvn, "kcv": got["kcv"]})
    elif job.kind == "load_keys_confidential":
        got = _received(answers)
        if got["kcv"] != params["kcv"]:
            return (
                "kcv_mismatch",
                f"the token holds a key whose check value {got['kcv']} differs from the declared {params['kcv']}",
            )
        sd = SecurityDomain.objects.get(secure_element=se, aid=params["sd"])
        _record_master(
            job, sd, kvn=int(params["kvn"]), length=int(params["key_length"]), custody=KeyCustody.PROVIDER,
            kcv=got["kcv"], key=None,
        )  # fmt: skip
        job.secrets_sealed = None
        job.result = {
            **job.result,
            "kvn": int(params["kvn"]),
            "kcv": got["kcv"],
            "custody": KeyCustody.PROVIDER,
        }
        job.save(update_fields=["secrets_sealed", "result"])
        details.update({"sd": sd.aid, "kvn": int(params["kvn"]), "custody": KeyCustody.PROVIDER})
    elif job.kind == "delete_security_domain":
        from jobs.effects import _forget_sd

        sd = SecurityDomain.objects.filter(secure_element=se, aid=params["aid"]).first()
        if sd is not None:
            _forget_sd(sd)
        details.update({"sd": params["aid"], "keys_deleted": answers[0].get("count", 0)})
    else:
        details["changes"] = reconcile_token(job, answers[0].get("keys", []))
        job.result = {**job.result, "keys": answers[0].get("keys", [])}
        job.save(update_fields=["result"])
    audit_record(
        actor=None,
        tag=AuditTag.JOB_STEP,
        target=job,
        details=details,
        concerns=[o for o in (job.requested_by_id, job.beneficiary_id, se.issuer_id) if o],
    )
    return None


def reconcile_token(job: Job, listed: list[list[Any]]) -> dict[str, list[str]]:
    """read_status on a TEE (jobs.reconcile's semantics, the token being the truth): SDs whose keys
    the token holds but the records lack are recorded, unattributed (owner: the issuer); recorded
    SDs with no key left are forgotten (ISD reads only); a recorded active key whose version the
    token no longer holds is retired, and a version in the token the records lack is noted."""
    from jobs.effects import _forget_sd

    se = job.secure_element
    changes: dict[str, list[str]] = {"added": [], "removed": [], "updated": []}
    reader = SecurityDomain.objects.filter(secure_element=se, aid=job.params.get("sd", "")).first()
    full_view = reader is None or reader.is_isd
    on_token: dict[str, dict[int, str]] = {}
    for label, _length, kcv in listed:
        parts = str(label).split("/")
        if len(parts) != 4:
            continue
        try:
            on_token.setdefault(parts[2].upper(), {})[int(parts[3], 16)] = str(kcv)
        except ValueError:
            continue
    recorded = {sd.aid.upper(): sd for sd in SecurityDomain.objects.filter(secure_element=se, is_isd=False)}
    if not full_view and reader is not None:
        recorded = {reader.aid.upper(): reader}
    isd = SecurityDomain.objects.filter(secure_element=se, is_isd=True).first()
    with transaction.atomic():
        for aid, sd in recorded.items():
            versions = on_token.get(aid, {})
            if not versions and full_view:
                _forget_sd(sd)
                changes["removed"].append(f"sd:{aid}")
                continue
            for mk in ServiceMasterKey.objects.filter(security_domain=sd, status=MasterKeyStatus.ACTIVE):
                if versions.get(mk.kvn) is None:
                    mk.status, mk.retired_at, mk.sealed = MasterKeyStatus.RETIRED, timezone.now(), b""
                    mk.save(update_fields=["status", "retired_at", "sealed"])
                    changes["updated"].append(f"sd:{aid} key {mk.kvn:02X} gone")
            known = set(
                ServiceMasterKey.objects.filter(
                    security_domain=sd, status=MasterKeyStatus.ACTIVE
                ).values_list("kvn", flat=True)
            )
            for kvn in sorted(set(versions) - known):
                changes["updated"].append(f"sd:{aid} key {kvn:02X} unrecorded")
        if full_view and isd is not None:
            for aid in sorted(set(on_token) - set(recorded) - {isd.aid.upper()}):
                SecurityDomain.objects.create(
                    secure_element=se, aid=aid, parent=isd, owner=se.issuer, privileges=["security_domain"]
                )
                changes["added"].append(f"sd:{aid} (unattributed)")
    return changes
