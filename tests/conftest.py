"""Shared fixtures: the three-organisation world (STYLE habit 10) and service helpers."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

import pytest

from tests import factories as f

REQUIRE_SERVICES = os.environ.get("TESSERA_REQUIRE_SERVICES", "").lower() in {"1", "true", "yes", "on"}


def service_unavailable(reason: str) -> None:
    """Skip — or, when CI demands the services (TESSERA_REQUIRE_SERVICES=1), fail."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required service unavailable: {reason}")
    pytest.skip(reason)


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class World:
    """owner: an SE issuer + manufacturer with a device, its SE, ISD and an SSD of the provider.
    collaborator: a TSM holding a mandate (devices.view, audit.view) from the owner.
    stranger: an unrelated service provider, with its own device elsewhere.
    provider: the owner of the SSD; subscriber: lives with the device and has a contract/consent."""

    owner: Any
    collaborator: Any
    stranger: Any
    provider: Any
    subscriber: Any
    owner_user: Any
    owner_auditor: Any
    collaborator_user: Any
    stranger_user: Any
    provider_user: Any
    subscriber_user: Any
    mandate: Any
    device: Any
    se: Any
    isd: Any
    ssd: Any
    stranger_device: Any
    contract: Any
    consent: Any


@pytest.fixture
def world(db: Any) -> World:
    from tenants.models import MemberRole, OrgRole

    owner = f.OrganisationFactory(
        slug="owner-sei", name="Owner SEI", roles=[OrgRole.SE_ISSUER, OrgRole.DEVICE_MANUFACTURER]
    )
    collaborator = f.OrganisationFactory(slug="collab-tsm", name="Collaborator TSM", roles=[OrgRole.TSM])
    stranger = f.OrganisationFactory(
        slug="stranger-sp", name="Stranger SP", roles=[OrgRole.SERVICE_PROVIDER, OrgRole.DEVICE_MANUFACTURER]
    )
    provider = f.OrganisationFactory(slug="provider-sp", name="Provider SP", roles=[OrgRole.SERVICE_PROVIDER])
    subscriber = f.OrganisationFactory(slug="home-ss", name="Homeowner", roles=[OrgRole.SERVICE_SUBSCRIBER])
    users = {}
    for name, org in [
        ("owner", owner),
        ("collaborator", collaborator),
        ("stranger", stranger),
        ("provider", provider),
        ("subscriber", subscriber),
    ]:
        users[name] = f.MembershipFactory(
            org=org, user=f.UserFactory(username=f"{name}-user"), role=MemberRole.OWNER
        ).user
    auditor = f.MembershipFactory(
        org=owner, user=f.UserFactory(username="owner-auditor"), role=MemberRole.AUDITOR
    ).user
    mandate = f.MandateFactory(
        grantor=owner, grantee=collaborator, actions=["audit.view", "devices.view", "sd.create"]
    )
    device = f.DeviceFactory(serial="MTR-0001", manufacturer=owner, subscriber=subscriber)
    se = f.SecureElementFactory(device=device, issuer=owner, serial="0102030405060708")
    isd = f.SecurityDomainFactory(secure_element=se, aid="A000000151000000", owner=owner, is_isd=True)
    ssd = f.SecurityDomainFactory(secure_element=se, aid="A000000151535041AA", owner=provider, parent=isd)
    stranger_device = f.DeviceFactory(serial="STR-0001", manufacturer=stranger)
    contract = f.ContractFactory(subscriber=subscriber, provider=provider, device=device)
    consent = f.ConsentFactory(subscriber=subscriber, grantee=provider, device=device)
    return World(
        owner=owner,
        collaborator=collaborator,
        stranger=stranger,
        provider=provider,
        subscriber=subscriber,
        owner_user=users["owner"],
        owner_auditor=auditor,
        collaborator_user=users["collaborator"],
        stranger_user=users["stranger"],
        provider_user=users["provider"],
        subscriber_user=users["subscriber"],
        mandate=mandate,
        device=device,
        se=se,
        isd=isd,
        ssd=ssd,
        stranger_device=stranger_device,
        contract=contract,
        consent=consent,
    )


@pytest.fixture
def api_client() -> Any:
    from rest_framework.test import APIClient

    return APIClient()


def client_for(user: Any) -> Any:
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(user=user)
    return client
