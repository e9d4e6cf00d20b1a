"""Onboarding: apply → operator decides → the contact is invited as owner → joins (issue 2 item 2)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.core import mail

from audit.models import AuditEvent, AuditEventOrg
from tenants import services
from tenants.errors import ApplicationAlreadyDecided, InvalidApplication, NotPlatformOperator, SlugTaken
from tenants.models import Invitation, MemberRole, Membership, Organisation, OrgStatus
from tests import factories as f
from tests.conftest import client_for
from tests.support.audit import AuditBroken, audit_fails, last_seq, tags_since
from tests.support.db import changed_counts, row_counts

APPLICATION = {
    "name": "Grid Operator",
    "slug": "grid-op",
    "roles": ["SP", "NP"],
    "contact_name": "Ada",
    "contact_email": "ada@grid.example",
    "note": "We run meters.",
}


@pytest.fixture
def operator(db: Any) -> Any:
    return f.UserFactory(username="platform-op", is_staff=True)


def invitation_token(message: Any) -> str:
    match = re.search(r"/invitations/([A-Za-z0-9_-]+)/", message.body)
    assert match, message.body
    return match.group(1)


def test_an_approved_applicant_is_invited_by_email_and_joins_as_owner(
    operator: Any, api_client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # given an application, sent by anyone
    start = last_seq()
    resp = api_client.post("/api/v1/applications/", APPLICATION, format="json")
    assert resp.status_code == 201, resp.content
    org = Organisation.objects.get(slug="grid-op")
    assert org.status == OrgStatus.PENDING
    assert org.roles == ["NP", "SP"]
    # when the operator approves it (the email goes out on commit)
    with django_capture_on_commit_callbacks(execute=True):
        resp = client_for(operator).post(f"/api/v1/applications/{org.pk}/approve/", {}, format="json")
    assert resp.status_code == 200, resp.content
    assert resp.json()["status"] == "active"
    # then the contact has an invitation link by email
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["ada@grid.example"]
    assert "Grid Operator" in message.subject
    token = invitation_token(message)
    # and only the token's hash is stored
    invitation = Invitation.objects.get(org=org)
    assert token not in invitation.token_hash
    assert invitation.role == MemberRole.OWNER
    # when the contact accepts it, creating an account
    resp = api_client.post(
        "/api/v1/invitations/accept/",
        {"token": token, "username": "ada", "password": "a-long-and-unusual-passphrase"},
        format="json",
    )
    # then they are the organisation's owner
    assert resp.status_code == 201, resp.content
    membership = Membership.objects.get(org=org)
    assert (membership.user.username, membership.role) == ("ada", MemberRole.OWNER)
    assert membership.user.check_password("a-long-and-unusual-passphrase")
    # and every step was audited, in order
    assert tags_since(start) == ["org:apply", "org:approve", "member:invite", "member:join"]
    # and the new owner can use the organisation
    assert client_for(membership.user).get("/api/v1/orgs/grid-op/").status_code == 200


def test_an_application_is_not_usable_before_approval(db: Any, api_client: Any) -> None:
    api_client.post("/api/v1/applications/", APPLICATION, format="json")
    org = Organisation.objects.get(slug="grid-op")
    user = f.UserFactory()
    f.MembershipFactory(org=org, user=user)
    assert client_for(user).get("/api/v1/orgs/grid-op/").status_code == 404


def test_a_rejected_application_gets_no_invitation(
    operator: Any, django_capture_on_commit_callbacks: Any
) -> None:
    org = services.organisation_apply(
        name="Nope", slug="nope", roles=["SP"], contact_name="N", contact_email="n@example.test"
    )
    start = last_seq()
    with django_capture_on_commit_callbacks(execute=True):
        resp = client_for(operator).post(
            f"/api/v1/applications/{org.pk}/reject/", {"reason": "not a GP stakeholder"}, format="json"
        )
    assert resp.status_code == 200, resp.content
    org.refresh_from_db()
    assert org.status == OrgStatus.REJECTED
    assert not Invitation.objects.filter(org=org).exists()
    assert mail.outbox == []
    assert tags_since(start) == ["org:reject"]
    assert AuditEvent.objects.get(seq__gt=start).details == {"reason": "not a GP stakeholder"}


@pytest.mark.parametrize(
    "first, second", [("approve", "approve"), ("approve", "reject"), ("reject", "approve")]
)
def test_an_application_is_decided_once(operator: Any, first: str, second: str) -> None:
    org = services.organisation_apply(
        name="Once", slug="once", roles=["SP"], contact_name="O", contact_email="o@example.test"
    )
    client = client_for(operator)
    assert client.post(f"/api/v1/applications/{org.pk}/{first}/", {}, format="json").status_code == 200
    before, start = row_counts(), last_seq()
    resp = client.post(f"/api/v1/applications/{org.pk}/{second}/", {}, format="json")
    assert resp.status_code == 409
    assert resp.json()["error"]["code"] == "application_decided"
    assert not changed_counts(before, row_counts())
    assert tags_since(start) == []


def test_double_approval_in_the_service_is_refused(operator: Any) -> None:
    org = services.organisation_apply(
        name="Twice", slug="twice", roles=["SP"], contact_name="T", contact_email="t@example.test"
    )
    actor = services.PlatformActor(operator)
    services.organisation_approve(operator=actor, org=org)
    with pytest.raises(ApplicationAlreadyDecided):
        services.organisation_approve(operator=actor, org=org)
    assert Invitation.objects.filter(org=org).count() == 1


def test_a_taken_short_name_answers_409_and_writes_nothing(db: Any, api_client: Any) -> None:
    assert api_client.post("/api/v1/applications/", APPLICATION, format="json").status_code == 201
    before, start = row_counts(), last_seq()
    resp = api_client.post("/api/v1/applications/", {**APPLICATION, "name": "Another"}, format="json")
    assert resp.status_code == 409
    assert resp.json()["error"]["code"] == "slug_taken"
    assert "grid-op" in resp.json()["error"]["message"]
    assert not changed_counts(before, row_counts())
    assert tags_since(start) == []


def test_only_a_platform_operator_decides_applications(world: Any) -> None:
    org = services.organisation_apply(
        name="X", slug="x-org", roles=["SP"], contact_name="X", contact_email="x@example.test"
    )
    for user in (world.owner_user, world.stranger_user):
        resp = client_for(user).post(f"/api/v1/applications/{org.pk}/approve/", {}, format="json")
        assert resp.status_code == 403
        assert resp.json()["error"]["code"] == "not_platform_operator"
        assert client_for(user).get("/api/v1/applications/").status_code == 403
    with pytest.raises(NotPlatformOperator):
        services.PlatformActor(world.owner_user)
    org.refresh_from_db()
    assert org.status == OrgStatus.PENDING


def test_the_operator_lists_pending_applications_only(operator: Any, world: Any) -> None:
    services.organisation_apply(
        name="Pending", slug="pending-org", roles=["SP"], contact_name="P", contact_email="p@example.test"
    )
    resp = client_for(operator).get("/api/v1/applications/")
    assert [a["slug"] for a in resp.json()["results"]] == ["pending-org"]


def test_an_unknown_application_is_404(operator: Any) -> None:
    client = client_for(operator)
    assert client.get("/api/v1/applications/not-a-uuid/").status_code == 404
    assert client.get("/api/v1/applications/00000000-0000-0000-0000-000000000000/").status_code == 404


@pytest.mark.parametrize(
    "change, field",
    [
        ({"name": "   "}, "name"),
        ({"slug": "Bad Slug"}, "slug"),
        ({"slug": "-lead"}, "slug"),
        ({"roles": []}, "roles"),
        ({"roles": ["XX"]}, "roles"),
    ],
)
def test_the_apply_service_validates_its_input(db: Any, change: dict[str, Any], field: str) -> None:
    args = {k: v for k, v in APPLICATION.items()}
    args.update(change)
    with pytest.raises(InvalidApplication) as info:
        services.organisation_apply(**args)
    assert field in info.value.fields
    assert not Organisation.objects.exists()


def test_applying_writes_the_organisation_and_its_audit_event_together(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with audit_fails(monkeypatch, services), pytest.raises(AuditBroken):
        services.organisation_apply(**APPLICATION)
    assert not Organisation.objects.exists()


def test_approving_writes_status_invitation_and_audit_together(
    operator: Any, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    org = services.organisation_apply(**APPLICATION)
    with (
        django_capture_on_commit_callbacks(execute=True),
        audit_fails(monkeypatch, services),
        pytest.raises(AuditBroken),
    ):
        services.organisation_approve(operator=services.PlatformActor(operator), org=org)
    org.refresh_from_db()
    assert org.status == OrgStatus.PENDING
    assert not Invitation.objects.exists()
    assert mail.outbox == []


def test_the_application_event_concerns_the_applicant(db: Any) -> None:
    org = services.organisation_apply(**APPLICATION)
    event = AuditEvent.objects.get(tag="org:apply")
    assert list(AuditEventOrg.objects.filter(event=event).values_list("org_id", flat=True)) == [org.pk]


def test_the_apply_service_refuses_a_taken_short_name_and_keeps_the_first(db: Any) -> None:
    first = services.organisation_apply(**APPLICATION)
    with pytest.raises(SlugTaken) as info:
        services.organisation_apply(**{**APPLICATION, "name": "Impostor"})
    assert info.value.status == 409
    assert list(Organisation.objects.values_list("pk", "name")) == [(first.pk, "Grid Operator")]
