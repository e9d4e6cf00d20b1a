"""The device page shows a TEE's security domains like an SE's, with the keys in its token to the
SD's owner only (a service master key is its owner's alone); the job page of a TEE job renders."""

from __future__ import annotations

import os

from django.test import Client

from agent.tokenops import key_check_value
from gp import tokenwrap
from jobs.models import JobState
from jobs.services import job_request
from keys.models import ServiceMasterKey

AID = "A0000001515350AA01"


def _page(user, path):
    client = Client()
    client.force_login(user)
    return client.get(path)


def test_the_device_page_shows_the_tee_sds_and_the_token_keys_to_their_owner_only(teeworld):
    world = teeworld
    job = job_request(
        actor=world.tsm_for_sei,
        device=world.device,
        kind="create_security_domain",
        params={"aid": AID, "owner": "supplier"},
    )
    world.gateway.run(Client())
    key = os.urandom(16)
    envelope = tokenwrap.wrap_for_token(
        key, world.gateway.token.receive_public_point(), f"tessera/sd/{AID}/40"
    )
    job_request(
        actor=world.provider_actor,
        device=world.device,
        kind="load_keys_confidential",
        params=world.confidential(envelope, key_check_value(key)),
    )
    world.gateway.run(Client())
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED
    active = ServiceMasterKey.objects.get(security_domain__aid=AID, status="active")
    retired = ServiceMasterKey.objects.get(security_domain__aid=AID, status="retired")
    owner = world.provider_actor.user
    page = _page(owner, f"/o/supplier/devices/{world.device.pk}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Trusted Execution Environment" in html and AID in html
    assert "Keys in the TEE" in html and active.kcv in html and "provider-held" in html
    assert retired.kcv in html  # the portal-held key it replaced, retired
    # the issuer sees the SD on its TEE, never the provider's key check values
    issuer = _page(world.sei_actor.user, f"/o/sei/devices/{world.device.pk}/")
    assert issuer.status_code == 200
    assert AID in issuer.content.decode() and active.kcv not in issuer.content.decode()
    # the job page of a TEE job renders for the requester
    tsm = _page(world.tsm_for_sei.user, f"/o/tsm/jobs/{job.pk}/?on_behalf_of=sei")
    assert tsm.status_code == 200, tsm.content[:500]
