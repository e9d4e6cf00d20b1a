"""What a confirmed step changes in the database: the records follow the card, never lead it.

Called by the engine inside the step's transaction once the card's responses are verified (or,
after an interruption, once the card's registry shows the step already happened).
"""

from __future__ import annotations

import json
from typing import Any

from audit.models import AuditTag
from audit.services import audit_record
from devices.models import SDLifeCycle, SecurityDomain
from jobs import steps as S
from jobs.compiler.inventory import CardInventory
from jobs.compiler.session import INITIAL_SEQUENCE_COUNTER, ScriptOutcome
from jobs.models import Application, Job
from keys import services as key_services
from keys.vault import vault_open
from tenants.access import Actor
from tenants.models import MemberRole, Organisation


def engine_actor(org: Organisation) -> Actor:
    """The job engine recording, for ``org``, what the card has confirmed (audited as the org, no user)."""
    return Actor(user=None, org=org, member_role=MemberRole.OWNER)


def _secrets(job: Job) -> dict[str, Any]:
    return json.loads(
        vault_open(org_id=job.beneficiary_id, purpose=f"job:{job.id}", blob=bytes(job.secrets_sealed))
    )


def _new_keys(job: Job) -> tuple[Any, int, int]:
    secrets = _secrets(job)
    keys = S.keys_from_json(json.dumps(secrets["new_keys"]).encode())
    return keys, int(secrets["new_kvn"]), int(secrets.get("new_counter", INITIAL_SEQUENCE_COUNTER))


def apply_effects(
    job: Job,
    spec: S.StepSpec,
    outcome: ScriptOutcome | None,
    *,
    inventory: CardInventory | None = None,
    late: bool = False,
) -> None:
    se = job.secure_element
    name = spec.name
    details: dict[str, Any] = {"step": name, **({"late": True} if late else {})}
    if name == "install_sd":
        isd = SecurityDomain.objects.get(secure_element=se, is_isd=True)
        sd, _ = SecurityDomain.objects.get_or_create(
            secure_element=se,
            aid=job.params["aid"],
            defaults={
                "owner": job.beneficiary,
                "parent": isd,
                "privileges": job.params["privileges"],
                "life_cycle": SDLifeCycle.PERSONALIZED,
            },
        )
        keys, kvn, counter = _new_keys(job)
        if not sd.key_sets.filter(kvn=kvn).exclude(status="destroyed").exists():
            key_services.keyset_import(
                actor=engine_actor(sd.owner),
                security_domain=sd,
                kvn=kvn,
                keys=keys,
                sequence_counter=counter,
                status="pending",
            )
        Job.objects.filter(pk=job.pk).update(target_sd=sd)
        details["sd"] = sd.aid
    elif name == "verify_new_keys":
        sd = SecurityDomain.objects.get(secure_element=se, aid=job.params["aid"])
        _keys, kvn, counter = _new_keys(job)
        keyset = sd.key_sets.get(kvn=kvn, status__in=["pending", "active"])
        key_services.keyset_set_sequence_counter(keyset=keyset, value=counter)
        if keyset.status == "pending":
            key_services.keyset_set_status(
                actor=engine_actor(sd.owner), keyset=keyset, from_status="pending", to_status="active"
            )
    elif name == "delete_sd":
        sd = SecurityDomain.objects.filter(secure_element=se, aid=job.params["aid"]).first()
        if sd is not None:
            _forget_sd(sd)
        details["sd"] = job.params["aid"]
    elif name == "put_new_keys":
        sd = SecurityDomain.objects.get(secure_element=se, aid=job.params["sd"])
        keys, kvn, counter = _new_keys(job)
        if not sd.key_sets.filter(kvn=kvn).exclude(status="destroyed").exists():
            key_services.keyset_import(
                actor=engine_actor(sd.owner),
                security_domain=sd,
                kvn=kvn,
                keys=keys,
                sequence_counter=counter,
                status="pending",
            )
    elif name == "verify_and_retire_old":
        sd = SecurityDomain.objects.get(secure_element=se, aid=job.params["sd"])
        _keys, kvn, counter = _new_keys(job)
        for old in sd.key_sets.filter(status="active").exclude(kvn=kvn):
            _retire(sd, old)
        new = sd.key_sets.get(kvn=kvn, status__in=["pending", "active"])
        key_services.keyset_set_sequence_counter(keyset=new, value=counter)
        if new.status == "pending":
            key_services.keyset_set_status(
                actor=engine_actor(sd.owner), keyset=new, from_status="pending", to_status="active"
            )
        details["kvn"] = kvn
    elif name == "install_app":
        sd = SecurityDomain.objects.get(secure_element=se, aid=job.params["sd"])
        Application.objects.get_or_create(
            secure_element=se,
            aid=job.params["instance_aid"],
            defaults={
                "security_domain": sd,
                "owner": sd.owner,
                "load_file_aid": job.params["load_file_aid"],
                "module_aid": job.params["module_aid"],
                "life_cycle": "SELECTABLE",
            },
        )
    elif name == "personalize_app":
        Application.objects.filter(secure_element=se, aid=job.params["instance_aid"]).update(
            life_cycle="PERSONALIZED"
        )
    elif name == "delete_app":
        Application.objects.filter(secure_element=se, aid=job.params["instance_aid"]).delete()
    elif name in ("lock", "unlock"):
        aid = job.params["aid"]
        locked = name == "lock"
        sd = SecurityDomain.objects.filter(secure_element=se, aid=aid).first()
        if sd is not None:
            sd.life_cycle = SDLifeCycle.LOCKED if locked else SDLifeCycle.PERSONALIZED
            sd.save(update_fields=["life_cycle"])
        Application.objects.filter(secure_element=se, aid=aid).update(
            life_cycle="LOCKED" if locked else "SELECTABLE"
        )
    elif name == "casd_personalize":
        details.update(_casd_on_card(job))
    elif name == "relay_key_package":
        details.update(_provider_keyset(job, outcome))
    elif name == "scp11_authenticate":
        details.update({"sd": job.params["sd"], "variant": job.params["variant"], "awaiting_input": True})
    elif name == "scp11_deliver":
        details.update(_provider_keyset_scp11(job))
    elif name == "run_script":
        details.update({"sd": job.params["sd"], "commands": len(job.params["commands"])})
    elif name == "read_status" and outcome is not None:
        from jobs.compiler.inventory import parse_inventory
        from jobs.reconcile import reconcile_inventory

        details["changes"] = reconcile_inventory(job, parse_inventory(outcome))
    audit_record(
        actor=None,
        tag=AuditTag.JOB_STEP,
        target=job,
        details=details,
        concerns=[o for o in (job.requested_by_id, job.beneficiary_id, se.issuer_id) if o],
    )


def _casd_on_card(job: Job) -> dict[str, Any]:
    """The SE holds its CASD certificate, the CA key and the revoked serials now."""
    from django.utils import timezone

    from keys.models import Certificate

    Certificate.objects.filter(
        pk=job.params["certificate_id"], secure_element=job.secure_element, on_card_at__isnull=True
    ).update(on_card_at=timezone.now())
    result = {
        "certificate_serial": job.params["certificate_serial"],
        "ca_identifier": job.params["ca_identifier"],
        "revoked": len(job.params["revoked"]),
    }
    job.result = {**job.result, **result}
    job.save(update_fields=["result"])
    return result


def _provider_keyset(job: Job, outcome: ScriptOutcome | None) -> dict[str, Any]:
    """A confidential key load confirmed by the card: record the key set in the provider's custody
    (KVN, length, KCVs, no key material), supersede any live set of that KVN on the SD (the card
    replaced it), keep the card's receipt for the provider, and drop the package."""
    from gp.keyload import KeyLoadError, parse_receipt_response
    from keys.models import KeyCustody

    se = job.secure_element
    params = job.params
    sd = SecurityDomain.objects.get(secure_element=se, aid=params["sd"])
    receipt = ""
    if outcome is not None and outcome.results:
        try:
            receipt = parse_receipt_response(outcome.results[-1].response.data).hex().upper()
        except KeyLoadError:
            receipt = ""
    kvn, kcvs = int(params["kvn"]), params["kcvs"]
    _record_provider_keyset(job, sd, kvn=kvn, key_length=int(params["key_length"]), kcvs=kcvs)
    result = {"receipt": receipt, "kvn": kvn, "counter": int(params["counter"]), "kcvs": kcvs}
    job.result = {**job.result, **result}
    job.secrets_sealed = None  # the package is not needed any more (the step keeps it sealed)
    job.save(update_fields=["result", "secrets_sealed"])
    return {"sd": sd.aid, "kvn": kvn, "custody": KeyCustody.PROVIDER, "receipt": bool(receipt)}


def _provider_keyset_scp11(job: Job) -> dict[str, Any]:
    """A key set delivered over the provider's own SCP11a session, confirmed by the card's KVN and
    KCVs: recorded in the provider's custody (no key material), like a package's."""
    from keys.models import KeyCustody

    params = job.params
    sd = SecurityDomain.objects.get(secure_element=job.secure_element, aid=params["sd"])
    kvn, kcvs = int(params["kvn"]), params["kcvs"]
    _record_provider_keyset(job, sd, kvn=kvn, key_length=int(params["key_length"]), kcvs=kcvs)
    job.result = {**job.result, "kvn": kvn, "kcvs": kcvs}
    job.save(update_fields=["result"])
    return {"sd": sd.aid, "kvn": kvn, "custody": KeyCustody.PROVIDER, "scp11": True}


def _record_provider_keyset(
    job: Job, sd: SecurityDomain, *, kvn: int, key_length: int, kcvs: dict[str, str]
) -> Any:
    """The provider-held KeySet (KVN, length, KCVs, no key material); any live set of that KVN on the
    SD is superseded (the card replaced it). Audited as ``keyset:import`` for the SD's owner."""
    from keys.models import KeyCustody, KeySet, KeySetStatus

    se = job.secure_element
    actor = engine_actor(sd.owner)
    for old in sd.key_sets.filter(kvn=kvn).exclude(status=KeySetStatus.DESTROYED):
        _retire(sd, old)
    keyset = KeySet.objects.create(
        owner=sd.owner,
        security_domain=sd,
        kvn=kvn,
        key_length=key_length,
        sealed=b"",
        custody=KeyCustody.PROVIDER,
        kcv_enc=kcvs["enc"],
        kcv_mac=kcvs["mac"],
        kcv_dek=kcvs["dek"],
        status=KeySetStatus.ACTIVE,
        sequence_counter=None,
    )
    audit_record(
        actor=actor,
        tag=AuditTag.KEYSET_IMPORT,
        target=keyset,
        details={
            "sd": sd.aid,
            "kvn": kvn,
            "custody": KeyCustody.PROVIDER,
            "key_length": keyset.key_length,
            "kcv": kcvs,
            "job": str(job.id),
        },
        concerns=[o for o in (sd.owner_id, job.requested_by_id, se.issuer_id) if o],
    )
    return keyset


def _forget_sd(sd: SecurityDomain) -> None:
    for child in sd.children.all():
        _forget_sd(child)
    for keyset in sd.key_sets.exclude(status="destroyed"):
        _retire(sd, keyset)
    Application.objects.filter(security_domain=sd).delete()
    sd.jobs.update(target_sd=None)
    sd.delete()


def _retire(sd: SecurityDomain, keyset: Any) -> None:
    """The card no longer holds this key set: destroy our copy too (through ``retired`` if needed)."""
    key_services.keyset_set_status(
        actor=engine_actor(sd.owner), keyset=keyset, from_status=keyset.status, to_status="destroyed"
    )
