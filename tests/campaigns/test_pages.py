"""Campaign pages: the owner creates one with the form and runs it with buttons; the detail shows the
progress fragment that live events refresh; the new provider's page has no old provider; live
events reach the owner's and the new provider's streams, never the old provider's as campaigns."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.test import Client

from campaigns.models import Campaign
from tests.campaigns.conftest import Fleet
from tests.jobs.test_live import events_socket

pytestmark = pytest.mark.django_db(transaction=True)


def _client(fl: Fleet, org: str) -> Client:
    client = Client()
    client.force_login(fl.w.users[org])
    return client


def test_the_owner_creates_a_campaign_with_the_form_and_pauses_resumes_it_with_buttons(fleet: Fleet) -> None:
    fl = fleet
    sei = _client(fl, "sei")
    page = sei.get("/o/sei/campaigns/")
    assert page.status_code == 200 and b'id="campaign-create"' in page.content
    # a form naming both serials and a provider to select by is refused, with the reason
    both = sei.post(
        "/o/sei/campaigns/",
        {
            "new_provider": "greenco",
            "devices": "GW-0001",
            "old_provider": "supplier",
            "success_threshold": 95,
            "error_threshold": 5,
            "rate_per_minute": 60,
            "max_in_flight": 10,
            "keys_mode": "portal",
        },
    )
    assert both.status_code == 400 and b"not both" in both.content
    # an unknown serial comes back with the service's message
    unknown = sei.post(
        "/o/sei/campaigns/",
        {
            "new_provider": "greenco",
            "devices": "GW-0001\nNOPE",
            "success_threshold": 95,
            "error_threshold": 5,
            "rate_per_minute": 60,
            "max_in_flight": 10,
            "keys_mode": "portal",
        },
    )
    assert unknown.status_code == 400 and b"NOPE" in unknown.content
    assert not Campaign.objects.exists()
    # when the owner creates one by the current provider, in groups of three, started at once
    resp = sei.post(
        "/o/sei/campaigns/",
        {
            "name": "Takeover",
            "new_provider": "greenco",
            "old_provider": "supplier",
            "device_kind": "meter",
            "group_size": 3,
            "success_threshold": 95,
            "error_threshold": 5,
            "rate_per_minute": 60,
            "max_in_flight": 2,
            "keys_mode": "portal",
            "start": "on",
        },
    )
    c = Campaign.objects.get()
    assert resp.status_code == 302 and resp["Location"] == f"/o/sei/campaigns/{c.pk}/"
    assert (c.state, c.group_count, c.max_in_flight, c.success_threshold) == ("running", 2, 2, 0.95)
    detail = sei.get(resp["Location"])
    assert detail.status_code == 200
    html = detail.content.decode()
    assert 'data-live-campaign="' + str(c.pk) in html and "Pause" in html and "Takeover" in html
    # pausing with htmx answers the fragment in its new state
    frag = sei.post(f"/o/sei/campaigns/{c.pk}/pause/", HTTP_HX_REQUEST="true")
    assert frag.status_code == 200 and b'data-state="paused"' in frag.content and b"Resume" in frag.content
    # a second pause is a conflict shown in place
    again = sei.post(f"/o/sei/campaigns/{c.pk}/pause/", HTTP_HX_REQUEST="true")
    assert again.status_code == 409 and b"cannot be paused" in again.content
    # resuming without htmx goes back to the page
    back = sei.post(f"/o/sei/campaigns/{c.pk}/resume/")
    assert back.status_code == 302
    fl.run(until=lambda: Campaign.objects.get(pk=c.pk).is_final)
    progress = sei.get(f"/o/sei/campaigns/{c.pk}/progress/")
    assert b'data-state="completed"' in progress.content and b'data-count="completed">6<' in progress.content


def test_the_new_providers_page_shows_progress_without_the_old_provider(fleet: Fleet) -> None:
    from campaigns.services import campaign_create, campaign_start

    fl = fleet
    c = campaign_create(
        actor=fl.w.sei_actor,
        new_provider="greenco",
        filter={"old_provider": "supplier"},
        name="From supplier",
    )
    campaign_start(actor=fl.w.sei_actor, campaign=c)
    fl.run(until=lambda: Campaign.objects.get(pk=c.pk).is_final)
    greenco = _client(fl, "greenco")
    for url in (
        "/o/greenco/campaigns/",
        f"/o/greenco/campaigns/{c.pk}/",
        f"/o/greenco/campaigns/{c.pk}/progress/",
    ):
        resp = greenco.get(url)
        assert resp.status_code == 200, url
        assert b"supplier" not in resp.content.lower(), url
        assert b"campaign-actions" not in resp.content and b"campaign-create" not in resp.content
    assert greenco.post(f"/o/greenco/campaigns/{c.pk}/cancel/").status_code == 403
    for org in ("stranger", "supplier"):
        assert _client(fl, org).get(f"/o/{org}/campaigns/{c.pk}/").status_code == 404


def test_campaign_events_reach_the_owner_and_new_provider_streams_live(fleet: Fleet, settings: Any) -> None:
    from campaigns.services import campaign_create, campaign_start

    # Room for every job and switch event of the run besides the campaign's (the default is 100).
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 10_000}}
    }
    fl = fleet
    users = fl.w.users
    sockets = {org: events_socket(users[org], org) for org in ("sei", "greenco", "supplier", "stranger")}

    def run() -> Campaign:
        c = campaign_create(actor=fl.w.sei_actor, new_provider="greenco", devices=fl.serials[:2])
        campaign_start(actor=fl.w.sei_actor, campaign=c)
        fl.run(until=lambda: Campaign.objects.get(pk=c.pk).is_final)
        return Campaign.objects.get(pk=c.pk)

    async def campaign_events(socket: Any) -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        while not seen or seen[-1]["state"] != "completed":
            event = await socket.receive_json_from(timeout=5)
            if event.get("kind") == "campaign":
                seen.append(event)
        return seen

    async def scenario() -> None:
        try:
            for socket in sockets.values():
                assert (await socket.connect(timeout=5))[0]
            c = await database_sync_to_async(run)()
            assert c.state == "completed"
            for org in ("sei", "greenco"):
                events = await campaign_events(sockets[org])
                assert events[0]["event"] == "created" and events[-1]["event"] == "completed", org
                assert events[-1]["counts"]["completed"] == 2 and {e["campaign"] for e in events} == {
                    str(c.pk)
                }
            # the old provider hears that it lost devices (switch events), never about the campaign
            supplier = sockets["supplier"]
            while not await supplier.receive_nothing(timeout=0.5):
                event = await supplier.receive_json_from(timeout=1)
                assert event.get("kind") != "campaign", event
            assert await sockets["stranger"].receive_nothing(timeout=0.5)
        finally:
            for socket in sockets.values():
                await socket.disconnect()

    async_to_sync(scenario)()
