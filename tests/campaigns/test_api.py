"""The campaigns API: the owner runs a campaign; the new provider sees its own part; a TSM acts
for the issuer under a covering mandate; everyone else gets 404; webhooks hear campaign.*."""

from __future__ import annotations

import json
from typing import Any

import pytest

from campaigns.models import Campaign
from notifications import services as hooks
from notifications.signing import verify
from tests import factories as f
from tests.campaigns.conftest import Fleet
from tests.conftest import client_for
from tests.notifications.conftest import Receiver, receiver  # noqa: F401  (the fixture)

pytestmark = pytest.mark.django_db(transaction=True)

BASE = "/api/v1/orgs/{org}/campaigns/"


def _url(org: str, suffix: str = "") -> str:
    return BASE.format(org=org) + suffix


def _post(fl: Fleet, org: str, body: Any, user: str | None = None, suffix: str = "") -> Any:
    return client_for(fl.w.users[user or org]).post(_url(org, suffix), body, format="json")


def test_the_owner_creates_starts_and_follows_a_campaign(fleet: Fleet) -> None:
    fl = fleet
    # when the issuer creates and starts a campaign over its six meters in groups of three
    resp = _post(
        fl, "sei", {"new_provider": "greenco", "devices": fl.serials, "group_size": 3, "start": True}
    )
    assert resp.status_code == 201, resp.content
    body = resp.json()
    assert (body["state"], body["groups"], body["group"]) == ("running", 2, 1)
    assert body["counts"]["total"] == 6 and body["counts"]["running"] == 3
    assert [g["total"] for g in body["per_group"]] == [3, 3]
    assert body["selection"] == {"devices": 6} and body["owner"] == "sei"
    # then it runs to the end and the detail and the targets say so
    fl.run(until=lambda: Campaign.objects.get(pk=body["id"]).is_final)
    detail = client_for(fl.w.users["sei"]).get(_url("sei", f"{body['id']}/")).json()
    assert detail["state"] == "completed" and detail["counts"]["completed"] == 6
    assert [g["completed"] for g in detail["per_group"]] == [3, 3]
    page = client_for(fl.w.users["sei"]).get(_url("sei", f"{body['id']}/targets/?limit=4")).json()
    assert page["count"] == 6 and len(page["results"]) == 4 and page["next"]
    assert [t["device"] for t in page["results"]] == fl.serials[:4]
    assert {t["state"] for t in page["results"]} == {"completed"} and all(
        t["switch"] for t in page["results"]
    )
    listed = client_for(fl.w.users["sei"]).get(_url("sei")).json()
    assert [c["id"] for c in listed["results"]] == [body["id"]]


def test_pause_resume_cancel_through_the_api_with_409_for_a_wrong_state(fleet: Fleet) -> None:
    fl = fleet
    c = _post(fl, "sei", {"new_provider": "greenco", "devices": fl.serials, "max_in_flight": 1}).json()
    assert c["state"] == "draft"
    assert _post(fl, "sei", {}, suffix=f"{c['id']}/pause/").status_code == 409
    assert _post(fl, "sei", {}, suffix=f"{c['id']}/start/").json()["state"] == "running"
    resp = _post(fl, "sei", {}, suffix=f"{c['id']}/resume/")
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "campaign_state"
    assert _post(fl, "sei", {}, suffix=f"{c['id']}/pause/").json()["state"] == "paused"
    assert _post(fl, "sei", {}, suffix=f"{c['id']}/resume/").json()["state"] == "running"
    done = _post(fl, "sei", {}, suffix=f"{c['id']}/cancel/").json()
    assert done["state"] == "canceled" and done["counts"]["canceled"] == 5
    assert _post(fl, "sei", {}, suffix=f"{c['id']}/cancel/").status_code == 409
    assert _post(fl, "sei", {"why": "x"}, suffix=f"{c['id']}/start/").status_code == 400


@pytest.mark.parametrize(
    "body, field",
    [
        ({"new_provider": "greenco", "devices": ["NO-SUCH"]}, "devices"),
        ({"new_provider": "greenco", "devices": ["STR-0001"]}, "devices"),
        ({"new_provider": "greenco"}, "devices"),
        (
            {"new_provider": "greenco", "devices": ["GW-0001"], "filter": {"old_provider": "supplier"}},
            "devices",
        ),
        ({"new_provider": "greenco", "devices": ["GW-0001", "GW-0001"]}, "devices"),
        ({"new_provider": "homes", "devices": ["GW-0001"]}, "new_provider"),
        ({"new_provider": "greenco", "filter": {"old_provider": "nobody"}}, "filter"),
        ({"new_provider": "greenco", "filter": {"service": "x"}}, "filter"),
        ({"new_provider": "greenco", "groups": [["GW-0001"], ["GW-0001"]]}, "groups"),
        ({"new_provider": "greenco", "groups": [["GW-0001"]], "group_size": 1}, "group_size"),
        ({"new_provider": "greenco", "devices": ["GW-0001"], "error_threshold": 1.5}, "error_threshold"),
        ({"new_provider": "greenco", "devices": ["GW-0001"], "rate_per_minute": 0}, "rate_per_minute"),
        ({"new_provider": "greenco", "devices": ["GW-0001"], "app": {"instance_aid": "XYZ"}}, "app"),
    ],
)
def test_bad_campaigns_are_refused_naming_the_field(
    small_fleet: Fleet, body: dict[str, Any], field: str
) -> None:
    fl = small_fleet
    # a device whose SE another issuer issued reads exactly like one that does not exist
    f.SecureElementFactory(device=f.DeviceFactory(serial="STR-0001"), issuer=fl.w.stranger)
    resp = _post(fl, "sei", body)
    assert resp.status_code == 400, resp.content
    err = resp.json()["error"]
    assert field in err.get("fields", {}), err
    assert not Campaign.objects.exists()


def test_the_new_provider_sees_its_part_and_never_the_old_provider(fleet: Fleet) -> None:
    fl = fleet
    c = _post(
        fl,
        "sei",
        {
            "new_provider": "greenco",
            "filter": {"old_provider": "supplier", "device_kind": "meter"},
            "name": "Take over from supplier",
            "start": True,
        },
    ).json()
    fl.break_card(fl.serials[0])
    fl.run(until=lambda: Campaign.objects.get(pk=c["id"]).is_final)
    greenco = client_for(fl.w.users["greenco"])
    listed = greenco.get(_url("greenco")).json()
    assert [x["id"] for x in listed["results"]] == [c["id"]]
    detail = greenco.get(_url("greenco", f"{c['id']}/"))
    assert detail.status_code == 200
    targets = greenco.get(_url("greenco", f"{c['id']}/targets/"))
    assert targets.status_code == 200 and targets.json()["count"] == 6
    for resp in (detail, targets):
        assert b"supplier" not in resp.content.lower()
    data = detail.json()
    assert "selection" not in data and "name" not in data and "reason" not in data
    assert all("reason" not in t for t in targets.json()["results"])
    # it follows, it does not run the campaign
    resp = greenco.post(_url("greenco", f"{c['id']}/cancel/"), {}, format="json")
    assert resp.status_code == 403


def test_strangers_and_the_old_provider_get_404(fleet: Fleet) -> None:
    fl = fleet
    c = _post(fl, "sei", {"new_provider": "greenco", "devices": fl.serials}).json()
    for org in ("stranger", "supplier"):
        client = client_for(fl.w.users[org])
        assert client.get(_url(org)).json()["results"] == []
        for suffix in ("", "targets/"):
            assert client.get(_url(org, f"{c['id']}/{suffix}")).status_code == 404
        for action in ("start", "pause", "resume", "cancel"):
            assert client.post(_url(org, f"{c['id']}/{action}/"), {}, format="json").status_code == 404
    assert Campaign.objects.get(pk=c["id"]).state == "draft"


def test_a_tsm_runs_a_campaign_for_the_issuer_only_with_a_mandate_covering_sd_create_and_delete(
    fleet: Fleet,
) -> None:
    from tenants.models import Mandate, MemberRole, OrgRole

    fl = fleet
    # the jobworld's mandate from the issuer to the TSM covers devices.view, sd.create, sd.delete
    resp = _post(
        fl, "tsm", {"new_provider": "greenco", "devices": fl.serials[:2]}, suffix="?on_behalf_of=sei"
    )
    assert resp.status_code == 201, resp.content
    c = Campaign.objects.get(pk=resp.json()["id"])
    assert (c.owner, c.created_by) == (fl.w.sei, fl.w.tsm)
    assert _post(fl, "tsm", {}, suffix=f"{c.pk}/start/?on_behalf_of=sei").json()["state"] == "running"
    # another TSM whose mandate lacks sd.delete sees nothing and may do nothing
    tsm2 = f.OrganisationFactory(slug="tsm2", roles=[OrgRole.TSM])
    fl.w.users["tsm2"] = f.MembershipFactory(
        org=tsm2, user=f.UserFactory(username="tsm2-user"), role=MemberRole.OWNER
    ).user
    Mandate.objects.create(grantor=fl.w.sei, grantee=tsm2, actions=["devices.view", "sd.create"])
    client = client_for(fl.w.users["tsm2"])
    assert client.get(_url("tsm2") + "?on_behalf_of=sei").status_code == 404
    assert client.get(_url("tsm2", f"{c.pk}/?on_behalf_of=sei")).status_code == 404
    resp = client.post(
        _url("tsm2") + "?on_behalf_of=sei", {"new_provider": "greenco", "devices": fl.serials}, format="json"
    )
    assert resp.status_code == 404
    assert Campaign.objects.count() == 1


def test_campaign_events_reach_the_owners_and_the_new_providers_webhooks_not_a_strangers(
    fleet: Fleet,
    receiver: Receiver,  # noqa: F811
    settings: Any,
) -> None:
    settings.EMBEDDED = True  # http://127.0.0.1 receivers, as on the embedded default
    fl = fleet
    owner_hook, owner_secret = hooks.webhook_create(
        actor=fl.w.sei_actor, url=receiver.url + "/sei", event_types=["campaign.*"]
    )
    hooks.webhook_create(
        actor=fl.new_provider_actor, url=receiver.url + "/greenco", event_types=["campaign.*"]
    )
    hooks.webhook_create(actor=fl.w.stranger_actor, url=receiver.url + "/stranger", event_types=["*"])
    c = _post(
        fl, "sei", {"new_provider": "greenco", "devices": fl.serials, "group_size": 3, "start": True}
    ).json()
    fl.run(until=lambda: Campaign.objects.get(pk=c["id"]).is_final)

    def types(who: str) -> list[str]:
        return [json.loads(r.body)["type"] for r in receiver.received if r.path.endswith("/" + who)]

    sei = types("sei")
    assert sei[:2] == ["campaign.created", "campaign.started"] and sei[-1] == "campaign.completed", sei
    assert "campaign.group" in sei
    assert types("greenco")[-1] == "campaign.completed"
    assert not types("stranger")
    for r in receiver.received:
        data = json.loads(r.body)["data"]
        assert data["campaign"] == c["id"] and "supplier" not in r.body.decode()
        if r.path.endswith("/sei"):
            verify(owner_secret, r.headers["X-Tessera-Timestamp"], r.body, r.headers["X-Tessera-Signature"])
    last = json.loads([r for r in receiver.received if r.path.endswith("/sei")][-1].body)["data"]
    assert last["counts"]["completed"] == 6 and last["state"] == "completed"
    assert owner_hook.pk
