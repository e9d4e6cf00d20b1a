"""The webhooks API and pages: who may do what, the secret shown once, bad input with codes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from notifications.models import Delivery, DeliveryStatus, Webhook
from notifications.signing import verify
from tests.conftest import client_for
from tests.notifications.conftest import Receiver

BASE = "/api/v1/orgs/owner-sei/webhooks/"


def _create(world: Any, url: str = "https://hooks.example.test/tessera", **extra: Any) -> Any:
    body = {"url": url, "event_types": ["job.*", "consent.*"], **extra}
    return client_for(world.owner_user).post(BASE, body, format="json")


def test_the_secret_is_shown_once_at_creation_and_never_listed(world: Any) -> None:
    resp = _create(world, description="billing system")
    assert resp.status_code == 201, resp.content
    body = resp.json()
    secret = body["secret"]
    assert secret.startswith("whsec_") and len(secret) > 40
    assert body["event_types"] == ["job.*", "consent.*"] and body["active"] is True
    client = client_for(world.owner_user)
    for url in (BASE, f"{BASE}{body['id']}/", f"{BASE}{body['id']}/deliveries/"):
        got = client.get(url)
        assert got.status_code == 200 and secret not in got.content.decode()
    assert "secret" not in client.get(f"{BASE}{body['id']}/").json()


def test_rotate_secret_answers_a_new_secret_once(world: Any) -> None:
    first = _create(world).json()
    resp = client_for(world.owner_user).post(f"{BASE}{first['id']}/rotate-secret/", {}, format="json")
    assert resp.status_code == 200
    assert resp.json()["secret"] != first["secret"]


@pytest.mark.parametrize(
    "body, code",
    [
        ({"url": "http://hooks.example.test/x"}, "url_not_https"),
        ({"url": "ftp://hooks.example.test/x"}, "url_not_https"),
        ({"url": "not a url"}, "invalid_url"),
        ({"url": "https://user:pw@hooks.example.test/x"}, "invalid_url"),
        ({"url": "https://hooks.example.test:99999/x"}, "invalid_url"),
        ({"url": "https://10.0.0.5/x"}, "url_not_allowed"),
        ({"url": "https://169.254.169.254/latest/meta-data"}, "url_not_allowed"),
        ({"url": "https://[::ffff:10.0.0.1]/x"}, "url_not_allowed"),
        ({"url": "https://hooks.example.test/" + "a" * 2000}, "invalid"),
        ({"event_types": ["job.*", "keys.*"]}, "unknown_event_type"),
        ({"event_types": ["job.Succeeded!"]}, "unknown_event_type"),
        ({"event_types": []}, "invalid"),
        ({"event_types": ["job.*"] * 21}, "invalid"),
        ({"description": "d" * 201}, "invalid"),
    ],
)
def test_bad_input_is_400_with_a_stable_code_and_nothing_is_created(
    world: Any, body: dict[str, Any], code: str
) -> None:
    payload = {"url": "https://hooks.example.test/x", "event_types": ["job.*"], **body}
    resp = client_for(world.owner_user).post(BASE, payload, format="json")
    assert resp.status_code == 400, resp.content
    assert resp.json()["error"]["code"] == code
    assert not Webhook.objects.exists()


def test_plain_http_to_loopback_is_refused_outside_development(world: Any, settings: Any) -> None:
    settings.EMBEDDED = False
    settings.DEBUG = False
    resp = _create(world, url="http://127.0.0.1:8080/hook")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "url_not_https"
    resp = _create(world, url="https://127.0.0.1/hook")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "url_not_allowed"


def test_an_auditor_reads_but_may_not_change_anything(world: Any) -> None:
    hook = _create(world).json()
    auditor = client_for(world.owner_auditor)
    assert auditor.get(BASE).json()["results"][0]["id"] == hook["id"]
    assert auditor.get(f"{BASE}{hook['id']}/deliveries/").status_code == 200
    before = Webhook.objects.get().updated_at
    for method, url, body in [
        ("post", BASE, {"url": "https://a.example.test/", "event_types": ["*"]}),
        ("patch", f"{BASE}{hook['id']}/", {"active": False}),
        ("delete", f"{BASE}{hook['id']}/", None),
        ("post", f"{BASE}{hook['id']}/test/", {}),
        ("post", f"{BASE}{hook['id']}/rotate-secret/", {}),
    ]:
        resp = getattr(auditor, method)(url, body, format="json")
        assert resp.status_code == 403, (method, url, resp.content)
    assert Webhook.objects.get().updated_at == before and not Delivery.objects.exists()


def test_a_stranger_and_a_mandated_collaborator_see_no_webhook(world: Any) -> None:
    hook = _create(world).json()
    stranger = client_for(world.stranger_user)
    assert stranger.get(f"/api/v1/orgs/stranger-sp/webhooks/{hook['id']}/").status_code == 404
    assert stranger.get("/api/v1/orgs/stranger-sp/webhooks/").json()["results"] == []
    collab = client_for(world.collaborator_user)
    behalf = "?on_behalf_of=owner-sei"
    assert collab.get(f"/api/v1/orgs/collab-tsm/webhooks/{behalf}").status_code == 404
    assert collab.get(f"/api/v1/orgs/collab-tsm/webhooks/{hook['id']}/{behalf}").status_code == 404


def test_patch_changes_the_filter_and_can_disable(world: Any) -> None:
    hook = _create(world).json()
    client = client_for(world.owner_user)
    resp = client.patch(f"{BASE}{hook['id']}/", {"event_types": ["*"], "active": False}, format="json")
    assert resp.status_code == 200
    assert resp.json()["event_types"] == ["*"] and resp.json()["active"] is False
    resp = client.patch(f"{BASE}{hook['id']}/", {"active": "yes"}, format="json")
    assert resp.status_code == 400
    assert client.delete(f"{BASE}{hook['id']}/").status_code == 204
    assert not Webhook.objects.exists()


def test_the_test_button_sends_a_signed_test_event_and_the_log_shows_it(
    world: Any, receiver: Receiver, django_capture_on_commit_callbacks: Any
) -> None:
    created = client_for(world.owner_user).post(
        BASE, {"url": receiver.url, "event_types": ["campaign.*"]}, format="json"
    )
    hook, secret = created.json(), created.json()["secret"]
    with django_capture_on_commit_callbacks(execute=True):
        resp = client_for(world.owner_user).post(f"{BASE}{hook['id']}/test/", {}, format="json")
    assert resp.status_code == 201
    got = receiver.received[0]
    verify(secret, got.headers["X-Tessera-Timestamp"], got.body, got.headers["X-Tessera-Signature"])
    assert json.loads(got.body)["type"] == "webhook.test"
    log = client_for(world.owner_user).get(f"{BASE}{hook['id']}/deliveries/").json()["results"]
    assert [(d["event_type"], d["status"], d["attempts"]) for d in log] == [
        ("webhook.test", DeliveryStatus.DELIVERED, 1)
    ]


def test_the_pages_list_create_show_the_secret_once_and_test_send(
    world: Any, receiver: Receiver, django_capture_on_commit_callbacks: Any
) -> None:
    client = Client()
    client.force_login(world.owner_user)
    assert client.get("/o/owner-sei/webhooks/").status_code == 200
    resp = client.post("/o/owner-sei/webhooks/", {"url": receiver.url, "event_types": ["job.*"]})
    assert resp.status_code == 201
    assert b"whsec_" in resp.content
    webhook = Webhook.objects.get()
    detail = client.get(f"/o/owner-sei/webhooks/{webhook.pk}/")
    assert detail.status_code == 200 and b"whsec_" not in detail.content
    assert b"Send a test event" in detail.content
    with django_capture_on_commit_callbacks(execute=True):
        resp = client.post(f"/o/owner-sei/webhooks/{webhook.pk}/test/")
    assert resp.status_code == 302 and len(receiver.received) == 1
    assert b"webhook.test" in client.get(f"/o/owner-sei/webhooks/{webhook.pk}/").content
    bad = client.post("/o/owner-sei/webhooks/", {"url": "http://example.test/", "event_types": ["job.*"]})
    assert bad.status_code == 400 and b"https" in bad.content
    auditor = Client()
    auditor.force_login(world.owner_auditor)
    page = auditor.get(f"/o/owner-sei/webhooks/{webhook.pk}/")
    assert page.status_code == 200 and b"Send a test event" not in page.content
    assert auditor.post(f"/o/owner-sei/webhooks/{webhook.pk}/test/").status_code == 403
