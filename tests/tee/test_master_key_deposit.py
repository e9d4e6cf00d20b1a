"""A TEE SD's master keys are the token's, recorded by the token-ops jobs: the master-key deposit
API refuses them (409 master_key_on_tee) so the records never disagree with the token."""

from __future__ import annotations

from django.test import Client

from audit.models import AuditEvent, AuditTag
from devices.models import SecurityDomain
from jobs.models import JobState
from jobs.services import job_request
from keys.models import ServiceMasterKey
from keys.sessionkeys import session_key_derive
from tests.conftest import client_for

AID = "A0000001515350CC01"


def test_a_deposit_for_a_tee_sd_is_409_and_changes_nothing(teeworld):
    world = teeworld
    job = job_request(
        actor=world.tsm_for_sei,
        device=world.device,
        kind="create_security_domain",
        params={"aid": AID, "owner": "supplier"},
    )
    world.gateway.run(Client())
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, (job.error_code, job.error_message)
    sd = SecurityDomain.objects.get(secure_element=world.se, aid=AID)
    before = list(ServiceMasterKey.objects.filter(security_domain=sd).values_list("pk", "status", "kcv"))
    events = AuditEvent.objects.filter(tag=AuditTag.MASTERKEY_REGISTER).count()
    url = f"/api/v1/orgs/supplier/security-domains/{sd.pk}/master-key/"
    key = "00112233445566778899AABBCCDDEEFF"
    for body in ({"key": key}, {"kcv": "A1B2C3", "key_length": 16}):
        resp = client_for(world.provider_actor.user).post(url, body, format="json")
        assert resp.status_code == 409, resp.content
        assert resp.json()["error"]["code"] == "master_key_on_tee"
        assert key.lower() not in resp.content.decode().lower()
    # the records still hold the key the token holds, and the session keys still derive from it
    assert (
        list(ServiceMasterKey.objects.filter(security_domain=sd).values_list("pk", "status", "kcv")) == before
    )
    assert AuditEvent.objects.filter(tag=AuditTag.MASTERKEY_REGISTER).count() == events
    assert session_key_derive(actor=world.provider_actor, security_domain=sd, service="meter", epoch=1)
    # someone who is not the SD's owner still gets 404 (the TEE check comes after ownership)
    resp = client_for(world.sei_actor.user).post(
        f"/api/v1/orgs/sei/security-domains/{sd.pk}/master-key/", {"key": key}, format="json"
    )
    assert resp.status_code == 404, resp.content
