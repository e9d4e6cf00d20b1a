"""Mandates: granting, revoking, expiry — and what acting on behalf can and cannot reach."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from audit.models import AuditEvent, AuditEventOrg
from tenants import services
from tenants.access import Action, resolve_actor
from tenants.errors import InvalidMandate, MandateNotActive
from tenants.models import Mandate, MemberRole
from tests import factories as f
from tests.conftest import client_for
from tests.support.audit import AuditBroken, audit_fails, last_seq, tags_since
from tests.support.db import changed_counts, row_counts

MANDATES = "/api/v1/orgs/owner-sei/mandates/"


def owner_actor(world: Any) -> Any:
    return resolve_actor(world.owner_user, "owner-sei")


def devices_on_behalf(user: Any, acting: str, grantor: str = "owner-sei") -> Any:
    return client_for(user).get(f"/api/v1/orgs/{acting}/devices/?on_behalf_of={grantor}")


# --- granting ------------------------------------------------------------------------------------


def test_granting_a_mandate_lets_the_grantee_act_on_behalf_and_is_audited_for_both(world: Any) -> None:
    # given the stranger sees nothing of the owner
    assert devices_on_behalf(world.stranger_user, "stranger-sp").status_code == 404
    start = last_seq()
    # when the owner grants it devices.view
    resp = client_for(world.owner_user).post(
        MANDATES, {"grantee": "stranger-sp", "actions": ["devices.view"]}, format="json"
    )
    assert resp.status_code == 201, resp.content
    body = resp.json()
    assert (body["grantor"], body["grantee"], body["actions"], body["state"]) == (
        "owner-sei",
        "stranger-sp",
        ["devices.view"],
        "active",
    )
    # then the stranger lists the owner's devices on its behalf
    resp = devices_on_behalf(world.stranger_user, "stranger-sp")
    assert resp.status_code == 200
    assert [d["serial"] for d in resp.json()["results"]] == ["MTR-0001"]
    # and the grant is one event that both organisations can read
    assert tags_since(start) == ["mandate:grant"]
    event = AuditEvent.objects.get(seq__gt=start)
    assert set(AuditEventOrg.objects.filter(event=event).values_list("org_id", flat=True)) == {
        world.owner.pk,
        world.stranger.pk,
    }
    assert event.details["actions"] == ["devices.view"]


def test_a_mandate_without_audit_view_does_not_open_the_audit_trail(world: Any) -> None:
    services.mandate_grant(actor=owner_actor(world), grantee=world.stranger, actions=["devices.view"])
    client = client_for(world.stranger_user)
    assert client.get("/api/v1/orgs/stranger-sp/audit/?on_behalf_of=owner-sei").status_code == 404
    assert client.get("/api/v1/orgs/stranger-sp/devices/?on_behalf_of=owner-sei").status_code == 200


def test_a_mandate_scope_narrows_the_devices(world: Any) -> None:
    other = f.DeviceFactory(serial="OBU-0001", kind="obu", manufacturer=world.owner)
    assert other
    services.mandate_grant(
        actor=owner_actor(world),
        grantee=world.stranger,
        actions=["devices.view"],
        scope={"device_kinds": ["obu"]},
    )
    resp = devices_on_behalf(world.stranger_user, "stranger-sp")
    assert [d["serial"] for d in resp.json()["results"]] == ["OBU-0001"]
    assert (
        client_for(world.stranger_user)
        .get(f"/api/v1/orgs/stranger-sp/devices/{world.device.pk}/?on_behalf_of=owner-sei")
        .status_code
        == 404
    )


def test_a_mandate_to_oneself_is_refused(world: Any) -> None:
    before = row_counts()
    resp = client_for(world.owner_user).post(
        MANDATES, {"grantee": "owner-sei", "actions": ["devices.view"]}, format="json"
    )
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "invalid_mandate"
    assert not changed_counts(before, row_counts())
    with pytest.raises(InvalidMandate):
        services.mandate_grant(actor=owner_actor(world), grantee=world.owner, actions=["devices.view"])


@pytest.mark.parametrize(
    "actions", [["devices.steal"], [], ["devices.view", "devices.view"], ["DEVICES.VIEW"]]
)
def test_unknown_empty_or_repeated_actions_are_refused(world: Any, actions: list[str]) -> None:
    before = row_counts()
    resp = client_for(world.owner_user).post(
        MANDATES, {"grantee": "stranger-sp", "actions": actions}, format="json"
    )
    assert resp.status_code == 400, resp.content
    assert not changed_counts(before, row_counts())
    with pytest.raises(InvalidMandate):
        services.mandate_grant(actor=owner_actor(world), grantee=world.stranger, actions=actions)


@pytest.mark.parametrize(
    "scope",
    [
        {"colour": "red"},
        {"issuer": 5},
        {"device_kinds": ["toaster"]},
        {"device_kinds": "meter"},
        {"serials": "MTR-0001"},
        {"serials": [""]},
        {"serials": [1]},
        {"serials": ["x" * 65]},
    ],
)
def test_a_malformed_scope_is_refused(world: Any, scope: dict[str, Any]) -> None:
    before = row_counts()
    resp = client_for(world.owner_user).post(
        MANDATES, {"grantee": "stranger-sp", "actions": ["devices.view"], "scope": scope}, format="json"
    )
    assert resp.status_code == 400, resp.content
    assert not changed_counts(before, row_counts())


def test_an_unknown_or_inactive_grantee_is_404(world: Any) -> None:
    f.OrganisationFactory(slug="pending-org", status="pending")
    for slug in ("no-such-org", "pending-org"):
        resp = client_for(world.owner_user).post(
            MANDATES, {"grantee": slug, "actions": ["devices.view"]}, format="json"
        )
        assert resp.status_code == 404, slug


def test_valid_until_must_lie_ahead(world: Any) -> None:
    past = (timezone.now() - timedelta(days=1)).isoformat()
    resp = client_for(world.owner_user).post(
        MANDATES, {"grantee": "stranger-sp", "actions": ["devices.view"], "valid_until": past}, format="json"
    )
    assert resp.status_code == 400
    assert resp.json()["error"]["fields"] == {"valid_until": ["invalid"]}


def test_a_mandate_cannot_be_granted_on_someone_elses_behalf(world: Any) -> None:
    # the collaborator's mandate does not include mandates.manage, and granting on behalf is never possible
    resp = client_for(world.collaborator_user).post(
        "/api/v1/orgs/collab-tsm/mandates/?on_behalf_of=owner-sei",
        {"grantee": "stranger-sp", "actions": ["devices.view"]},
        format="json",
    )
    assert resp.status_code == 404
    behalf = resolve_actor(world.collaborator_user, "collab-tsm", "owner-sei")
    with pytest.raises(Exception) as info:
        services.mandate_grant(actor=behalf, grantee=world.stranger, actions=["devices.view"])
    assert getattr(info.value, "status", None) in (400, 404)
    assert Mandate.objects.count() == 1


def test_an_auditor_cannot_grant(world: Any) -> None:
    resp = client_for(world.owner_auditor).post(
        MANDATES, {"grantee": "stranger-sp", "actions": ["devices.view"]}, format="json"
    )
    assert resp.status_code == 403
    assert Mandate.objects.count() == 1


# --- revoking, expiry -------------------------------------------------------------------------------


def test_a_revoked_mandate_no_longer_lets_the_grantee_act_on_behalf(world: Any) -> None:
    assert devices_on_behalf(world.collaborator_user, "collab-tsm").status_code == 200
    start = last_seq()
    resp = client_for(world.owner_user).post(f"{MANDATES}{world.mandate.pk}/revoke/")
    assert resp.status_code == 200, resp.content
    assert resp.json()["state"] == "revoked"
    assert devices_on_behalf(world.collaborator_user, "collab-tsm").status_code == 404
    assert (
        client_for(world.collaborator_user)
        .get("/api/v1/orgs/collab-tsm/audit/?on_behalf_of=owner-sei")
        .status_code
        == 404
    )
    assert tags_since(start) == ["mandate:revoke"]


def test_revoking_twice_is_refused_and_audited_once(world: Any) -> None:
    actor = owner_actor(world)
    services.mandate_revoke(actor=actor, mandate=world.mandate)
    start = last_seq()
    with pytest.raises(MandateNotActive):
        services.mandate_revoke(actor=actor, mandate=world.mandate)
    resp = client_for(world.owner_user).post(f"{MANDATES}{world.mandate.pk}/revoke/")
    assert resp.status_code == 409
    assert tags_since(start) == []


def test_the_grantee_may_renounce_a_mandate(world: Any) -> None:
    resp = client_for(world.collaborator_user).post(
        f"/api/v1/orgs/collab-tsm/mandates/{world.mandate.pk}/revoke/"
    )
    assert resp.status_code == 200
    assert devices_on_behalf(world.collaborator_user, "collab-tsm").status_code == 404


def test_a_third_party_cannot_revoke_a_mandate(world: Any) -> None:
    resp = client_for(world.stranger_user).post(
        f"/api/v1/orgs/stranger-sp/mandates/{world.mandate.pk}/revoke/"
    )
    assert resp.status_code == 404
    world.mandate.refresh_from_db()
    assert world.mandate.revoked_at is None


def test_an_expired_mandate_no_longer_lets_the_grantee_act_on_behalf(world: Any) -> None:
    Mandate.objects.filter(pk=world.mandate.pk).update(
        valid_from=timezone.now() - timedelta(days=2), valid_until=timezone.now() - timedelta(seconds=1)
    )
    world.mandate.refresh_from_db()
    assert world.mandate.state == "expired"
    assert devices_on_behalf(world.collaborator_user, "collab-tsm").status_code == 404
    assert (
        client_for(world.collaborator_user)
        .get(f"/api/v1/orgs/collab-tsm/devices/{world.device.pk}/?on_behalf_of=owner-sei")
        .status_code
        == 404
    )


def test_a_mandate_that_has_not_started_does_not_work_yet(world: Any) -> None:
    Mandate.objects.filter(pk=world.mandate.pk).update(valid_from=timezone.now() + timedelta(days=1))
    assert devices_on_behalf(world.collaborator_user, "collab-tsm").status_code == 404


def test_a_suspended_grantor_cannot_be_acted_for(world: Any) -> None:
    type(world.owner).objects.filter(pk=world.owner.pk).update(status="suspended")
    assert devices_on_behalf(world.collaborator_user, "collab-tsm").status_code == 404


def test_the_acting_party_is_recorded_in_the_audit_event(world: Any) -> None:
    from devices import services as device_services

    behalf = resolve_actor(world.collaborator_user, "collab-tsm", "owner-sei")
    assert behalf.can(Action.DEVICES_VIEW) and not behalf.can(Action.MEMBERS_VIEW)
    device_services.security_domain_record(
        actor=behalf, secure_element=world.se, aid="A0000001515350FF", owner=world.provider, privileges=[]
    )
    event = AuditEvent.objects.get(tag="sd:register")
    assert (event.acting_org_id, event.on_behalf_of_id, event.actor_username) == (
        world.collaborator.pk,
        world.owner.pk,
        "collaborator-user",
    )


# --- every write and its audit event are one unit ----------------------------------------------


def test_granting_writes_nothing_when_the_audit_fails(world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    before = row_counts()
    with audit_fails(monkeypatch, services), pytest.raises(AuditBroken):
        services.mandate_grant(actor=owner_actor(world), grantee=world.stranger, actions=["devices.view"])
    assert not changed_counts(before, row_counts())


def test_revoking_writes_nothing_when_the_audit_fails(world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with audit_fails(monkeypatch, services), pytest.raises(AuditBroken):
        services.mandate_revoke(actor=owner_actor(world), mandate=world.mandate)
    world.mandate.refresh_from_db()
    assert world.mandate.revoked_at is None
    assert devices_on_behalf(world.collaborator_user, "collab-tsm").status_code == 200


def test_an_operator_role_may_view_but_not_manage_mandates(world: Any) -> None:
    operator = f.MembershipFactory(org=world.owner, role=MemberRole.OPERATOR).user
    client = client_for(operator)
    assert client.get(MANDATES).status_code == 200
    assert client.post(f"{MANDATES}{world.mandate.pk}/revoke/").status_code == 403
    world.mandate.refresh_from_db()
    assert world.mandate.revoked_at is None
