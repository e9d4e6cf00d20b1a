"""The jobs pages: who sees a job, requesting one from the device page, following and canceling it."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from jobs.forms import DEMO_INSTANCE_AID
from jobs.models import Job, JobState
from tenants.models import Mandate

NEW_AID = "A0000001515350AA01"


@pytest.fixture(autouse=True)
def fast_password_hashing(settings: Any) -> None:
    """The world fixture creates many users; a cheap hasher keeps page tests quick."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def text(resp: Any) -> str:
    return resp.content.decode()


def create_sd_form(**overrides: Any) -> dict[str, Any]:
    return {
        "kind": "create_security_domain",
        "mode": "precomputed",
        "aid": NEW_AID,
        "owner": "provider-sp",
        "privileges": ["security_domain", "authorized_management"],
        "key_length": "16",
        **overrides,
    }


@pytest.fixture
def tsm_job(world: Any) -> Job:
    """The main demo path, through the form: the TSM, acting for the SE issuer, creates a security
    domain for the provider (which has mandated the TSM too)."""
    Mandate.objects.create(grantor=world.provider, grantee=world.collaborator, actions=["sd.create"])
    resp = logged_in(world.collaborator_user).post(
        f"/o/collab-tsm/devices/{world.device.pk}/jobs/new/",
        {**create_sd_form(), "on_behalf_of": "owner-sei"},
    )
    assert resp.status_code == 302, text(resp)[:800]
    job = Job.objects.get()
    assert resp["Location"] == f"/o/collab-tsm/jobs/{job.pk}/?on_behalf_of=owner-sei"
    return job


# --- who sees what ----------------------------------------------------------------------------------


def test_requesting_through_the_form_records_who_asked_for_whom(world, tsm_job):
    assert tsm_job.kind == "create_security_domain"
    assert tsm_job.state == JobState.QUEUED
    assert tsm_job.requested_by == world.collaborator
    assert tsm_job.on_behalf_of == world.owner
    assert tsm_job.beneficiary == world.provider
    assert tsm_job.params["aid"] == NEW_AID


@pytest.mark.parametrize(
    ("who", "org", "may_cancel"),
    [
        ("collaborator_user", "collab-tsm", True),  # the requester, acting for itself afterwards
        ("owner_user", "owner-sei", True),  # the SE issuer it was requested for
        ("provider_user", "provider-sp", True),  # the beneficiary
        ("subscriber_user", "home-ss", False),  # lives with the device: sees, may not cancel
    ],
)
def test_the_job_pages_render_for_every_party_to_the_job(world, tsm_job, who, org, may_cancel):
    client = logged_in(getattr(world, who))
    detail = client.get(f"/o/{org}/jobs/{tsm_job.pk}/")
    assert detail.status_code == 200, text(detail)[:500]
    body = text(detail)
    assert "Create security domain" in body and world.device.serial in body
    assert "Collaborator TSM" in body and "Provider SP" in body and "Owner SEI" in body
    assert 'id="job-state"' in body and "Queued" in body
    assert "install_sd" in body and "verify_new_keys" in body  # the planned steps
    assert ("Cancel job" in body) is may_cancel
    timeline = client.get(f"/o/{org}/jobs/{tsm_job.pk}/timeline/")
    assert timeline.status_code == 200
    assert "<html" not in text(timeline) and 'id="job-live"' in text(timeline)
    listing = client.get(f"/o/{org}/jobs/")
    assert listing.status_code == 200 and str(tsm_job.pk) in text(listing)


def test_the_nav_bar_links_to_the_jobs(world):
    body = text(logged_in(world.owner_user).get("/o/owner-sei/"))
    assert 'href="/o/owner-sei/jobs/"' in body


def test_the_stranger_gets_404_on_every_job_page_and_on_the_device_job_form(world, tsm_job):
    client = logged_in(world.stranger_user)
    for org in ("owner-sei", "stranger-sp"):
        for path in (
            f"/o/{org}/jobs/{tsm_job.pk}/",
            f"/o/{org}/jobs/{tsm_job.pk}/timeline/",
            f"/o/{org}/jobs/{tsm_job.pk}/cancel/",
            f"/o/{org}/devices/{world.device.pk}/jobs/",
            f"/o/{org}/devices/{world.device.pk}/jobs/new/",
        ):
            assert client.get(path).status_code == 404, path
        assert client.post(f"/o/{org}/jobs/{tsm_job.pk}/cancel/").status_code == 404
        resp = client.post(
            f"/o/{org}/devices/{world.device.pk}/jobs/new/", create_sd_form(aid="A0000001515350AA02")
        )
        assert resp.status_code == 404
    assert client.get("/o/owner-sei/jobs/").status_code == 404
    assert str(tsm_job.pk) not in text(client.get("/o/stranger-sp/jobs/"))
    assert Job.objects.count() == 1
    assert Job.objects.get().state == JobState.QUEUED


def test_the_device_page_lists_the_devices_jobs_and_offers_the_form(world, tsm_job):
    body = text(logged_in(world.owner_user).get(f"/o/owner-sei/devices/{world.device.pk}/"))
    jobs = body[body.index('id="device-jobs"') :]
    assert f"/o/owner-sei/jobs/{tsm_job.pk}/" in jobs and "Queued" in jobs
    assert 'id="job-form"' in body
    assert 'data-ws-path="/ws/o/owner-sei/events/"' in body
    fragment = logged_in(world.owner_user).get(f"/o/owner-sei/devices/{world.device.pk}/jobs/")
    assert fragment.status_code == 200 and "<html" not in text(fragment)
    assert f"/o/owner-sei/jobs/{tsm_job.pk}/" in text(fragment)


def test_an_auditor_sees_the_jobs_but_is_not_offered_the_form(world, tsm_job):
    client = logged_in(world.owner_auditor)
    body = text(client.get(f"/o/owner-sei/devices/{world.device.pk}/"))
    assert 'id="device-jobs"' in body and 'id="job-form"' not in body
    assert client.get(f"/o/owner-sei/devices/{world.device.pk}/jobs/new/").status_code == 403
    assert "Cancel job" not in text(client.get(f"/o/owner-sei/jobs/{tsm_job.pk}/"))
    assert client.post(f"/o/owner-sei/jobs/{tsm_job.pk}/cancel/").status_code == 403


def test_the_list_filters_by_state_and_refuses_an_unknown_one(world, tsm_job):
    client = logged_in(world.owner_user)
    assert str(tsm_job.pk) in text(client.get("/o/owner-sei/jobs/?state=queued"))
    assert str(tsm_job.pk) not in text(client.get("/o/owner-sei/jobs/?state=succeeded"))
    resp = client.get("/o/owner-sei/jobs/?state=bogus")
    assert resp.status_code == 400 and "Unknown state" in text(resp)
    assert str(tsm_job.pk) in text(client.get(f"/o/owner-sei/jobs/?device={world.device.pk}"))
    assert client.get("/o/owner-sei/jobs/?device=not-a-uuid").status_code == 400


# --- requesting: bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "org", "data", "status", "message"),
    [
        ("owner_user", "owner-sei", {"kind": "bogus"}, 400, "Select a valid choice"),
        ("owner_user", "owner-sei", create_sd_form(aid="XYZ"), 400, "aid must be an AID"),
        ("owner_user", "owner-sei", create_sd_form(owner="nobody"), 400, "owner must name an active"),
        ("owner_user", "owner-sei", create_sd_form(privileges=[]), 400, "privileges must be a list"),
        ("owner_user", "owner-sei", create_sd_form(aid="A000000151535041AA"), 409, "already exists"),
        ("provider_user", "provider-sp", create_sd_form(), 403, "Only Owner SEI"),
        (
            "owner_user",
            "owner-sei",
            {
                "kind": "personalize_application",
                "mode": "precomputed",
                "key_length": "16",
                "dgis": "nonsense",
            },
            400,
            "Line 1",
        ),
        (
            "owner_user",
            "owner-sei",
            {
                "kind": "personalize_application",
                "mode": "precomputed",
                "key_length": "16",
                "dgis": "0101: ABC",
                "instance_aid": DEMO_INSTANCE_AID,
            },
            400,
            "value must be hex",
        ),
    ],
    ids=[
        "unknown-kind",
        "bad-aid",
        "unknown-owner",
        "no-privileges",
        "existing-aid",
        "not-the-issuer",
        "bad-dgi-line",
        "bad-dgi-value",
    ],
)
def test_bad_form_input_answers_with_its_status_and_says_what_was_wrong(
    world, user, org, data, status, message
):
    client = logged_in(getattr(world, user))
    resp = client.post(f"/o/{org}/devices/{world.device.pk}/jobs/new/", data)
    assert resp.status_code == status, text(resp)[:800]
    assert message in text(resp)
    assert 'id="job-form"' in text(resp)  # the form comes back with what was typed
    # the same with htmx: only the form, swapped in place
    resp = client.post(f"/o/{org}/devices/{world.device.pk}/jobs/new/", data, headers={"HX-Request": "true"})
    assert resp.status_code == status
    assert message in text(resp) and "<html" not in text(resp)
    assert not Job.objects.exists()


def test_with_htmx_a_requested_job_sends_the_browser_to_its_page(world):
    resp = logged_in(world.owner_user).post(
        f"/o/owner-sei/devices/{world.device.pk}/jobs/new/",
        {"kind": "read_status", "mode": "interactive", "sd": "", "key_length": "16"},
        headers={"HX-Request": "true"},
    )
    job = Job.objects.get()
    assert resp.status_code == 204
    assert resp["HX-Redirect"] == f"/o/owner-sei/jobs/{job.pk}/"
    assert job.params == {"sd": world.isd.aid} and job.mode == "interactive"


def test_fields_of_other_kinds_are_ignored(world):
    logged_in(world.owner_user).post(
        f"/o/owner-sei/devices/{world.device.pk}/jobs/new/",
        {
            "kind": "lock",
            "mode": "precomputed",
            "aid": "a0 00 00 01 51 53 50 41 aa",
            "owner": "x",
            "instance_aid": "zz",
            "key_length": "16",
        },
    )
    assert Job.objects.get().params == {"aid": "A000000151535041AA"}


# --- canceling --------------------------------------------------------------------------------------


def test_the_requester_cancels_through_the_page_and_a_second_cancel_is_a_conflict(world, tsm_job):
    client = logged_in(world.collaborator_user)
    resp = client.post(f"/o/collab-tsm/jobs/{tsm_job.pk}/cancel/")
    assert resp.status_code == 302 and resp["Location"] == f"/o/collab-tsm/jobs/{tsm_job.pk}/"
    tsm_job.refresh_from_db()
    assert tsm_job.state == JobState.CANCELED
    body = text(client.get(resp["Location"]))
    assert "Canceled" in body and "Cancel job" not in body and "canceled by request" in body
    again = client.post(f"/o/collab-tsm/jobs/{tsm_job.pk}/cancel/")
    assert again.status_code == 409 and "already ended" in text(again)


def test_canceling_with_htmx_returns_the_refreshed_progress(world, tsm_job):
    resp = logged_in(world.provider_user).post(
        f"/o/provider-sp/jobs/{tsm_job.pk}/cancel/", headers={"HX-Request": "true"}
    )
    assert resp.status_code == 200
    assert 'id="job-live"' in text(resp) and "Canceled" in text(resp) and "<html" not in text(resp)


# --- a run on a simulated gateway -------------------------------------------------------------------


def test_a_job_requested_from_the_device_page_runs_and_its_page_shows_it_succeeded(jobworld):
    # given the TSM acting for the SE issuer on the device page
    tsm = logged_in(jobworld.users["tsm"])
    device_page = tsm.get(f"/o/tsm/devices/{jobworld.device.pk}/?on_behalf_of=sei")
    assert device_page.status_code == 200 and 'id="job-form"' in text(device_page)
    # when it asks for a security domain for the provider, interactively, and the gateway polls
    resp = tsm.post(
        f"/o/tsm/devices/{jobworld.device.pk}/jobs/new/",
        {
            "on_behalf_of": "sei",
            "kind": "create_security_domain",
            "mode": "interactive",
            "aid": NEW_AID,
            "owner": "supplier",
            "privileges": ["security_domain", "authorized_management"],
            "key_length": "16",
        },
    )
    assert resp.status_code == 302, text(resp)[:800]
    jobworld.gateway.run(Client())
    # then the job page shows it succeeded, step by step, with status words and never an APDU
    job = Job.objects.get()
    assert job.state == JobState.SUCCEEDED, job.error_message
    body = text(tsm.get(resp["Location"]))
    state = re.search(r'id="job-state"[^>]*>([^<]+)<', body)
    assert state and state.group(1) == "Succeeded"
    assert body.count('data-state="completed"') == 2  # install_sd, verify_new_keys
    assert "9000" in body and "interactive" in body
    for step in job.steps.all():
        for command in step.commands:
            assert command["apdu"] not in body
    # and the provider, as beneficiary, sees the same job on its own page
    provider = logged_in(jobworld.users["supplier"])
    assert "Succeeded" in text(provider.get(f"/o/supplier/jobs/{job.pk}/"))
