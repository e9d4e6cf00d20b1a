"""The server-rendered pages: who sees what, and the flows that go through them."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from tenants.models import Invitation, Mandate, MemberRole, Membership, Organisation, OrgStatus
from tests import factories as f

OWNER_PAGES = [
    "/o/owner-sei/",
    "/o/owner-sei/members/",
    "/o/owner-sei/mandates/",
    "/o/owner-sei/devices/",
    "/o/owner-sei/audit/",
]


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def text(resp) -> str:
    return resp.content.decode()


def invitation_token_from_mail() -> str:
    match = re.search(r"/invitations/([^/\s]+)/", mail.outbox[-1].body)
    assert match, mail.outbox[-1].body
    return match.group(1)


# --- who sees what ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", OWNER_PAGES)
def test_every_page_renders_for_the_owner(world, path):
    resp = logged_in(world.owner_user).get(path)
    assert resp.status_code == 200, text(resp)[:500]
    assert "Owner SEI" in text(resp)


def test_the_device_page_shows_its_secure_element_and_security_domain_tree(world):
    resp = logged_in(world.owner_user).get(f"/o/owner-sei/devices/{world.device.pk}/")
    assert resp.status_code == 200
    body = text(resp)
    assert world.se.serial in body
    assert world.isd.aid in body and world.ssd.aid in body
    assert "Provider SP" in body


def test_the_stranger_gets_404_on_every_page_of_the_owner(world):
    client = logged_in(world.stranger_user)
    paths = [*OWNER_PAGES, f"/o/owner-sei/devices/{world.device.pk}/"]
    for path in paths:
        assert client.get(path).status_code == 404, path
    member = Membership.objects.get(user=world.owner_user)
    for path, data in [
        ("/o/owner-sei/members/", {"email": "x@example.test", "role": "operator"}),
        (f"/o/owner-sei/members/{member.pk}/role/", {"role": "auditor"}),
        (f"/o/owner-sei/members/{member.pk}/remove/", {}),
        (f"/o/owner-sei/mandates/{world.mandate.pk}/revoke/", {}),
        ("/o/owner-sei/mandates/", {"grantee": "stranger-sp", "actions": ["devices.view"]}),
    ]:
        assert client.post(path, data).status_code == 404, path
    assert Mandate.objects.get(pk=world.mandate.pk).revoked_at is None


def test_the_stranger_gets_404_on_the_owners_device_even_under_its_own_organisation(world):
    resp = logged_in(world.stranger_user).get(f"/o/stranger-sp/devices/{world.device.pk}/")
    assert resp.status_code == 404


def test_the_404_page_is_a_page_not_json(world):
    resp = logged_in(world.stranger_user).get("/o/owner-sei/")
    assert resp.status_code == 404
    assert "text/html" in resp["Content-Type"]
    assert "Not found" in text(resp)


@pytest.mark.parametrize(
    "path", [*OWNER_PAGES, "/", "/operator/applications/", "/o/owner-sei/devices/?on_behalf_of=x"]
)
def test_anonymous_visitors_are_sent_to_the_login_page(db, path):
    resp = Client().get(path)
    assert resp.status_code == 302
    assert resp["Location"].startswith("/login/?next=")


def test_the_collaborator_acting_for_the_owner_sees_its_devices_and_audit_with_a_banner(world):
    client = logged_in(world.collaborator_user)
    devices = client.get("/o/collab-tsm/devices/?on_behalf_of=owner-sei")
    assert devices.status_code == 200
    assert "MTR-0001" in text(devices)
    assert "Acting for" in text(devices) and "Owner SEI" in text(devices)
    assert str(world.mandate.pk)[:8] in text(devices)
    detail = client.get(f"/o/collab-tsm/devices/{world.device.pk}/?on_behalf_of=owner-sei")
    assert detail.status_code == 200
    assert client.get("/o/collab-tsm/audit/?on_behalf_of=owner-sei").status_code == 200
    dashboard = client.get("/o/collab-tsm/?on_behalf_of=owner-sei")
    assert dashboard.status_code == 200
    assert "MTR-0001" in text(dashboard)
    # a page that acts on someone's behalf keeps doing so in its links
    assert "?on_behalf_of=owner-sei" in text(dashboard)


def test_the_collaborator_cannot_see_the_owners_members_or_mandates_even_under_mandate(world):
    client = logged_in(world.collaborator_user)
    assert client.get("/o/collab-tsm/members/?on_behalf_of=owner-sei").status_code == 404
    assert client.get("/o/collab-tsm/mandates/?on_behalf_of=owner-sei").status_code == 404
    assert client.get("/o/owner-sei/members/").status_code == 404


def test_the_collaborator_does_not_see_the_owners_devices_when_acting_for_itself(world):
    resp = logged_in(world.collaborator_user).get("/o/collab-tsm/devices/")
    assert resp.status_code == 200
    assert "MTR-0001" not in text(resp)


def test_acting_for_an_organisation_that_gave_no_mandate_is_a_404(world):
    client = logged_in(world.collaborator_user)
    assert client.get("/o/collab-tsm/devices/?on_behalf_of=stranger-sp").status_code == 404


def test_a_revoked_mandate_no_longer_lets_the_collaborator_act(world):
    world.mandate.revoked_at = timezone.now()
    world.mandate.save()
    resp = logged_in(world.collaborator_user).get("/o/collab-tsm/devices/?on_behalf_of=owner-sei")
    assert resp.status_code == 404


def test_the_dashboard_counts_and_lists_recent_events_and_offers_live_updates(world):
    from audit.services import audit_record
    from tenants.access import Actor

    actor = Actor(user=world.owner_user, org=world.owner, member_role=MemberRole.OWNER)
    audit_record(actor=actor, tag="device:register", target=world.device)
    resp = logged_in(world.owner_user).get("/o/owner-sei/")
    body = text(resp)
    assert "device:register" in body
    assert 'data-ws-path="/ws/o/owner-sei/events/"' in body
    assert "js/live-events.js" in body
    assert "SE Issuer" in body and "Device Manufacturer" in body
    assert re.search(r'stat-value">1</span><span class="stat-label">Devices', body)


def test_the_dashboard_under_mandate_does_not_follow_live_events(world):
    resp = logged_in(world.collaborator_user).get("/o/collab-tsm/?on_behalf_of=owner-sei")
    assert "data-ws-path" not in text(resp)


def test_the_subscriber_sees_its_device_but_not_the_strangers(world):
    resp = logged_in(world.subscriber_user).get("/o/home-ss/devices/")
    assert "MTR-0001" in text(resp)
    assert "STR-0001" not in text(resp)


def test_the_audit_log_filters_by_event_type_and_refuses_an_unknown_one(world):
    from audit.services import audit_record
    from tenants.access import Actor

    actor = Actor(user=world.owner_user, org=world.owner, member_role=MemberRole.OWNER)
    audit_record(actor=actor, tag="device:register", target=world.device)
    audit_record(actor=actor, tag="se:register", target=world.se)
    client = logged_in(world.owner_user)
    resp = client.get("/o/owner-sei/audit/?tag=se:register")
    assert resp.status_code == 200
    assert "se:register" in text(resp) and world.se.serial in text(resp)
    assert '<code class="tag">device:register</code>' not in text(resp)
    bad = client.get("/o/owner-sei/audit/?tag=nonsense")
    assert bad.status_code == 400
    assert "Unknown event type" in text(bad)


# --- home, login ------------------------------------------------------------------------------


def test_home_goes_straight_to_the_dashboard_of_a_users_only_organisation(world):
    resp = logged_in(world.stranger_user).get("/")
    assert resp.status_code == 302
    assert resp["Location"] == "/o/stranger-sp/"


def test_home_lists_the_organisations_of_a_user_in_several(world):
    f.MembershipFactory(user=world.stranger_user, org=world.provider, role=MemberRole.AUDITOR)
    resp = logged_in(world.stranger_user).get("/")
    assert resp.status_code == 200
    assert "Stranger SP" in text(resp) and "Provider SP" in text(resp)
    assert "Owner SEI" not in text(resp).split("<main")[1]


def test_a_platform_operator_sees_a_link_to_pending_applications(db):
    staff = f.UserFactory(username="op", is_staff=True)
    resp = logged_in(staff).get("/")
    assert resp.status_code == 200
    assert "/operator/applications/" in text(resp)


def test_logging_in_with_a_wrong_password_is_a_400_with_a_message(world):
    resp = Client().post("/login/", {"username": "owner-user", "password": "wrong"})
    assert resp.status_code == 400
    assert "Wrong username or password" in text(resp)


def test_logging_in_and_out_works(world):
    client = Client()
    resp = client.post("/login/", {"username": "owner-user", "password": f.PASSWORD})
    assert resp.status_code == 302
    assert client.get("/o/owner-sei/").status_code == 200
    assert client.get("/logout/").status_code == 405  # logging out is a POST (CSRF-protected)
    assert client.post("/logout/").status_code == 302
    assert client.get("/o/owner-sei/").status_code == 302


def test_forms_are_csrf_protected(world):
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.owner_user)
    resp = client.post("/o/owner-sei/members/", {"email": "x@example.test", "role": "operator"})
    assert resp.status_code == 403
    assert not Invitation.objects.exists()
    page = client.get("/o/owner-sei/members/")
    assert 'name="csrfmiddlewaretoken"' in text(page)


# --- members and invitations --------------------------------------------------------------------


def test_an_owner_invites_through_the_page_and_the_invitee_creates_an_account_and_joins(
    world, django_capture_on_commit_callbacks
):
    client = logged_in(world.owner_user)
    with django_capture_on_commit_callbacks(execute=True):
        resp = client.post("/o/owner-sei/members/", {"email": "new@example.test", "role": "operator"})
    assert resp.status_code == 302
    assert "new@example.test" in text(client.get("/o/owner-sei/members/"))
    token = invitation_token_from_mail()
    assert token not in text(client.get("/o/owner-sei/members/"))

    invitee = Client()
    page = invitee.get(f"/invitations/{token}/")
    assert page.status_code == 200
    assert "Owner SEI" in text(page) and "operator" in text(page)
    joined = invitee.post(
        f"/invitations/{token}/", {"username": "newbie", "password": "a-long-pass-phrase-42"}
    )
    assert joined.status_code == 302
    assert joined["Location"] == "/o/owner-sei/"
    assert Membership.objects.get(user__username="newbie").role == MemberRole.OPERATOR
    assert invitee.get("/o/owner-sei/").status_code == 200

    again = Client().get(f"/invitations/{token}/")
    assert again.status_code == 410
    assert "no longer works" in text(again)


def test_a_signed_in_user_joins_with_one_button(world):
    from tenants.access import Actor
    from tenants.services import invitation_create

    actor = Actor(user=world.owner_user, org=world.owner, member_role=MemberRole.OWNER)
    _, token = invitation_create(actor=actor, email="s@example.test", role=MemberRole.AUDITOR)
    client = logged_in(world.stranger_user)
    assert "Join as stranger-user" in text(client.get(f"/invitations/{token}/"))
    resp = client.post(f"/invitations/{token}/")
    assert resp.status_code == 302
    assert Membership.objects.filter(user=world.stranger_user, org=world.owner).exists()


def test_an_existing_member_following_an_invitation_gets_a_409(world):
    from tenants.access import Actor
    from tenants.services import invitation_create

    actor = Actor(user=world.owner_user, org=world.owner, member_role=MemberRole.OWNER)
    _, token = invitation_create(actor=actor, email="a@example.test", role=MemberRole.AUDITOR)
    resp = logged_in(world.owner_auditor).post(f"/invitations/{token}/")
    assert resp.status_code == 409
    assert "already a member" in text(resp)


def test_an_expired_invitation_link_is_a_410_page(world):
    from tenants.access import Actor
    from tenants.services import invitation_create

    actor = Actor(user=world.owner_user, org=world.owner, member_role=MemberRole.OWNER)
    invitation, token = invitation_create(actor=actor, email="late@example.test", role=MemberRole.OPERATOR)
    Invitation.objects.filter(pk=invitation.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    assert Client().get(f"/invitations/{token}/").status_code == 410
    resp = Client().post(f"/invitations/{token}/", {"username": "late", "password": "a-long-pass-phrase-42"})
    assert resp.status_code == 410
    assert not Membership.objects.filter(user__username="late").exists()


def test_an_unknown_invitation_link_is_a_410_page(db):
    resp = Client().get("/invitations/not-a-real-token/")
    assert resp.status_code == 410
    assert "text/html" in resp["Content-Type"]


def test_accepting_with_a_weak_password_is_a_400_with_the_reason(world):
    from tenants.access import Actor
    from tenants.services import invitation_create

    actor = Actor(user=world.owner_user, org=world.owner, member_role=MemberRole.OWNER)
    _, token = invitation_create(actor=actor, email="w@example.test", role=MemberRole.OPERATOR)
    resp = Client().post(f"/invitations/{token}/", {"username": "weak", "password": "short"})
    assert resp.status_code == 400
    assert "too short" in text(resp)
    empty = Client().post(f"/invitations/{token}/", {})
    assert empty.status_code == 400


def test_inviting_with_a_bad_email_is_a_400_with_a_message(world):
    resp = logged_in(world.owner_user).post(
        "/o/owner-sei/members/", {"email": "not-an-email", "role": "operator"}
    )
    assert resp.status_code == 400
    assert "Enter a valid email address" in text(resp)
    assert not Invitation.objects.exists()


def test_an_auditor_sees_members_without_forms_and_may_not_invite(world):
    client = logged_in(world.owner_auditor)
    page = client.get("/o/owner-sei/members/")
    assert page.status_code == 200
    assert "invite-form" not in text(page)
    resp = client.post("/o/owner-sei/members/", {"email": "x@example.test", "role": "operator"})
    assert resp.status_code == 403
    assert not Invitation.objects.exists()


def test_an_owner_changes_a_role_and_removes_a_member_through_the_page(world):
    client = logged_in(world.owner_user)
    auditor = Membership.objects.get(user=world.owner_auditor)
    assert client.post(f"/o/owner-sei/members/{auditor.pk}/role/", {"role": "admin"}).status_code == 302
    auditor.refresh_from_db()
    assert auditor.role == MemberRole.ADMIN
    assert client.post(f"/o/owner-sei/members/{auditor.pk}/remove/").status_code == 302
    assert not Membership.objects.filter(pk=auditor.pk).exists()


def test_demoting_the_last_owner_is_a_409_with_the_reason(world):
    client = logged_in(world.owner_user)
    me = Membership.objects.get(user=world.owner_user)
    resp = client.post(f"/o/owner-sei/members/{me.pk}/role/", {"role": "operator"})
    assert resp.status_code == 409
    assert "at least one owner" in text(resp)
    bad = client.post(f"/o/owner-sei/members/{me.pk}/role/", {"role": "emperor"})
    assert bad.status_code == 400


def test_revoking_an_invitation_with_htmx_removes_its_row(world):
    client = logged_in(world.owner_user)
    client.post("/o/owner-sei/members/", {"email": "gone@example.test", "role": "operator"})
    invitation = Invitation.objects.get(email="gone@example.test")
    assert f'id="invitation-{invitation.pk}"' in text(client.get("/o/owner-sei/members/"))
    resp = client.post(f"/o/owner-sei/invitations/{invitation.pk}/revoke/", HTTP_HX_REQUEST="true")
    assert resp.status_code == 200
    assert resp.content == b""
    invitation.refresh_from_db()
    assert invitation.revoked_at is not None
    again = client.post(f"/o/owner-sei/invitations/{invitation.pk}/revoke/")
    assert again.status_code == 410


# --- mandates -----------------------------------------------------------------------------------


def test_the_mandates_page_shows_given_and_received_with_their_state(world):
    owner_page = text(logged_in(world.owner_user).get("/o/owner-sei/mandates/"))
    assert "Collaborator TSM" in owner_page and "active" in owner_page
    collab_page = text(logged_in(world.collaborator_user).get("/o/collab-tsm/mandates/"))
    assert "Owner SEI" in collab_page
    assert "?on_behalf_of=owner-sei" in collab_page


def test_an_owner_grants_a_scoped_mandate_through_the_page(world):
    resp = logged_in(world.owner_user).post(
        "/o/owner-sei/mandates/",
        {
            "grantee": "provider-sp",
            "actions": ["devices.view", "status.read"],
            "scope_device_kinds": ["meter"],
            "scope_serials": "MTR-0001, MTR-0002\nMTR-0003",
            "valid_until": (timezone.now() + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M"),
        },
    )
    assert resp.status_code == 302, text(resp)[:800]
    mandate = Mandate.objects.get(grantee=world.provider)
    assert mandate.actions == ["devices.view", "status.read"]
    assert mandate.scope == {"device_kinds": ["meter"], "serials": ["MTR-0001", "MTR-0002", "MTR-0003"]}
    assert mandate.valid_until is not None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"grantee": "nobody-here", "actions": ["devices.view"]}, "No active organisation"),
        ({"grantee": "provider-sp"}, "This field is required"),
        ({"grantee": "provider-sp", "actions": ["launch.missiles"]}, "Select a valid choice"),
        ({"grantee": "owner-sei", "actions": ["devices.view"]}, "another active organisation"),
        (
            {"grantee": "provider-sp", "actions": ["devices.view"], "valid_until": "2001-01-01T00:00"},
            "future",
        ),
    ],
)
def test_granting_a_bad_mandate_is_a_400_with_a_message(world, data, message):
    resp = logged_in(world.owner_user).post("/o/owner-sei/mandates/", data)
    assert resp.status_code == 400
    assert message in text(resp)
    assert Mandate.objects.count() == 1


def test_revoking_a_mandate_through_the_page_and_again_is_a_409(world):
    client = logged_in(world.owner_user)
    resp = client.post(f"/o/owner-sei/mandates/{world.mandate.pk}/revoke/")
    assert resp.status_code == 302
    world.mandate.refresh_from_db()
    assert world.mandate.revoked_at is not None
    again = client.post(f"/o/owner-sei/mandates/{world.mandate.pk}/revoke/")
    assert again.status_code == 409
    assert "already revoked" in text(again)


def test_revoking_a_mandate_with_htmx_swaps_its_row(world):
    resp = logged_in(world.owner_user).post(
        f"/o/owner-sei/mandates/{world.mandate.pk}/revoke/", HTTP_HX_REQUEST="true"
    )
    assert resp.status_code == 200
    body = text(resp)
    assert body.strip().startswith(f'<tr id="mandate-{world.mandate.pk}"')
    assert "revoked" in body


def test_the_grantee_may_renounce_a_mandate(world):
    resp = logged_in(world.collaborator_user).post(f"/o/collab-tsm/mandates/{world.mandate.pk}/revoke/")
    assert resp.status_code == 302
    world.mandate.refresh_from_db()
    assert world.mandate.revoked_at is not None


# --- onboarding ---------------------------------------------------------------------------------

APPLICATION = {
    "name": "Fresh Energy",
    "slug": "fresh-energy",
    "roles": ["SP", "AP"],
    "contact_name": "Frida",
    "contact_email": "frida@fresh.test",
    "note": "We supply green power.",
}


def test_anyone_applies_and_the_operator_approves_through_the_pages(db, django_capture_on_commit_callbacks):
    resp = Client().post("/apply/", APPLICATION)
    assert resp.status_code == 201
    assert "Application received" in text(resp)
    org = Organisation.objects.get(slug="fresh-energy")
    assert org.status == OrgStatus.PENDING

    operator = logged_in(f.UserFactory(username="op", is_staff=True))
    queue = operator.get("/operator/applications/")
    assert queue.status_code == 200 and "Fresh Energy" in text(queue)
    with django_capture_on_commit_callbacks(execute=True):
        resp = operator.post(f"/operator/applications/{org.pk}/approve/")
    assert resp.status_code == 302
    org.refresh_from_db()
    assert org.status == OrgStatus.ACTIVE
    assert mail.outbox[-1].to == ["frida@fresh.test"]

    token = invitation_token_from_mail()
    joined = Client().post(
        f"/invitations/{token}/", {"username": "frida", "password": "a-long-pass-phrase-42"}
    )
    assert joined.status_code == 302
    assert Membership.objects.get(user__username="frida", org=org).role == MemberRole.OWNER

    twice = operator.post(f"/operator/applications/{org.pk}/approve/")
    assert twice.status_code == 409
    assert "already decided" in text(twice)


def test_the_operator_rejects_an_application(db):
    Client().post("/apply/", APPLICATION)
    org = Organisation.objects.get(slug="fresh-energy")
    operator = logged_in(f.UserFactory(username="op", is_staff=True))
    resp = operator.post(f"/operator/applications/{org.pk}/reject/", {"reason": "Unknown company"})
    assert resp.status_code == 302
    org.refresh_from_db()
    assert org.status == OrgStatus.REJECTED
    assert "fresh-energy" not in text(operator.get("/operator/applications/"))


def test_the_applications_queue_is_a_404_for_anyone_but_staff(world):
    client = logged_in(world.owner_user)
    assert client.get("/operator/applications/").status_code == 404
    Client().post("/apply/", APPLICATION)
    org = Organisation.objects.get(slug="fresh-energy")
    assert client.post(f"/operator/applications/{org.pk}/approve/").status_code == 404
    org.refresh_from_db()
    assert org.status == OrgStatus.PENDING


def test_applying_with_a_taken_short_name_is_a_409(world):
    resp = Client().post("/apply/", {**APPLICATION, "slug": "owner-sei"})
    assert resp.status_code == 409
    assert "is taken" in text(resp)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"slug": "Not A Slug"}, "lowercase letters"),
        ({"roles": []}, "This field is required"),
        ({"contact_email": "nope"}, "Enter a valid email address"),
    ],
)
def test_applying_with_bad_input_is_a_400_with_a_message(db, change, message):
    resp = Client().post("/apply/", {**APPLICATION, **change})
    assert resp.status_code == 400
    assert message in text(resp)
    assert not Organisation.objects.filter(name="Fresh Energy").exists()


# --- house rules --------------------------------------------------------------------------------


def test_no_view_reads_a_tenant_owned_model_directly():
    """Views reach tenant data only through visible_to/get_visible and selectors (STYLE habit 4)."""
    import ast
    from pathlib import Path

    import devices.access  # noqa: F401 - registers the device rules
    from tenants.access import tenant_owned_models

    names = {m.__name__ for m in tenant_owned_models()}
    root = Path(__file__).resolve().parents[2]
    offenders = []
    for path in [root / "portal" / "views.py", root / "tenants" / "views.py", root / "devices" / "views.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in {"objects", "_default_manager"}
                and isinstance(node.value, ast.Name)
                and node.value.id in names
            ):
                offenders.append(f"{path.name}:{node.lineno} {node.value.id}.{node.attr}")
    assert not offenders
