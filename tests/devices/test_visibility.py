"""Who sees which device, secure element and security domain (devices/access.py)."""

from __future__ import annotations

from typing import Any

import pytest

from devices import selectors
from devices.models import Device, SecureElement, SecurityDomain
from tenants.access import Action, resolve_actor, visible_to
from tests import factories as f


def seen(user: Any, org: str, model: Any, behalf: str | None = None) -> set[Any]:
    actor = resolve_actor(user, org, behalf)
    return set(visible_to(model, actor, Action.DEVICES_VIEW).values_list("pk", flat=True))


def test_the_issuer_and_manufacturer_sees_its_device_se_and_every_sd(world: Any) -> None:
    assert seen(world.owner_user, "owner-sei", Device) == {world.device.pk}
    assert seen(world.owner_user, "owner-sei", SecureElement) == {world.se.pk}
    assert seen(world.owner_user, "owner-sei", SecurityDomain) == {world.isd.pk, world.ssd.pk}


def test_a_provider_sees_the_device_it_has_a_domain_on_its_own_domain_and_the_root(world: Any) -> None:
    assert seen(world.provider_user, "provider-sp", Device) == {world.device.pk}
    assert seen(world.provider_user, "provider-sp", SecurityDomain) == {world.isd.pk, world.ssd.pk}


def test_providers_never_see_each_others_domains(world: Any) -> None:
    rival = f.OrganisationFactory(slug="rival-sp")
    rival_user = f.MembershipFactory(org=rival).user
    rival_sd = f.SecurityDomainFactory(secure_element=world.se, owner=rival, parent=world.isd)
    assert seen(rival_user, "rival-sp", SecurityDomain) == {world.isd.pk, rival_sd.pk}
    assert rival_sd.pk not in seen(world.provider_user, "provider-sp", SecurityDomain)
    # the subscriber living with the device knows everyone on it
    assert seen(world.subscriber_user, "home-ss", SecurityDomain) == {world.isd.pk, world.ssd.pk, rival_sd.pk}


def test_the_stranger_sees_only_its_own_device(world: Any) -> None:
    assert seen(world.stranger_user, "stranger-sp", Device) == {world.stranger_device.pk}
    assert seen(world.stranger_user, "stranger-sp", SecureElement) == set()
    assert seen(world.stranger_user, "stranger-sp", SecurityDomain) == set()


def test_an_active_consent_shows_the_device_and_a_revoked_one_does_not(world: Any) -> None:
    from django.utils import timezone

    grantee = f.OrganisationFactory(slug="consented-sp")
    user = f.MembershipFactory(org=grantee).user
    consent = f.ConsentFactory(subscriber=world.subscriber, grantee=grantee, device=world.device)
    assert seen(user, "consented-sp", Device) == {world.device.pk}
    type(consent).objects.filter(pk=consent.pk).update(revoked_at=timezone.now())
    assert seen(user, "consented-sp", Device) == set()


def test_a_secure_element_not_yet_in_a_device_is_seen_by_its_issuer_only(world: Any) -> None:
    loose = f.SecureElementFactory(device=None, issuer=world.owner)
    loose_isd = f.SecurityDomainFactory(secure_element=loose, owner=world.owner, is_isd=True)
    assert loose.pk in seen(world.owner_user, "owner-sei", SecureElement)
    assert loose_isd.pk in seen(world.owner_user, "owner-sei", SecurityDomain)
    for user, org in [(world.provider_user, "provider-sp"), (world.stranger_user, "stranger-sp")]:
        assert loose.pk not in seen(user, org, SecureElement)
        assert loose_isd.pk not in seen(user, org, SecurityDomain)
    # nor by a grantee acting on the issuer's behalf: a mandate is about devices
    assert loose.pk not in seen(world.collaborator_user, "collab-tsm", SecureElement, "owner-sei")
    assert loose_isd.pk not in seen(world.collaborator_user, "collab-tsm", SecurityDomain, "owner-sei")


@pytest.mark.parametrize(
    "scope, expected",
    [
        ({}, {"MTR-0001", "OBU-0001"}),
        ({"device_kinds": ["obu"]}, {"OBU-0001"}),
        ({"serials": ["MTR-0001"]}, {"MTR-0001"}),
        ({"issuer": "owner-sei"}, {"MTR-0001"}),
        ({"issuer": "someone-else"}, set()),
    ],
)
def test_a_mandate_scope_narrows_what_the_grantee_sees(
    world: Any, scope: dict[str, Any], expected: set[str]
) -> None:
    f.DeviceFactory(serial="OBU-0001", kind="obu", manufacturer=world.owner)
    type(world.mandate).objects.filter(pk=world.mandate.pk).update(scope=scope)
    actor = resolve_actor(world.collaborator_user, "collab-tsm", "owner-sei")
    assert {d.serial for d in selectors.device_list(actor=actor)} == expected


def test_device_hardware_lists_the_visible_domains_per_secure_element(world: Any) -> None:
    actor = resolve_actor(world.provider_user, "provider-sp")
    ses, sds = selectors.device_hardware(actor=actor, device=world.device)
    assert [se.pk for se in ses] == [world.se.pk]
    assert [sd.aid for sd in sds[world.se.pk]] == [world.isd.aid, world.ssd.aid]
    assert selectors.sd_tree(sds[world.se.pk]) == [(0, world.isd), (1, world.ssd)]


def test_the_device_detail_shows_only_the_domains_the_caller_may_see(world: Any) -> None:
    from tests.conftest import client_for

    rival = f.OrganisationFactory(slug="rival-sp")
    f.SecurityDomainFactory(secure_element=world.se, owner=rival, parent=world.isd, aid="A0000001515350BB")
    resp = client_for(world.provider_user).get(f"/api/v1/orgs/provider-sp/devices/{world.device.pk}/")
    assert resp.status_code == 200
    (se,) = resp.json()["secure_elements"]
    assert {sd["aid"] for sd in se["security_domains"]} == {world.isd.aid, world.ssd.aid}


def test_an_sd_whose_parent_is_hidden_hangs_from_the_root_of_the_tree(world: Any) -> None:
    child = f.SecurityDomainFactory(secure_element=world.se, owner=world.provider, parent=world.ssd)
    rows = selectors.sd_tree([world.isd, child])
    assert rows == [(0, world.isd), (0, child)]


def test_only_the_issuer_or_its_mandated_tsm_records_a_domain(world: Any) -> None:
    from devices import services
    from devices.services import DeviceError

    with pytest.raises(DeviceError):
        services.security_domain_record(
            actor=resolve_actor(world.stranger_user, "stranger-sp"),
            secure_element=world.se,
            aid="A0000001515350CC",
            owner=world.stranger,
            privileges=[],
        )
    sd = services.security_domain_record(
        actor=resolve_actor(world.collaborator_user, "collab-tsm", "owner-sei"),
        secure_element=world.se,
        aid="A0000001515350CC",
        owner=world.provider,
        privileges=["security_domain"],
    )
    assert sd.parent == world.isd


def test_a_grantee_whose_mandate_lacks_sd_create_cannot_record_a_domain(world: Any) -> None:
    from devices import services
    from portal.errors import DomainError

    type(world.mandate).objects.filter(pk=world.mandate.pk).update(actions=["devices.view"])
    behalf = resolve_actor(world.collaborator_user, "collab-tsm", "owner-sei")
    before = SecurityDomain.objects.count()
    with pytest.raises(DomainError) as info:
        services.security_domain_record(
            actor=behalf, secure_element=world.se, aid="A0000001515350DD", owner=world.provider, privileges=[]
        )
    assert info.value.status == 404
    assert SecurityDomain.objects.count() == before
