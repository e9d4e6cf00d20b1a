"""Invitations and memberships: one-time links, one answer for every dead link, owners never run out."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.db import close_old_connections, connection
from django.utils import timezone

from tenants import services
from tenants.access import resolve_actor
from tenants.errors import AlreadyMember, InvitationInvalid, LastOwner
from tenants.models import Invitation, MemberRole, Membership
from tests import factories as f
from tests.conftest import client_for
from tests.support.audit import AuditBroken, audit_fails, last_seq, tags_since
from tests.support.db import changed_counts, row_counts

DEAD_LINK = "This invitation link is not valid (it may have expired or been used)."


def owner_actor(world: Any) -> Any:
    return resolve_actor(world.owner_user, "owner-sei")


def invite(world: Any, email: str = "new@example.test", role: str = MemberRole.OPERATOR) -> tuple[Any, str]:
    return services.invitation_create(actor=owner_actor(world), email=email, role=role)


def accept(api_client: Any, token: str, username: str = "newbie") -> Any:
    return api_client.post(
        "/api/v1/invitations/accept/",
        {"token": token, "username": username, "password": "a-long-and-unusual-passphrase"},
        format="json",
    )


# --- creating and accepting --------------------------------------------------------------------


def test_an_owner_invites_by_email_and_the_invitee_joins_with_the_invited_role(
    world: Any, api_client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    start = last_seq()
    with django_capture_on_commit_callbacks(execute=True):
        resp = client_for(world.owner_user).post(
            "/api/v1/orgs/owner-sei/invitations/",
            {"email": "new@example.test", "role": "operator"},
            format="json",
        )
    assert resp.status_code == 201, resp.content
    assert "token" not in resp.json()  # the token goes to the invitee only
    (message,) = mail.outbox
    assert message.to == ["new@example.test"]
    token = message.body.split("/invitations/")[1].split("/")[0]
    assert accept(api_client, token).status_code == 201
    membership = Membership.objects.get(user__username="newbie")
    assert (membership.org, membership.role) == (world.owner, MemberRole.OPERATOR)
    assert tags_since(start) == ["member:invite", "member:join"]


def test_a_signed_in_user_accepts_without_creating_an_account(world: Any) -> None:
    _, token = invite(world)
    resp = client_for(world.stranger_user).post(
        "/api/v1/invitations/accept/", {"token": token}, format="json"
    )
    assert resp.status_code == 201, resp.content
    assert Membership.objects.filter(user=world.stranger_user, org=world.owner).exists()


def test_an_existing_member_cannot_accept_again(world: Any) -> None:
    _, token = invite(world)
    before = row_counts()
    with pytest.raises(AlreadyMember):
        services.invitation_accept(token=token, user=world.owner_auditor)
    assert not changed_counts(before, row_counts())
    assert Invitation.objects.get().state == "open"


def test_a_weak_password_is_refused_and_no_account_is_made(world: Any, api_client: Any) -> None:
    _, token = invite(world)
    before = row_counts()
    resp = api_client.post(
        "/api/v1/invitations/accept/",
        {"token": token, "username": "weak", "password": "password"},
        format="json",
    )
    assert resp.status_code == 400
    assert "password" in resp.json()["error"]["fields"]
    assert not changed_counts(before, row_counts())


def test_a_taken_username_is_refused(world: Any, api_client: Any) -> None:
    _, token = invite(world)
    resp = accept(api_client, token, username="owner-user")
    assert resp.status_code == 400
    assert Invitation.objects.get().state == "open"


def test_an_operator_cannot_invite_and_an_admin_cannot_invite_an_owner(world: Any) -> None:
    operator = f.MembershipFactory(org=world.owner, role=MemberRole.OPERATOR).user
    resp = client_for(operator).post(
        "/api/v1/orgs/owner-sei/invitations/", {"email": "x@example.test", "role": "auditor"}, format="json"
    )
    assert resp.status_code == 403
    admin = f.MembershipFactory(org=world.owner, role=MemberRole.ADMIN).user
    resp = client_for(admin).post(
        "/api/v1/orgs/owner-sei/invitations/", {"email": "x@example.test", "role": "owner"}, format="json"
    )
    assert resp.status_code == 400
    assert not Invitation.objects.exists()


# --- dead links: one answer for all -------------------------------------------------------------


def _expired(world: Any, api_client: Any) -> str:
    invitation, token = invite(world)
    Invitation.objects.filter(pk=invitation.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    return token


def _revoked(world: Any, api_client: Any) -> str:
    invitation, token = invite(world)
    services.invitation_revoke(actor=owner_actor(world), invitation=invitation)
    return token


def _reused(world: Any, api_client: Any) -> str:
    _, token = invite(world)
    assert accept(api_client, token, username="first-taker").status_code == 201
    return token


def _unknown(world: Any, api_client: Any) -> str:
    return "this-token-was-never-issued-0123456789abcdef"


def _suspended_org(world: Any, api_client: Any) -> str:
    _, token = invite(world)
    world.owner.__class__.objects.filter(pk=world.owner.pk).update(status="suspended")
    return token


@pytest.mark.parametrize("make", [_expired, _revoked, _reused, _unknown, _suspended_org])
def test_a_dead_invitation_link_answers_410_with_one_message(world: Any, api_client: Any, make: Any) -> None:
    token = make(world, api_client)
    before = row_counts()
    resp = accept(api_client, token, username="latecomer")
    assert resp.status_code == 410, resp.content
    assert resp.json() == {"error": {"code": "invitation_invalid", "message": DEAD_LINK}}
    assert not changed_counts(before, row_counts())


@pytest.mark.parametrize("token", ["", "x" * 201])
def test_an_empty_or_oversized_token_is_a_dead_link_too(db: Any, token: str) -> None:
    with pytest.raises(InvitationInvalid, match="not valid"):
        services.invitation_lookup(token=token)


def test_revoking_twice_is_refused_and_audited_once(world: Any) -> None:
    invitation, _ = invite(world)
    start = last_seq()
    client = client_for(world.owner_user)
    url = f"/api/v1/orgs/owner-sei/invitations/{invitation.pk}/revoke/"
    resp = client.post(url)
    assert resp.status_code == 200
    assert resp.json()["state"] == "revoked"
    assert client.post(url).status_code == 410
    assert tags_since(start) == ["invitation:revoke"]


# --- concurrency: two accepts of one link -------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_accepts_of_one_link_make_one_membership(settings: Any) -> None:
    # given an open invitation and two different users holding the link
    org = f.OrganisationFactory(slug="race-org")
    owner = f.MembershipFactory(org=org, role=MemberRole.OWNER).user
    users = [f.UserFactory(username=f"racer{i}") for i in range(2)]
    _, token = services.invitation_create(
        actor=resolve_actor(owner, "race-org"), email="r@example.test", role="operator"
    )
    barrier = threading.Barrier(len(users))
    outcomes: list[str] = []

    def race(user: Any) -> None:
        close_old_connections()
        try:
            barrier.wait(timeout=10)
            services.invitation_accept(token=token, user=user)
            outcomes.append("joined")
        except InvitationInvalid:
            outcomes.append("refused")
        except Exception as exc:  # noqa: BLE001 - reported below
            outcomes.append(f"error: {exc!r}")
        finally:
            connection.close()

    # when both accept at the same moment
    threads = [threading.Thread(target=race, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    # then exactly one joined; the other got the dead-link answer
    assert sorted(outcomes) == ["joined", "refused"], outcomes
    assert Membership.objects.filter(org=org, role=MemberRole.OPERATOR).count() == 1
    assert Invitation.objects.get().accepted_by_id in {u.pk for u in users}


# --- members: roles and the last owner ------------------------------------------------------------


def test_the_last_owner_cannot_be_demoted(world: Any) -> None:
    membership = Membership.objects.get(user=world.owner_user, org=world.owner)
    before, start = row_counts(), last_seq()
    resp = client_for(world.owner_user).patch(
        f"/api/v1/orgs/owner-sei/members/{membership.pk}/", {"role": "admin"}, format="json"
    )
    assert resp.status_code == 409
    assert resp.json()["error"]["code"] == "last_owner"
    membership.refresh_from_db()
    assert membership.role == MemberRole.OWNER
    assert not changed_counts(before, row_counts())
    assert tags_since(start) == []


def test_the_last_owner_cannot_be_removed(world: Any) -> None:
    membership = Membership.objects.get(user=world.owner_user, org=world.owner)
    resp = client_for(world.owner_user).delete(f"/api/v1/orgs/owner-sei/members/{membership.pk}/")
    assert resp.status_code == 409
    assert Membership.objects.filter(pk=membership.pk).exists()
    with pytest.raises(LastOwner):
        services.membership_remove(actor=owner_actor(world), membership=membership)


def test_with_a_second_owner_the_first_may_step_down(world: Any) -> None:
    auditor = Membership.objects.get(user=world.owner_auditor, org=world.owner)
    me = Membership.objects.get(user=world.owner_user, org=world.owner)
    actor = owner_actor(world)
    start = last_seq()
    services.membership_set_role(actor=actor, membership=auditor, role=MemberRole.OWNER)
    services.membership_set_role(actor=actor, membership=me, role=MemberRole.ADMIN)
    assert tags_since(start) == ["member:role", "member:role"]
    me.refresh_from_db()
    assert me.role == MemberRole.ADMIN


def test_an_owner_removes_a_member_and_it_is_audited(world: Any) -> None:
    auditor = Membership.objects.get(user=world.owner_auditor, org=world.owner)
    start = last_seq()
    resp = client_for(world.owner_user).delete(f"/api/v1/orgs/owner-sei/members/{auditor.pk}/")
    assert resp.status_code == 204
    assert not Membership.objects.filter(pk=auditor.pk).exists()
    assert tags_since(start) == ["member:remove"]
    assert client_for(world.owner_auditor).get("/api/v1/orgs/owner-sei/").status_code == 404


def test_an_auditor_may_not_change_roles(world: Any) -> None:
    me = Membership.objects.get(user=world.owner_user, org=world.owner)
    resp = client_for(world.owner_auditor).patch(
        f"/api/v1/orgs/owner-sei/members/{me.pk}/", {"role": "auditor"}, format="json"
    )
    assert resp.status_code == 403
    me.refresh_from_db()
    assert me.role == MemberRole.OWNER


def test_an_admin_may_not_touch_an_owner(world: Any) -> None:
    admin = f.MembershipFactory(org=world.owner, role=MemberRole.ADMIN).user
    me = Membership.objects.get(user=world.owner_user, org=world.owner)
    client = client_for(admin)
    assert (
        client.patch(
            f"/api/v1/orgs/owner-sei/members/{me.pk}/", {"role": "auditor"}, format="json"
        ).status_code
        == 400
    )
    assert client.delete(f"/api/v1/orgs/owner-sei/members/{me.pk}/").status_code == 400
    me.refresh_from_db()
    assert me.role == MemberRole.OWNER


# --- every write and its audit event are one unit ----------------------------------------------


def test_inviting_writes_nothing_and_sends_nothing_when_the_audit_fails(
    world: Any, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    before = row_counts()
    with (
        django_capture_on_commit_callbacks(execute=True),
        audit_fails(monkeypatch, services),
        pytest.raises(AuditBroken),
    ):
        invite(world)
    assert not changed_counts(before, row_counts())
    assert mail.outbox == []


def test_accepting_writes_nothing_when_the_audit_fails(world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _, token = invite(world)
    before = row_counts()
    with audit_fails(monkeypatch, services), pytest.raises(AuditBroken):
        services.invitation_accept(token=token, username="ghost", password="a-long-and-unusual-passphrase")
    assert not changed_counts(before, row_counts())
    assert Invitation.objects.get().state == "open"


def test_revoking_and_role_changes_write_nothing_when_the_audit_fails(
    world: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    invitation, _ = invite(world)
    auditor = Membership.objects.get(user=world.owner_auditor, org=world.owner)
    actor = owner_actor(world)
    with audit_fails(monkeypatch, services):
        with pytest.raises(AuditBroken):
            services.invitation_revoke(actor=actor, invitation=invitation)
        with pytest.raises(AuditBroken):
            services.membership_set_role(actor=actor, membership=auditor, role=MemberRole.ADMIN)
        with pytest.raises(AuditBroken):
            services.membership_remove(actor=actor, membership=auditor)
    assert Invitation.objects.get().state == "open"
    auditor.refresh_from_db()
    assert auditor.role == MemberRole.AUDITOR


@pytest.mark.django_db(transaction=True)
def test_two_owners_demoting_each_other_at_once_leave_one_owner(monkeypatch: pytest.MonkeyPatch) -> None:
    # given two owners, and a pause between counting the remaining owners and writing, so the two
    # requests certainly overlap (the window a real race has to hit)
    org = f.OrganisationFactory(slug="two-owners")
    a = f.MembershipFactory(org=org, role=MemberRole.OWNER)
    b = f.MembershipFactory(org=org, role=MemberRole.OWNER)
    real_count = services._owners_left

    def slow_count(*args: Any, **kwargs: Any) -> int:
        n = real_count(*args, **kwargs)
        time.sleep(0.3)
        return n

    monkeypatch.setattr(services, "_owners_left", slow_count)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def demote(me: Any, other: Any) -> None:
        close_old_connections()
        try:
            barrier.wait(timeout=10)
            actor = resolve_actor(me.user, "two-owners")
            services.membership_set_role(
                actor=actor, membership=Membership.objects.get(pk=other.pk), role=MemberRole.ADMIN
            )
            outcomes.append("demoted")
        except LastOwner:
            outcomes.append("last owner")
        except Exception as exc:  # noqa: BLE001 - reported below
            outcomes.append(f"error: {exc!r}")
        finally:
            connection.close()

    # when each demotes the other at the same moment
    threads = [threading.Thread(target=demote, args=(a, b)), threading.Thread(target=demote, args=(b, a))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    # then one succeeded, the other was refused, and the organisation still has an owner
    assert sorted(outcomes) == ["demoted", "last owner"], outcomes
    assert Membership.objects.filter(org=org, role=MemberRole.OWNER).count() == 1
