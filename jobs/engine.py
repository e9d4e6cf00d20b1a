"""The job engine: compiles the next step of a job into a script, and interprets the results the
agent reports (DESIGN §7).

1. ``job_advance`` — with the job row locked: if no step is in flight, build the next step's
   payload, open the right key set from the vault, compile a precomputed script (or the opening
   half of an interactive one), store it as a READY ``JobStep`` and raise the device's "has work"
   marker on commit.
2. ``step_process`` — with the step and job locked, exactly once per reported step: unwrap the
   responses (verifying every R-MAC), then
   - all payload commands answered as expected → apply the step's effects to the database, move
     to the next step (or succeed the job);
   - a sequence-counter mismatch → remember the card's counter, try again (not a failure);
   - the card refused a command → fail the job, naming the command and the status word;
   - interrupted (the agent restarted mid-script) or unreadable → read the card's registry first
     (a reconcile step), then either skip what the card already did or retry it;
   - no response at all (card unreachable) → retry with backoff, bounded by ``max_attempts``.
Workers call these through thin Celery tasks; both are idempotent, so a redelivered task (worker
killed mid-way, ``acks_late``) changes nothing the second time.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.models import AuditTag
from audit.services import audit_record
from devices.models import SecurityDomain
from gp import keydelivery
from gp.apdu import ResponseAPDU
from gp.errors import GPError
from gp.scp03 import StaticKeys
from jobs import steps as S
from jobs.compiler import payloads as P
from jobs.compiler.confidential import relay_outcome, relay_script, scp11_deliver_script, scp11_open_script
from jobs.compiler.inventory import CardInventory, parse_inventory
from jobs.compiler.session import (
    INITIAL_SEQUENCE_COUNTER,
    CardAuthError,
    CompilerError,
    CounterMismatch,
    PayloadCommand,
    ScriptOutcome,
    SessionPlan,
    interactive_continue,
    interactive_open,
    new_plan,
    precomputed_script,
    unwrap_responses,
)
from jobs.consent_gate import consent_gate
from jobs.effects import apply_effects
from jobs.models import Job, JobState, JobStep, ScriptMode, StepState
from jobs.services import job_audience, job_transition
from keys import selectors as key_selectors
from keys import services as key_services
from keys.vault import vault_open, vault_seal

log = logging.getLogger(__name__)

IN_FLIGHT = (StepState.READY, StepState.DISPATCHED, StepState.REPORTED)
RECONCILE_PREFIX = "reconcile:"
RELAY_MODE = "relay"  # JobStep.session of a run_script step: no session plan, nothing sealed
SCP11_OPEN, SCP11_DELIVER = "scp11_authenticate", "scp11_deliver"  # the rounds of load_keys_scp11


# --- has-work marker -------------------------------------------------------------------------


def has_work_key(device_id: Any) -> str:
    return f"tessera:agent:haswork:{device_id}"


def mark_has_work(device_id: Any) -> None:
    """Set the device's has-work marker and wake its held exchange, if any (after commit)."""
    from django.core.cache import cache

    from jobs.wake import wake

    cache.set(has_work_key(device_id), 1, timeout=None)
    wake(device_id)


# --- compiling -------------------------------------------------------------------------------


def _job_secrets(job: Job) -> dict[str, Any]:
    if not job.secrets_sealed:
        return {}
    return json.loads(
        vault_open(org_id=job.beneficiary_id, purpose=f"job:{job.id}", blob=bytes(job.secrets_sealed))
    )


def _new_keys_for(job: Job, length: int) -> tuple[StaticKeys, int]:
    """The job's new key set, generated once and kept sealed in the beneficiary's vault so every
    retry sends the same keys (the card may already hold them)."""
    secrets = _job_secrets(job)
    if "new_keys" not in secrets:
        keys = S.new_static_keys(length)
        secrets["new_keys"] = json.loads(S.keys_to_json(keys))
        secrets["new_kvn"] = job.params.get("kvn") or _next_kvn(job)
        job.secrets_sealed = vault_seal(
            org_id=job.beneficiary_id, purpose=f"job:{job.id}", plaintext=json.dumps(secrets).encode()
        )
        job.save(update_fields=["secrets_sealed"])
    return S.keys_from_json(json.dumps(secrets["new_keys"]).encode()), int(secrets["new_kvn"])


def _new_key_length(job: Job) -> int:
    """Bytes per key of the job's new key set: the requested ``key_length`` (job_request refuses a
    rotation to a shorter one), else — a rotation requested before the parameter was recorded —
    the current key set's length. The card takes a new KVN of another length (GPCS §11.8.2.1)."""
    if "key_length" in job.params:
        return int(job.params["key_length"])
    sd = job.target_sd
    current = key_selectors.active_keyset(sd) if job.kind == "rotate_keys" and sd is not None else None
    return current.key_length if current is not None else 16


def _next_kvn(job: Job) -> int:
    sd = job.target_sd
    current = key_selectors.active_keyset(sd) if sd is not None else None
    if current is None:
        return 0x30
    return current.kvn + 1 if 0x30 <= current.kvn < 0x6F else 0x30


def _isd(job: Job) -> SecurityDomain:
    """The SE's ISD (it never changes), read once per loaded job."""
    isd = job.__dict__.get("_isd")
    if isd is None:
        isd = job.__dict__["_isd"] = SecurityDomain.objects.get(
            secure_element=job.secure_element, is_isd=True
        )
    return isd


def _keyset_for(job: Job, sd_aid: str) -> Any:
    keyset = key_selectors.active_keyset_at(job.secure_element, sd_aid)
    if keyset is None:
        raise CompilerError(f"no active key set is held for security domain {sd_aid}")
    return keyset


def _context(job: Job, spec: S.StepSpec) -> tuple[S.StepContext, StaticKeys, int, Any]:
    """Keys for the session and for the payload. Returns (ctx, session keys, session kvn, keyset|None)."""
    ctx = S.StepContext(params=job.params)
    isd_keyset = _keyset_for(job, _isd(job).aid)
    ctx.isd_keys = key_services.keyset_static_keys(keyset=isd_keyset)
    session_keyset = None
    if spec.keys_from == "isd":
        session_keyset = isd_keyset
    elif spec.keys_from == "sd":
        session_keyset = _keyset_for(job, spec.sd_aid)
    if session_keyset is not None:
        ctx.sd_keys = key_services.keyset_static_keys(keyset=session_keyset)
        ctx.sd_kvn = session_keyset.kvn
    if job.kind == "load_keys_confidential":
        package = _job_secrets(job).get("package")
        ctx.package = bytes.fromhex(package) if package else None
    if job.kind in ("create_security_domain", "rotate_keys"):
        ctx.new_keys, ctx.new_kvn = _new_keys_for(job, _new_key_length(job))
        if job.kind == "rotate_keys" and ctx.sd_kvn is None:
            ctx.sd_kvn = _keyset_for(job, spec.sd_aid).kvn
    if spec.keys_from == S.NEW_KEYS:
        assert ctx.new_keys is not None and ctx.new_kvn is not None
        return ctx, ctx.new_keys, ctx.new_kvn, None
    assert ctx.sd_keys is not None and ctx.sd_kvn is not None
    return ctx, ctx.sd_keys, ctx.sd_kvn, session_keyset


def _session_counter(job: Job, keyset: Any) -> int | None:
    if keyset is not None:
        return keyset.sequence_counter
    return _job_secrets(job).get("new_counter", INITIAL_SEQUENCE_COUNTER)


def _seal_payload(job: Job, payload: list[PayloadCommand]) -> bytes:
    doc = [{"apdu": c.apdu.hex(), "expect": list(c.expect), "label": c.label} for c in payload]
    return vault_seal(
        org_id=_payload_owner(job), purpose=f"jobpayload:{job.id}", plaintext=json.dumps(doc).encode()
    )


def _open_payload(job: Job, step: JobStep) -> list[PayloadCommand]:
    doc = json.loads(
        vault_open(
            org_id=_payload_owner(job), purpose=f"jobpayload:{job.id}", blob=bytes(step.payload_sealed)
        )
    )
    return [
        PayloadCommand(apdu=bytes.fromhex(c["apdu"]), expect=tuple(c["expect"]), label=c["label"])
        for c in doc
    ]


def _payload_owner(job: Job) -> Any:
    return job.secure_element.issuer_id


def _specs(job: Job) -> list[S.StepSpec]:
    return S.plan_for(job.kind, job.params, _isd(job).aid)


def _spec_for_step(job: Job, name: str) -> S.StepSpec:
    if name == S.REPERSONALIZE:
        return S.repersonalize_spec(job.params, _isd(job).aid)
    if name.startswith(RECONCILE_PREFIX):
        original = next(s for s in _specs(job) if s.name == name[len(RECONCILE_PREFIX) :])
        return S.StepSpec(name, original.sd_aid, original.keys_from, lambda c: P.read_status())
    return next(s for s in _specs(job) if s.name == name)


def _item_id(job: Job, index: int, attempt: int, phase: str, name: str) -> str:
    tag = "r" if name.startswith(RECONCILE_PREFIX) else ("p" if name == S.REPERSONALIZE else "s")
    return f"{job.id}.{index}{tag}.{attempt}.{phase}"


def _create_step(
    job: Job,
    spec: S.StepSpec,
    *,
    attempt: int,
    phase: str = "script",
    iu_response: bytes | None = None,
    previous: JobStep | None = None,
) -> JobStep:
    if spec.keys_from == S.RELAY:
        return _create_relay_step(job, spec, attempt=attempt)
    ctx, keys, kvn, keyset = _context(job, spec)
    payload = spec.build(ctx)
    mode = job.mode
    counter = _session_counter(job, keyset)
    if mode == ScriptMode.PRECOMPUTED and counter is None:
        mode = ScriptMode.INTERACTIVE  # the counter is unknown: ask the card first
    if previous is not None:
        plan = SessionPlan.from_json(previous.session)
    else:
        i_param = keyset.i_param if keyset is not None else 0x70
        plan = new_plan(sd_aid=spec.sd_aid, kvn=kvn, i_param=i_param, sequence_counter=counter, mode=mode)
    if plan.mode == ScriptMode.PRECOMPUTED:
        script = precomputed_script(keys=keys, plan=plan, payload=payload)
    elif phase == "open":
        script = interactive_open(plan=plan)
    else:
        assert iu_response is not None
        script = interactive_continue(keys=keys, plan=plan, iu_response=iu_response, payload=payload)
    now = timezone.now()
    return JobStep.objects.create(
        job=job,
        index=job.step_index,
        name=spec.name,
        attempt=attempt,
        phase=phase,
        item_id=_item_id(job, job.step_index, attempt, phase, spec.name),
        state=StepState.READY,
        session=plan.to_dict(),
        commands=script.to_wire(),
        payload_sealed=_seal_payload(job, payload),
        deadline=now + timedelta(seconds=settings.TESSERA_JOB_STEP_SECONDS),
    )


def _create_relay_step(job: Job, spec: S.StepSpec, *, attempt: int) -> JobStep:
    """run_script: SELECT the provider's SD in the clear and its own commands, unchanged. No keys
    of ours, nothing to seal: the commands are the provider's, protected by its own session.
    load_keys_scp11: round 1 is SELECT ISD and the provider's SCP11a opening; round 2 its wrapped
    delivery with no SELECT before it (the card session of round 1 carries it)."""
    select = True
    if spec.name == SCP11_OPEN:
        script = scp11_open_script(
            isd_aid=bytes.fromhex(spec.sd_aid),
            commands=[bytes.fromhex(c) for c in job.params["authenticate"]],
        )
    elif spec.name == SCP11_DELIVER:
        deliver = job.params.get("deliver")
        if not deliver:
            raise CompilerError("the provider's round-2 commands have not arrived")
        script = scp11_deliver_script([bytes.fromhex(c) for c in deliver["commands"]])
        select = False
    else:
        script = relay_script(
            sd_aid=bytes.fromhex(spec.sd_aid), commands=[bytes.fromhex(c) for c in job.params["commands"]]
        )
    return JobStep.objects.create(
        job=job,
        index=job.step_index,
        name=spec.name,
        attempt=attempt,
        phase="script",
        item_id=_item_id(job, job.step_index, attempt, "script", spec.name),
        state=StepState.READY,
        session={"mode": RELAY_MODE, "sd_aid": spec.sd_aid, **({} if select else {"select": False})},
        commands=script.to_wire(),
        deadline=timezone.now() + timedelta(seconds=settings.TESSERA_JOB_STEP_SECONDS),
    )


def job_advance(job_id: Any) -> JobStep | None:
    """Compile the job's next step if nothing is in flight. Idempotent."""
    with transaction.atomic():
        # Lock the job row only: FOR UPDATE on the joined device and SE rows would serialise every
        # job of a device, and (in a switch or campaign) every job sharing an organisation row.
        job = (
            Job.objects.select_for_update(of=("self",))
            .select_related("secure_element", "device")
            .filter(pk=job_id)
            .first()
        )
        if (
            job is None
            or job.is_terminal
            or job.state not in (JobState.QUEUED, JobState.RUNNING, JobState.DISPATCHED)
        ):
            return None
        if job.not_before and job.not_before > timezone.now():
            return None
        if JobStep.objects.filter(job=job, state__in=IN_FLIGHT).exists():
            return None
        if not consent_gate(job):
            return None
        if job.secure_element.kind == "tee":  # token operations, not APDUs (jobs.tee)
            from jobs import tee

            step = tee.advance(job)
            if step is not None:
                transaction.on_commit(lambda: mark_has_work(job.device_id))
            return step
        specs = _specs(job)
        pending_reconcile = job.result.get("reconcile")
        if pending_reconcile:
            spec = _spec_for_step(job, RECONCILE_PREFIX + pending_reconcile)
        elif job.result.get("repersonalize"):
            spec = _spec_for_step(job, S.REPERSONALIZE)
        elif job.step_index >= len(specs):
            _succeed(job)
            return None
        else:
            spec = specs[job.step_index]
        attempt = (
            JobStep.objects.filter(
                job=job, index=job.step_index, name=spec.name, phase__in=("script", "open")
            ).count()
            + 1
        )
        try:
            phase = "open" if job.mode == ScriptMode.INTERACTIVE and spec.keys_from != S.RELAY else "script"
            step = _create_step(job, spec, attempt=attempt, phase=phase)
            if step.session.get("mode") == ScriptMode.INTERACTIVE and phase == "script":
                # precomputed was asked for but the counter is unknown: this is the opening half
                step.phase = "open"
                step.item_id = _item_id(job, job.step_index, attempt, "open", spec.name)
                step.commands = interactive_open(plan=SessionPlan.from_json(step.session)).to_wire()
                step.save(update_fields=["phase", "item_id", "commands"])
        except CompilerError as exc:
            job_transition(
                job=job,
                to=JobState.FAILED,
                reason=f"cannot compile step {spec.name}: {exc}",
                error_code="compile_error",
            )
            return None
        transaction.on_commit(lambda: mark_has_work(job.device_id))
        return step


def _succeed(job: Job) -> None:
    job_transition(job=job, to=JobState.SUCCEEDED, result={**job.result, "completed_steps": job.step_index})


# --- interpreting results -------------------------------------------------------------------


def _step_keys(job: Job, step: JobStep) -> StaticKeys:
    spec = _spec_for_step(job, step.name)
    _ctx, keys, _kvn, _keyset = _context(job, spec)
    return keys


def _retry_later(job: Job, reason: str, code: str) -> None:
    attempts = job.attempts + 1
    if attempts >= job.max_attempts:
        job_transition(
            job=job,
            to=JobState.FAILED,
            reason=f"{reason} (after {attempts} attempts)",
            error_code=code,
            attempts=attempts,
        )
        return
    delay = settings.TESSERA_JOB_RETRY_BASE_SECONDS * (2 ** (attempts - 1))
    job_transition(
        job=job,
        to=JobState.QUEUED,
        reason=f"{reason}; retrying in {delay}s",
        attempts=attempts,
        not_before=timezone.now() + timedelta(seconds=delay),
    )
    transaction.on_commit(lambda: _enqueue(job.id, countdown=delay))


def _record_counter(job: Job, step: JobStep, value: int | None) -> None:
    if value is None:
        return
    spec = _spec_for_step(job, step.name)
    if spec.keys_from == S.NEW_KEYS:
        secrets = _job_secrets(job)
        secrets["new_counter"] = value
        job.secrets_sealed = vault_seal(
            org_id=job.beneficiary_id, purpose=f"job:{job.id}", plaintext=json.dumps(secrets).encode()
        )
        job.save(update_fields=["secrets_sealed"])
        return
    keyset = _keyset_for(job, spec.sd_aid)
    key_services.keyset_set_sequence_counter(keyset=keyset, value=value)


def step_process(step_id: Any) -> None:
    """Interpret one reported step exactly once (see the module docstring)."""
    with transaction.atomic():
        step = JobStep.objects.select_for_update().filter(pk=step_id, state=StepState.REPORTED).first()
        if step is None:
            return
        job = (
            Job.objects.select_for_update(of=("self",))
            .select_related("secure_element", "device")
            .get(pk=step.job_id)
        )
        if job.is_terminal:
            # A result that arrived after the job ended (e.g. canceled while dispatched): keep it
            # for the record and learn what the card now holds.
            step.state = StepState.SUPERSEDED
            step.save(update_fields=["state"])
            _late_result(job, step)
            return
        _interpret(job, step)


def _late_result(job: Job, step: JobStep) -> None:
    if step.session.get("mode") in (RELAY_MODE, "token"):
        return  # the provider's script: nothing of ours to learn from it; a TEE's: read_status tells
    try:
        payload = _open_payload(job, step)
        outcome = _unwrap(job, step, payload)
    except CompilerError:
        return
    if outcome.completed and not step.name.startswith(RECONCILE_PREFIX):
        spec = _spec_for_step(job, step.name)
        apply_effects(job, spec, outcome, late=True)


def _unwrap(job: Job, step: JobStep, payload: list[PayloadCommand]) -> ScriptOutcome:
    plan = SessionPlan.from_json(step.session)
    responses = [bytes.fromhex(r) for r in step.responses]
    iu = None
    if step.phase == "continue":
        opener = JobStep.objects.filter(
            job=job, index=step.index, attempt=step.attempt, name=step.name, phase="open"
        ).first()
        iu = bytes.fromhex(opener.responses[1]) if opener and len(opener.responses) > 1 else None
    return unwrap_responses(
        keys=_step_keys(job, step), plan=plan, payload=payload, responses=responses, iu_response=iu
    )


def _interpret(job: Job, step: JobStep) -> None:
    status = step.report_status
    if status == "rejected":
        step.state = StepState.FAILED
        step.save(update_fields=["state"])
        job_transition(
            job=job,
            to=JobState.REJECTED,
            reason=f"device rejected the work: {step.report_detail}",
            error_code="device_rejected",
        )
        return
    if step.session.get("mode") == "token":
        from jobs import tee

        tee.interpret(job, step, retry_later=_retry_later, continue_job=_continue)
        return
    if step.phase == "open":
        _interpret_open(job, step)
        return
    if step.session.get("mode") == RELAY_MODE:
        _interpret_relay(job, step)
        return
    payload = _open_payload(job, step)
    try:
        outcome = _unwrap(job, step, payload)
    except CounterMismatch as exc:
        step.state = StepState.FAILED
        step.outcome = {"counter_mismatch": exc.actual_counter}
        step.save(update_fields=["state", "outcome"])
        _record_counter(job, step, exc.next_sequence_counter)
        job_transition(job=job, to=JobState.QUEUED, reason="card's sequence counter differed; recompiling")
        _continue(job)
        return
    except CompilerError as exc:
        step.state = StepState.INTERRUPTED
        step.outcome = {"error": str(exc)[:300]}
        step.save(update_fields=["state", "outcome"])
        if _keys_missing(job, step):
            return
        _reconcile_then_retry(job, step, f"responses could not be verified ({exc})")
        return
    _record_counter(job, step, outcome.next_sequence_counter)
    step.outcome = {
        "ran": outcome.ran,
        "completed": outcome.completed,
        "sw": [f"{r.sw:04X}" for r in outcome.results],
        **(
            {"failed": outcome.failed_label, "failed_sw": f"{outcome.failed_sw:04X}"}
            if outcome.failed_sw is not None
            else {}
        ),
    }
    spec = _spec_for_step(job, step.name)
    if step.name.startswith(RECONCILE_PREFIX):
        _after_reconcile(job, step, spec, outcome)
        return
    if status == "completed" and outcome.completed and step.name == S.REPERSONALIZE:
        step.state = StepState.COMPLETED
        step.save(update_fields=["state", "outcome"])
        job.result = {k: v for k, v in job.result.items() if k != "repersonalize"}
        job.save(update_fields=["result"])
        _continue(job)  # back to verify_new_keys, the same step index
        return
    if status == "completed" and outcome.completed:
        step.state = StepState.COMPLETED
        step.save(update_fields=["state", "outcome"])
        apply_effects(job, spec, outcome)
        job.step_index += 1
        job.save(update_fields=["step_index"])
        _continue(job)
        return
    if status == "interrupted":
        step.state = StepState.INTERRUPTED
        step.save(update_fields=["state", "outcome"])
        _reconcile_then_retry(job, step, "the agent restarted in the middle of the script")
        return
    step.state = StepState.FAILED
    step.save(update_fields=["state", "outcome"])
    if _keys_missing(job, step):
        return
    if outcome.failed_sw is not None:
        job_transition(
            job=job,
            to=JobState.FAILED,
            reason=f"the card answered {outcome.failed_sw:04X} to {outcome.failed_label or 'a command'}",
            error_code=f"card_{outcome.failed_sw:04X}",
        )
        return
    _retry_later(
        job, f"the device could not run the script: {step.report_detail or 'no response'}", "device_error"
    )


def _interpret_relay(job: Job, step: JobStep) -> None:
    """run_script: the provider verifies its R-MACs itself; we only read status words. A refused
    command stops the script and fails the job with the answers so far; a script that never ran
    (no answer at all) is retried; one that stopped half-way is not (the provider's session is
    spent), the job fails with what the card answered."""
    select = step.session.get("select", True)
    try:
        outcome = relay_outcome(
            n_commands=len(step.commands) - (1 if select else 0),
            responses=[bytes.fromhex(r) for r in step.responses],
            after_select=select,
        )
    except CompilerError as exc:
        step.state = StepState.FAILED
        step.outcome = {"error": str(exc)[:300]}
        step.save(update_fields=["state", "outcome"])
        job_transition(
            job=job, to=JobState.FAILED, reason=f"unreadable responses: {exc}", error_code="device_error"
        )
        return
    responses = [r.hex().upper() for r in outcome.responses]
    step.outcome = {
        "ran": len(responses),
        "completed": outcome.completed,
        **({"failed_sw": f"{outcome.failed_sw:04X}"} if outcome.failed_sw is not None else {}),
    }
    if step.name in (SCP11_OPEN, SCP11_DELIVER):
        _interpret_scp11(job, step, outcome, responses)
        return
    if step.report_status == "completed" and outcome.completed:
        step.state = StepState.COMPLETED
        step.save(update_fields=["state", "outcome"])
        job.result = {**job.result, "responses": responses}
        job.save(update_fields=["result"])
        apply_effects(job, _spec_for_step(job, step.name), None)
        job.step_index += 1
        job.save(update_fields=["step_index"])
        _continue(job)
        return
    step.state = StepState.FAILED
    step.save(update_fields=["state", "outcome"])
    if outcome.select_sw is None:
        _retry_later(
            job, f"the device could not run the script: {step.report_detail or 'no response'}", "device_error"
        )
        return
    if outcome.failed_sw is not None:
        what = (
            "SELECT of the SD" if outcome.failed_index == -1 else f"provider command {outcome.failed_index}"
        )
        reason, code = f"the card answered {outcome.failed_sw:04X} to {what}", f"card_{outcome.failed_sw:04X}"
    else:
        reason, code = "the script stopped before its end (agent interrupted)", "script_interrupted"
    job_transition(
        job=job,
        to=JobState.FAILED,
        reason=reason,
        error_code=code,
        result={**job.result, "responses": responses},
    )


def _interpret_scp11(job: Job, step: JobStep, outcome: Any, responses: list[str]) -> None:
    """load_keys_scp11 (docs/key-loading-package.md §8). Round 1 answered: the responses go to the
    provider (job result ``authenticate``) and the job waits for its input, keeping the card
    session (no other job's work reaches the device: ``jobs.exchange.session_holder``). Round 2
    answered: the card's R-MAC'd ``KVN || KCVs`` must name the declared key set, which is then
    recorded in the provider's custody. Round 2 is never retried: its session is spent."""
    completed = step.report_status == "completed" and outcome.completed
    step.state = StepState.COMPLETED if completed else StepState.FAILED
    step.save(update_fields=["state", "outcome"])
    spec = _spec_for_step(job, step.name)
    if step.name == SCP11_OPEN:
        if completed:
            apply_effects(job, spec, None)
            job.step_index += 1
            job.save(update_fields=["step_index"])
            job_transition(
                job=job,
                to=JobState.AWAITING_INPUT,
                reason="the card answered the provider's SCP11a opening; waiting for its key set",
                result={**job.result, "authenticate": responses},
                input_deadline=timezone.now() + timedelta(seconds=scp11_input_seconds()),
            )
            return
        if outcome.select_sw is None:
            _retry_later(
                job,
                f"the device could not run round 1: {step.report_detail or 'no response'}",
                "device_error",
            )
            return
        what = (
            "SELECT of the ISD" if outcome.failed_index == -1 else f"provider command {outcome.failed_index}"
        )
        sw = outcome.failed_sw
        job_transition(
            job=job,
            to=JobState.FAILED,
            reason=f"the card answered {sw:04X} to {what}"
            if sw is not None
            else "round 1 stopped before its end",
            error_code=f"card_{sw:04X}" if sw is not None else "script_interrupted",
            result={**job.result, "authenticate": responses},
        )
        return
    result = {**job.result, "responses": responses}
    if not completed:
        if not responses:
            reason, code = (
                "round 2 never reached the card (agent restarted or card lost): the SCP11 session is gone",
                "scp11_session_lost",
            )
        elif outcome.failed_sw is not None:
            reason = (
                f"the card answered {outcome.failed_sw:04X} to provider command {outcome.failed_index}"
                + (
                    "; a card that lost the SCP11 session (agent restart, reset) answers so"
                    if outcome.failed_sw == 0x6982
                    else ""
                )
            )
            code = f"card_{outcome.failed_sw:04X}"
        else:
            reason, code = "round 2 stopped before its end (agent interrupted)", "script_interrupted"
        job_transition(job=job, to=JobState.FAILED, reason=reason, error_code=code, result=result)
        return
    try:
        data = ResponseAPDU.parse(bytes.fromhex(responses[-1])).data
        kvn, kcvs = keydelivery.parse_response(data[: len(data) - 8])
    except (GPError, ValueError):
        kvn, kcvs = -1, (b"", b"", b"")
    declared = job.params["kcvs"]
    if kvn != int(job.params["kvn"]) or [k.hex().upper() for k in kcvs] != [
        declared["enc"],
        declared["mac"],
        declared["dek"],
    ]:
        job_transition(
            job=job,
            to=JobState.FAILED,
            reason="the card's answer does not name the declared key set (KVN and KCVs)",
            error_code="delivery_unconfirmed",
            result=result,
        )
        return
    job.result = result
    job.save(update_fields=["result"])
    apply_effects(job, spec, None)
    job.step_index += 1
    job.save(update_fields=["step_index"])
    _continue(job)


def scp11_input_seconds() -> int:
    """How long a load_keys_scp11 job waits for the provider's round 2 (``TESSERA_JOB_INPUT_SECONDS``)."""
    return int(settings.TESSERA_JOB_INPUT_SECONDS)


def _interpret_open(job: Job, step: JobStep) -> None:
    """First half of an interactive step: the card's INITIALIZE UPDATE answer came back."""
    responses = [bytes.fromhex(r) for r in step.responses]
    if step.report_status != "completed" or len(responses) < 2:
        step.state = StepState.FAILED
        step.save(update_fields=["state"])
        _retry_later(job, "the card did not answer INITIALIZE UPDATE", "device_error")
        return
    spec = _spec_for_step(job, step.name)
    step.state = StepState.COMPLETED
    step.save(update_fields=["state"])
    try:
        _create_step(
            job, spec, attempt=step.attempt, phase="continue", iu_response=responses[1], previous=step
        )
    except CardAuthError as exc:
        job_transition(
            job=job,
            to=JobState.FAILED,
            reason=f"the card does not hold the expected keys: {exc}",
            error_code="card_auth",
        )
        return
    transaction.on_commit(lambda: mark_has_work(job.device_id))


def _keys_missing(job: Job, step: JobStep) -> bool:
    """After an interruption left a new SD on the card whose keys we could not confirm, a failed
    session with the new keys means PUT KEY never ran: personalise the SD again, then verify."""
    if step.name != "verify_new_keys" or not job.result.get("keys_uncertain"):
        return False
    result = {k: v for k, v in job.result.items() if k != "keys_uncertain"}
    result["repersonalize"] = True
    job.result = result
    job.save(update_fields=["result"])
    audit_record(
        actor=None,
        tag=AuditTag.JOB_STEP,
        target=job,
        details={"step": step.name, "repersonalize": True},
        concerns=job_audience(job),
    )
    job_transition(job=job, to=JobState.QUEUED, reason="the new SD has no keys yet; loading them again")
    _continue(job)
    return True


def _reconcile_then_retry(job: Job, step: JobStep, reason: str) -> None:
    if job.attempts + 1 >= job.max_attempts + 2:
        job_transition(
            job=job,
            to=JobState.FAILED,
            reason=f"{reason}; giving up after repeated reconciliation",
            error_code="reconcile_exhausted",
        )
        return
    job.attempts += 1
    job.save(update_fields=["attempts"])
    result = dict(job.result)
    result["reconcile"] = step.name
    job.result = result
    job.save(update_fields=["result"])
    audit_record(
        actor=None,
        tag=AuditTag.JOB_STEP,
        target=job,
        details={"step": step.name, "reconcile": True, "reason": reason[:200]},
        concerns=[job.requested_by_id],
    )
    _continue(job)


def _after_reconcile(job: Job, step: JobStep, spec: S.StepSpec, outcome: ScriptOutcome) -> None:
    original_name = step.name[len(RECONCILE_PREFIX) :]
    original = _spec_for_step(job, original_name)
    if not outcome.completed:
        step.state = StepState.FAILED
        step.save(update_fields=["state", "outcome"])
        _retry_later(job, "could not read the card's state", "reconcile_failed")
        return
    step.state = StepState.COMPLETED
    step.save(update_fields=["state", "outcome"])
    inventory: CardInventory = parse_inventory(outcome)
    ctx = S.StepContext(params=job.params)
    result = dict(job.result)
    result.pop("reconcile", None)
    job.result = result
    job.save(update_fields=["result"])
    if original.done(inventory, ctx):
        if original.name == "install_sd":
            # The SD is listed, but whether PUT KEY ran is invisible to the ISD: verify decides.
            result["keys_uncertain"] = True
            job.result = result
            job.save(update_fields=["result"])
        apply_effects(job, original, None, inventory=inventory)
        job.step_index += 1
        job.save(update_fields=["step_index"])
    _continue(job)


def _continue(job: Job) -> None:
    """Compile the next step (or finish) once this transaction commits, in this same task: one
    broker round trip per step less than enqueueing ``jobs.advance``. Should that fail (or the
    process die before it runs), ``jobs.advance`` is enqueued (or the sweeper finds the job)."""
    job_id = job.id

    def advance_now() -> None:
        try:
            job_advance(job_id)
        except Exception:  # noqa: BLE001 - the task retries it, with its own connection and budget
            log.warning("inline advance failed job=%s; enqueued instead", job_id, exc_info=True)
            _enqueue(job_id)

    transaction.on_commit(advance_now)


def _enqueue(job_id: Any, countdown: float = 0) -> None:
    from jobs.tasks import enqueue_advance

    enqueue_advance(job_id, countdown=countdown)
