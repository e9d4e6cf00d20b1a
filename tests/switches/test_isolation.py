"""Each party of a switch sees exactly its part: the old provider learns that it lost the device, not
to whom; the new provider never sees the old provider's data; the issuer and the subscriber see all;
a stranger nothing (404). Webhooks carry the same cut."""

from __future__ import annotations

import json
from typing import Any

import pytest

from notifications import services as webhooks
from notifications.signing import verify
from switches.models import Switch
from switches.services import switch_request
from tests.conftest import client_for
from tests.notifications.conftest import Receiver, receiver  # noqa: F401  (the fixture)
from tests.switches.conftest import NEW_SD, OLD_SD

pytestmark = pytest.mark.django_db(transaction=True)


def _switch(s: Any) -> Switch:
    return switch_request(
        actor=s.subscriber_actor,
        device=s.w.device,
        new_provider="greenco",
        keys_mode="portal",
        new_sd_aid=NEW_SD,
    )


def _texts(user: Any, org: str, paths: list[str]) -> str:
    client = client_for(user)
    out = []
    for path in paths:
        r = client.get(f"/api/v1/orgs/{org}/{path}")
        assert r.status_code == 200, (org, path, r.status_code, r.content[:200])
        out.append(r.content.decode())
    return "\n".join(out)


LISTS = ["switches/", "contracts/", "jobs/?limit=200", "audit/?limit=500", "devices/"]


def test_every_party_sees_its_own_part_of_a_completed_switch(sworld, receiver: Receiver, settings):  # noqa: F811
    settings.EMBEDDED = True  # http://127.0.0.1 receivers, as on the embedded default
    s = sworld
    new_hook, new_secret = webhooks.webhook_create(
        actor=s.new_provider_actor, url=receiver.url + "/new", event_types=["switch.*"]
    )
    old_hook, old_secret = webhooks.webhook_create(
        actor=s.w.provider_actor, url=receiver.url + "/old", event_types=["*"]
    )
    switch = _switch(s)
    s.run()
    switch.refresh_from_db()
    assert switch.state == "completed"
    users = s.w.users
    # the old provider: one "lost" switch, its ended contract; nothing naming the new provider or its SD
    old = _texts(users["supplier"], "supplier", LISTS)
    assert "greenco" not in old and NEW_SD not in old
    r = client_for(users["supplier"]).get(f"/api/v1/orgs/supplier/switches/{switch.pk}/")
    assert (
        r.status_code == 200
        and r.json()["state"] == "lost"
        and set(r.json())
        == {
            "url",
            "id",
            "device",
            "service",
            "state",
            "finished_at",
        }
    )
    # the new provider: its switch, its contract; nothing naming the old provider or its SD
    new = _texts(users["greenco"], "greenco", LISTS)
    assert "supplier" not in new and OLD_SD not in new
    assert str(switch.pk) in new
    # the issuer and the subscriber see both sides
    for org in ("sei", "home"):
        seen = _texts(users[org], org, ["switches/"])
        assert "greenco" in seen
        detail = client_for(users[org]).get(f"/api/v1/orgs/{org}/switches/{switch.pk}/").json()
        assert detail["old_provider"] == "supplier" and detail["new_provider"] == "greenco"
    # a stranger: 404 on the switch, nothing in its lists
    r = client_for(users["stranger"]).get(f"/api/v1/orgs/stranger/switches/{switch.pk}/")
    assert r.status_code == 404
    assert str(switch.pk) not in _texts(users["stranger"], "stranger", ["switches/", "audit/?limit=500"])
    # webhooks: the new provider heard the switch to its end, the old one only that it lost the device
    new_posts = [r for r in receiver.received if r.path.endswith("/new")]
    assert json.loads(new_posts[-1].body)["type"] == "switch.completed"
    for r in new_posts:
        verify(new_secret, r.headers["X-Tessera-Timestamp"], r.body, r.headers["X-Tessera-Signature"])
        assert b"supplier" not in r.body and OLD_SD.encode() not in r.body
    old_posts = [r for r in receiver.received if r.path.endswith("/old")]
    lost = [json.loads(r.body) for r in old_posts if json.loads(r.body)["type"].startswith("switch.")]
    assert [p["type"] for p in lost] == ["switch.lost"]
    for r in old_posts:
        verify(old_secret, r.headers["X-Tessera-Timestamp"], r.body, r.headers["X-Tessera-Signature"])
        assert b"greenco" not in r.body and NEW_SD.encode() not in r.body


def test_the_old_provider_sees_nothing_of_a_switch_while_it_runs(sworld):
    s = sworld
    switch = _switch(s)
    r = client_for(s.w.users["supplier"]).get(f"/api/v1/orgs/supplier/switches/{switch.pk}/")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    "body,status,code",
    [
        ({"device": "GW-0001", "new_provider": "greenco", "colour": "red"}, 400, None),
        ({"device": "GW-0001", "new_provider": "nobody"}, 400, "invalid_switch"),
        ({"device": "GW-0001", "new_provider": "supplier"}, 400, "invalid_switch"),
        ({"device": "GW-0001", "new_provider": "greenco", "keys_mode": "telepathy"}, 400, None),
        ({"device": "GW-0001", "new_provider": "greenco", "new_sd_aid": "XYZ"}, 400, "invalid_switch"),
        ({"device": "GW-0001", "new_provider": "greenco", "app": {"instance_aid": 7}}, 400, "invalid_switch"),
        ({"device": "NO-SUCH", "new_provider": "greenco"}, 404, "not_found"),
        ({"device": ["x"], "new_provider": "greenco"}, 400, None),
        ({}, 400, None),
    ],
)
def test_bad_switch_requests_answer_a_clear_error_and_change_nothing(sworld, body, status, code):
    s = sworld
    r = client_for(s.w.users["home"]).post("/api/v1/orgs/home/switches/", body, format="json")
    assert r.status_code == status, r.content
    if code:
        assert r.json()["error"]["code"] == code
    assert not Switch.objects.exists()


def test_a_stranger_cannot_switch_a_device_it_does_not_see_and_a_second_request_is_409(sworld):
    s = sworld
    r = client_for(s.w.users["stranger"]).post(
        "/api/v1/orgs/stranger/switches/", {"device": "GW-0001", "new_provider": "greenco"}, format="json"
    )
    assert r.status_code == 404
    home = client_for(s.w.users["home"])
    r = home.post(
        "/api/v1/orgs/home/switches/", {"device": "GW-0001", "new_provider": "greenco"}, format="json"
    )
    assert r.status_code == 201, r.content
    assert r.json()["state"] == "running" and r.json()["old_provider"] == "supplier"
    r = home.post(
        "/api/v1/orgs/home/switches/", {"device": "GW-0001", "new_provider": "stranger"}, format="json"
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "switch_running"
    assert "already running" in json.dumps(r.json())
