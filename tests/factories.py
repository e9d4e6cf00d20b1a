"""factory_boy factories for the domain models."""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model

from devices.models import Device, DeviceKind, SecureElement, SecurityDomain
from tenants.models import (
    Consent,
    Contract,
    Mandate,
    MemberRole,
    Membership,
    Organisation,
    OrgRole,
    OrgStatus,
)

PASSWORD = "correct-horse-battery-9"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.test")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):  # type: ignore[no-untyped-def]
        if create:
            obj.save()


class OrganisationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organisation

    name = factory.Sequence(lambda n: f"Organisation {n}")
    slug = factory.Sequence(lambda n: f"org-{n}")
    status = OrgStatus.ACTIVE
    roles = factory.LazyFunction(lambda: [OrgRole.SERVICE_PROVIDER])
    contact_email = "contact@example.test"


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    org = factory.SubFactory(OrganisationFactory)
    role = MemberRole.OWNER


class MandateFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Mandate

    grantor = factory.SubFactory(OrganisationFactory)
    grantee = factory.SubFactory(OrganisationFactory)
    actions = factory.LazyFunction(lambda: ["devices.view"])


class DeviceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Device

    serial = factory.Sequence(lambda n: f"DEV-{n:06d}")
    kind = DeviceKind.METER
    manufacturer = factory.SubFactory(OrganisationFactory, roles=[OrgRole.DEVICE_MANUFACTURER])


class SecureElementFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SecureElement

    device = factory.SubFactory(DeviceFactory)
    issuer = factory.SubFactory(OrganisationFactory, roles=[OrgRole.SE_ISSUER])
    serial = factory.Sequence(lambda n: f"{n:016X}")


class SecurityDomainFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SecurityDomain

    secure_element = factory.SubFactory(SecureElementFactory)
    aid = factory.Sequence(lambda n: f"A0000001515350{n:04X}")
    owner = factory.SubFactory(OrganisationFactory)
    privileges = factory.LazyFunction(lambda: ["security_domain"])


class ContractFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Contract

    subscriber = factory.SubFactory(OrganisationFactory, roles=[OrgRole.SERVICE_SUBSCRIBER])
    provider = factory.SubFactory(OrganisationFactory)
    device = factory.SubFactory(DeviceFactory)
    service = "energy supply"


class ConsentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Consent

    subscriber = factory.SubFactory(OrganisationFactory, roles=[OrgRole.SERVICE_SUBSCRIBER])
    grantee = factory.SubFactory(OrganisationFactory)
    device = factory.SubFactory(DeviceFactory)
    purpose = "billing"
    scopes = factory.LazyFunction(lambda: ["readings"])
