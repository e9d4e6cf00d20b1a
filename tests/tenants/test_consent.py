"""Consent (issue 6 part 1): services, API and pages for the subscriber, receipts.

The world: ``home-ss`` (a homeowner) is the subscriber of device MTR-0001, on which ``provider-sp``
owns the SSD A000000151535041AA; the world's consent between them is already granted.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.models import AuditEvent, AuditTag
from portal.errors import ForbiddenError, NotFoundError
from tenants.access import resolve_actor
from tenants.consent import (
    SCOPES,
    consent_decide,
    consent_plain,
    consent_receipt,
    consent_request,
    consent_revoke,
    receipt_public_key,
    receipt_verify,
)
from tenants.errors import ConsentNotActive, ConsentNotPending, InvalidConsent, NotTheSubscriber
from tenants.models import Consent, ConsentStatus
from tests import factories as f
from tests.conftest import client_for

SSD = "A000000151535041AA"


def _provider(world: Any) -> Any:
    return resolve_actor(world.provider_user, "provider-sp")


def _home(world: Any) -> Any:
    return resolve_actor(world.subscriber_user, "home-ss")


def _ask(world: Any, **overrides: Any) -> Consent:
    fields = {
        "device": world.device,
        "purpose": "Billing your electricity",
        "scopes": ["own_security_domain", "readings"],
        "duration_days": 365,
        "sd_aid": SSD,
    }
    return consent_request(actor=_provider(world), **{**fields, **overrides})


# --- services -------------------------------------------------------------------------------


def test_a_provider_request_is_pending_addressed_to_the_subscriber_and_audited(world):
    consent = _ask(world, device="MTR-0001")  # by serial: the provider sees the device via its SD
    assert (consent.status, consent.subscriber, consent.grantee) == (
        "pending",
        world.subscriber,
        world.provider,
    )
    assert consent.granted_at is None and not consent.is_active
    event = AuditEvent.objects.get(tag=AuditTag.CONSENT_REQUEST, target_id=str(consent.pk))
    assert {str(world.subscriber.pk), str(world.provider.pk)} <= set(event.concerned_org_ids)


def test_the_subscriber_approves_and_the_consent_runs_for_its_duration(world):
    consent = consent_decide(actor=_home(world), consent=_ask(world), approve=True)
    assert consent.status == ConsentStatus.GRANTED and consent.is_active
    assert (consent.expires_at - consent.granted_at).days == 365
    with pytest.raises(ConsentNotPending):
        consent_decide(actor=_home(world), consent=consent, approve=False)


def test_a_denied_request_never_becomes_active_and_cannot_be_revoked(world):
    consent = consent_decide(actor=_home(world), consent=_ask(world), approve=False)
    assert consent.status == ConsentStatus.DENIED and not consent.is_active
    assert not Consent.objects.filter(Consent.active_q(), pk=consent.pk).exists()
    with pytest.raises(ConsentNotActive):
        consent_revoke(actor=_home(world), consent=consent)


def test_only_the_subscriber_decides_and_revokes(world):
    consent = _ask(world)
    with pytest.raises(NotTheSubscriber):
        consent_decide(actor=_provider(world), consent=consent, approve=True)
    with pytest.raises(NotTheSubscriber):
        consent_revoke(actor=_provider(world), consent=world.consent)


def test_revocation_is_audited_and_ends_the_consent(world):
    consent = consent_revoke(actor=_home(world), consent=world.consent)
    assert consent.status == ConsentStatus.REVOKED and consent.revoked_at is not None
    assert AuditEvent.objects.filter(tag=AuditTag.CONSENT_REVOKE, target_id=str(consent.pk)).exists()


def test_a_provider_cannot_ask_about_a_device_it_cannot_see(world):
    stranger = resolve_actor(world.stranger_user, "stranger-sp")
    with pytest.raises(NotFoundError):
        consent_request(
            actor=stranger, device="MTR-0001", purpose="x", scopes=["readings"], duration_days=1, sd_aid=SSD
        )


def test_a_second_pending_request_for_the_same_sd_is_refused(world):
    _ask(world)
    with pytest.raises(ConsentNotPending):
        _ask(world)


@pytest.mark.parametrize(
    "overrides",
    [
        {"purpose": ""},
        {"purpose": "x" * 201},
        {"scopes": []},
        {"scopes": ["everything"]},
        {"scopes": "readings"},
        {"duration_days": 0},
        {"duration_days": 100000},
        {"duration_days": True},
        {"sd_aid": "not-hex"},
        {"sd_aid": ""},
        {"application_aid": "12"},
    ],
)
def test_bad_requests_are_refused_with_a_clear_error(world, overrides):
    with pytest.raises(InvalidConsent):
        _ask(world, **overrides)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    purpose=st.one_of(st.text(max_size=250), st.integers(), st.none()),
    scopes=st.one_of(st.lists(st.text(max_size=20), max_size=4), st.text(max_size=5), st.none()),
    days=st.one_of(st.integers(-5, 5000), st.none(), st.booleans(), st.floats(allow_nan=True)),
    aid=st.one_of(st.text(max_size=40), st.none()),
)
def test_any_request_is_either_accepted_or_refused_as_invalid(world, purpose, scopes, days, aid):
    Consent.objects.filter(status=ConsentStatus.PENDING).delete()
    try:
        consent = _ask(world, purpose=purpose, scopes=scopes, duration_days=days, sd_aid=aid)
    except InvalidConsent:
        return
    assert consent.status == ConsentStatus.PENDING


def test_the_plain_language_says_what_the_provider_will_and_will_not_see(world):
    plain = consent_plain(_ask(world))
    assert plain["who"] == "Provider SP"
    assert plain["how_long"] == "365 days"
    assert SCOPES["readings"].will in plain["will"]
    assert SCOPES["location"].will_not in plain["will_not"]
    assert SCOPES["readings"].will_not not in plain["will_not"]
    assert any("other provider" in s for s in plain["will_not"])


# --- receipts -------------------------------------------------------------------------------


def test_a_receipt_verifies_with_the_published_key_and_a_changed_one_does_not(world):
    consent = consent_decide(actor=_home(world), consent=_ask(world), approve=True)
    document = consent_receipt(actor=_home(world), consent=consent)
    key = Client().get("/api/v1/consent-receipts/key/").json()
    assert key["alg"] == "Ed25519"
    public = base64.urlsafe_b64decode(key["public_key"] + "=" * (-len(key["public_key"]) % 4))
    assert receipt_verify(document, public)
    assert [h["event"] for h in document["receipt"]["history"]] == ["consent:request", "consent:grant"]
    forged = {**document, "receipt": {**document["receipt"], "scopes": ["location"]}}
    assert not receipt_verify(forged, public)
    assert not receipt_verify({"receipt": {}}, public)
    # independently of our helper: the signature is Ed25519 over the canonical JSON
    import json

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    canonical = json.dumps(document["receipt"], sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    sig = base64.urlsafe_b64decode(document["signature"] + "==")
    Ed25519PublicKey.from_public_bytes(public).verify(sig, canonical.encode())
    assert receipt_public_key()["key_id"] == document["key_id"]
    named = Client().get(f"/api/v1/consent-receipts/key/?key_id={document['key_id']}").json()
    assert named["public_key"] == key["public_key"]
    assert Client().get("/api/v1/consent-receipts/key/?key_id=nope").status_code == 404


def test_the_receipt_key_is_stored_wrapped_never_in_the_clear(world):
    from tenants.models import ReceiptSigningKey

    consent_receipt(actor=_home(world), consent=world.consent)
    row = ReceiptSigningKey.objects.get()
    assert len(bytes(row.wrapped)) > 32 and bytes(row.public_raw) not in bytes(row.wrapped)


# --- API ------------------------------------------------------------------------------------


def test_the_api_lifecycle_request_approve_revoke_receipt_and_history(world):
    provider = client_for(world.provider_user)
    home = client_for(world.subscriber_user)
    body = {
        "device": "MTR-0001",
        "purpose": "Billing",
        "scopes": ["own_security_domain"],
        "duration_days": 30,
        "sd_aid": SSD,
    }
    resp = provider.post("/api/v1/orgs/provider-sp/consents/", body, format="json")
    assert resp.status_code == 201, resp.content
    pk = resp.json()["id"]
    assert resp.json()["status"] == "pending"
    listed = home.get("/api/v1/orgs/home-ss/consents/?side=given&status=pending").json()["results"]
    assert [c["id"] for c in listed] == [pk]
    assert listed[0]["plain"]["who"] == "Provider SP"
    # the provider cannot approve its own request
    assert (
        provider.post(f"/api/v1/orgs/provider-sp/consents/{pk}/approve/", {}, format="json").status_code
        == 403
    )
    resp = home.post(f"/api/v1/orgs/home-ss/consents/{pk}/approve/", {}, format="json")
    assert resp.status_code == 200 and resp.json()["status"] == "granted"
    assert home.post(f"/api/v1/orgs/home-ss/consents/{pk}/deny/", {}, format="json").status_code == 409
    resp = home.post(f"/api/v1/orgs/home-ss/consents/{pk}/revoke/", {}, format="json")
    assert resp.status_code == 200 and resp.json()["status"] == "revoked"
    receipt = home.get(f"/api/v1/orgs/home-ss/consents/{pk}/receipt/")
    assert receipt.status_code == 200 and "attachment" in receipt["Content-Disposition"]
    assert receipt.json()["receipt"]["status"] == "revoked"
    history = provider.get(f"/api/v1/orgs/provider-sp/consents/{pk}/history/").json()["results"]
    assert [h["tag"] for h in history] == ["consent:request", "consent:grant", "consent:revoke"]


def test_a_stranger_gets_404_for_a_consent_and_its_receipt(world):
    stranger = client_for(world.stranger_user)
    pk = world.consent.pk
    for suffix in ("", "receipt/", "history/"):
        assert stranger.get(f"/api/v1/orgs/stranger-sp/consents/{pk}/{suffix}").status_code == 404
    assert (
        stranger.post(f"/api/v1/orgs/stranger-sp/consents/{pk}/revoke/", {}, format="json").status_code == 404
    )


def test_an_auditor_may_read_but_not_decide(world):
    auditor = f.MembershipFactory(
        org=world.subscriber, user=f.UserFactory(username="home-aud"), role="auditor"
    )
    client = client_for(auditor.user)
    pk = _ask(world).pk
    assert client.get(f"/api/v1/orgs/home-ss/consents/{pk}/").status_code == 200
    assert client.post(f"/api/v1/orgs/home-ss/consents/{pk}/approve/", {}, format="json").status_code == 403
    with pytest.raises(ForbiddenError):
        consent_decide(
            actor=resolve_actor(auditor.user, "home-ss"), consent=Consent.objects.get(pk=pk), approve=True
        )


# --- pages ----------------------------------------------------------------------------------

PHONE = {"HTTP_USER_AGENT": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148"}


def _browser(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_subscriber_reads_a_request_in_plain_language_on_a_phone_and_allows_it(world):
    consent = _ask(world)
    client = _browser(world.subscriber_user)
    listing = client.get("/o/home-ss/consents/", **PHONE)
    assert listing.status_code == 200
    html = listing.content.decode()
    assert 'name="viewport" content="width=device-width' in html
    assert "Waiting for your answer" in html and "Provider SP" in html
    page = client.get(f"/o/home-ss/consents/{consent.pk}/", **PHONE).content.decode()
    # who, why, what, how long; will and will not; one decision: two big buttons
    for text in ("Provider SP asks to use your device", "Billing your electricity", SSD, "365 days"):
        assert text in page
    assert SCOPES["readings"].will in page and SCOPES["location"].will_not in page
    assert page.count('class="consent-choice"') == 2  # the decision, then the receipt
    assert 'id="consent-approve"' in page and 'id="consent-deny"' in page
    assert "min-height: 3.5rem" in page and "width: 100%" in page  # thumb-sized buttons
    resp = client.post(f"/o/home-ss/consents/{consent.pk}/approve/", **PHONE)
    assert resp.status_code == 302
    consent.refresh_from_db()
    assert consent.status == ConsentStatus.GRANTED
    page = client.get(f"/o/home-ss/consents/{consent.pk}/", **PHONE).content.decode()
    assert 'id="consent-revoke"' in page and 'id="consent-approve"' not in page


def test_the_subscriber_withdraws_consent_from_the_page_and_downloads_the_receipt(world):
    client = _browser(world.subscriber_user)
    resp = client.post(f"/o/home-ss/consents/{world.consent.pk}/revoke/")
    assert resp.status_code == 302
    world.consent.refresh_from_db()
    assert world.consent.status == ConsentStatus.REVOKED
    # the removal of the provider's SD was requested and the homeowner sees it on the page
    page = client.get(f"/o/home-ss/consents/{world.consent.pk}/").content.decode()
    assert world.consent.removal_job_id and 'id="consent-removal"' in page
    assert f"/o/home-ss/jobs/{world.consent.removal_job_id}/" in page
    # a second press answers with the reason, not a crash
    again = client.post(f"/o/home-ss/consents/{world.consent.pk}/revoke/")
    assert again.status_code == 409 and "Only an allowed consent" in again.content.decode()
    receipt = client.get(f"/o/home-ss/consents/{world.consent.pk}/receipt/")
    assert receipt.status_code == 200 and receipt["Content-Type"] == "application/json"


def test_the_provider_sees_its_request_but_no_decision_buttons(world):
    consent = _ask(world)
    page = _browser(world.provider_user).get(f"/o/provider-sp/consents/{consent.pk}/").content.decode()
    assert "Homeowner" in page and 'id="consent-approve"' not in page


# --- live events ----------------------------------------------------------------------------


def test_each_step_sends_a_live_event_to_both_organisations(world, monkeypatch):
    from notifications.events import event_type
    from portal import events

    seen: list[tuple[list[str], dict[str, Any]]] = []
    monkeypatch.setattr(events, "_listeners", [lambda orgs, event: seen.append((orgs, event))])
    consent = _ask(world)
    consent_decide(actor=_home(world), consent=consent, approve=True)
    consent_revoke(actor=_home(world), consent=consent)
    mine = [(o, e) for o, e in seen if e.get("kind") == "consent"]
    assert [event_type(e) for _, e in mine] == ["consent.requested", "consent.granted", "consent.revoked"]
    both = sorted({str(world.subscriber.pk), str(world.provider.pk)})
    assert all(o == both for o, _ in mine)
