"""A switch whose new provider loads its own keys (keys_mode "confidential"): the saga waits for the
provider's package, adopts the provider's own load job, and ends with Tessera holding no usable key
of the new SD. Then the issuer-initiated (lease) switches and their consent rules."""

from __future__ import annotations

import os
from typing import Any

import pytest
from cryptography import x509
from django.test import Client

from gp import gpcert, keyload
from jobs.models import Job
from jobs.services import job_request
from keys import ca as ca_services
from keys.models import KeySet
from switches.models import Switch
from switches.services import switch_request
from tenants.access import Actor
from tenants.consent import consent_decide
from tenants.models import Consent, Contract, MemberRole
from tests.support.ca import ca_actor, make_ca, make_csr
from tests.switches.conftest import APP, NEW_SD, OLD_SD, run_job

pytestmark = pytest.mark.django_db(transaction=True)


def _drive(s: Any, switch: Switch, rounds: int = 80) -> Switch:
    client = Client()
    for _ in range(rounds):
        answer = s.w.gateway.exchange(client)
        switch.refresh_from_db()
        if (
            not answer.work
            and not s.w.gateway.pending
            and (switch.is_final or switch.state == "awaiting_keys")
        ):
            break
    return switch


@pytest.fixture
def cs(sworld: Any) -> Any:
    """The SE's CASD certified and personalised; the new provider holds an OCE certificate."""
    s = sworld
    make_ca()
    casd_cert = ca_services.casd_certify(
        actor=ca_actor(), secure_element=s.w.se, public_key=s.w.gateway.card.casd_public_key()
    )
    run_job(s.w, s.w.sei_actor, "casd_personalize", {})
    oce_key, csr = make_csr()
    oce = ca_services.oce_request(actor=s.new_provider_actor, csr_pem=csr)
    root_key = x509.load_der_x509_certificate(bytes(oce.issuer.root_certificate)).public_key()
    leaf = gpcert.verify_chain([bytes(casd_cert.gp_der)], root_key)  # the provider checks the SE
    s.oce_key, s.oce, s.casd_key, s.se_id = oce_key, oce, leaf.public_key, leaf.subject_identifier
    return s


def _package(s: Any, kvn: int = 0x30) -> Any:
    keys = (os.urandom(16), os.urandom(16), os.urandom(16))
    built = keyload.build_package_with_receipt(
        casd_public_key=s.casd_key,
        se_id=s.se_id,
        sd_aid=bytes.fromhex(NEW_SD),
        kvn=kvn,
        keys=keys,
        counter=1,
        oce_private_key=s.oce_key,
        oce_certificates=[bytes(s.oce.gp_der)],
    )
    return built, keys


def test_the_new_provider_loads_its_own_keys_and_tessera_ends_blind_to_its_sd(cs):
    s = cs
    switch = switch_request(
        actor=s.subscriber_actor,
        device=s.w.device,
        new_provider="greenco",
        new_sd_aid=NEW_SD,
        app={"instance_aid": APP, "data": [{"dgi": "0101", "value": "CAFE"}]},
    )
    switch = _drive(s, switch)
    assert (switch.state, switch.step) == ("awaiting_keys", "load_keys")
    assert Contract.objects.get(pk=s.contract.pk).status == "active"  # the old provider still serves
    # the new provider's tooling replaces the SD's first key set with keys only it knows
    built, keys = _package(s, kvn=0x30)
    job = job_request(
        actor=s.new_provider_actor,
        device=s.w.device,
        kind="load_keys_confidential",
        params={"sd": NEW_SD, "package": built.package.hex()},
    )
    switch = _drive(s, switch)
    job.refresh_from_db()
    assert job.state == "succeeded"
    keyload.verify_receipt(bytes.fromhex(job.result["receipt"]), expected_receipt=built.expected_receipt)
    assert switch.state == "completed", (switch.error_code, switch.error_message, switch.log)
    assert [e["step"] for e in switch.log][-4:] == ["load_keys", "verify", "delete_old:0", "finish"]
    assert next(e for e in switch.log if e["step"] == "load_keys")["job"] == str(job.pk)
    new_sets = KeySet.objects.filter(security_domain__aid=NEW_SD, status="active")
    assert [(k.custody, bytes(k.sealed or b"")) for k in new_sets] == [("provider", b"")]
    # nothing of the provider's keys in any job row
    dump = repr(list(Job.objects.values_list("params", "result")))
    assert not any(k.hex() in dump.lower() for k in keys)
    assert OLD_SD not in {bytes(e.aid).hex().upper() for e in s.w.gateway.card.registry.applications}


def test_a_provider_load_that_fails_on_the_card_rolls_the_switch_back(cs):
    s = cs
    switch = switch_request(
        actor=s.subscriber_actor, device=s.w.device, new_provider="greenco", new_sd_aid=NEW_SD
    )
    switch = _drive(s, switch)
    built, _ = _package(s)
    job_request(
        actor=s.new_provider_actor,
        device=s.w.device,
        kind="load_keys_confidential",
        params={"sd": NEW_SD, "package": built.package.hex()},
    )
    real = s.w.gateway.card.transmit
    s.w.gateway.card.transmit = lambda apdu: b"\x69\x85" if apdu[1] == 0xD8 or apdu[1] == 0xE2 else real(apdu)
    switch = _drive(s, switch, rounds=6)
    s.w.gateway.card.transmit = real
    switch = _drive(s, switch)
    assert switch.state == "rolled_back", switch.log
    assert Contract.objects.get(pk=s.contract.pk).status == "active"


def _lease(s: Any, *, consent_required: bool) -> None:
    Contract.objects.filter(pk=s.contract.pk).update(switch_allowed=False, consent_required=consent_required)


def test_the_lessor_reassigns_a_kit_whose_contract_needs_no_consent_and_the_subscriber_is_informed(sworld):
    from audit.models import AuditEventOrg

    s = sworld
    _lease(s, consent_required=False)
    issuer = Actor(user=s.w.users["sei"], org=s.w.sei, member_role=MemberRole.OWNER)
    switch = switch_request(actor=issuer, device=s.w.device, new_provider="greenco", keys_mode="portal")
    assert switch.initiator == "issuer"
    switch = _drive(s, switch)
    assert switch.state == "completed", switch.log
    assert not Consent.objects.filter(grantee=s.new_provider).exists()  # none asked, none needed
    seen = AuditEventOrg.objects.filter(org_id=s.subscriber.pk, event__target_id=str(switch.pk))
    assert seen.filter(event__tag="switch:state").exists()  # the subscriber is informed


def test_the_subscriber_may_not_switch_a_leased_kit(sworld):
    from switches.errors import SwitchNotAllowed

    s = sworld
    _lease(s, consent_required=False)
    with pytest.raises(SwitchNotAllowed, match="does not allow switching"):
        switch_request(
            actor=s.subscriber_actor, device=s.w.device, new_provider="greenco", keys_mode="portal"
        )


def test_an_issuer_switch_on_a_consent_contract_waits_for_the_subscriber_and_a_denial_rolls_back(sworld):
    s = sworld
    issuer = Actor(user=s.w.users["sei"], org=s.w.sei, member_role=MemberRole.OWNER)
    switch = switch_request(actor=issuer, device=s.w.device, new_provider="greenco", keys_mode="portal")
    switch = _drive(s, switch, rounds=5)
    job = Job.objects.get(pk=switch.current_job_id)
    assert (switch.step, job.state) == ("create_sd", "awaiting_consent")
    # the new provider's request was put to the subscriber with the switch
    consent = Consent.objects.get(grantee=s.new_provider, device=s.w.device, status="pending")
    assert consent.sd_aid == switch.new_sd_aid
    consent_decide(actor=s.subscriber_actor, consent=consent, approve=False)
    switch = _drive(s, switch)
    assert switch.state == "rolled_back"
    assert Job.objects.get(pk=job.pk).state == "rejected"
    assert Contract.objects.get(pk=s.contract.pk).status == "active"
