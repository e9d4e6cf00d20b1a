"""Writes of the devices app. Registration flows (enrolment, batch upload) arrive with the jobs
issue; these record devices, secure elements and security domains for the seed and for tests."""

from __future__ import annotations

from django.db import transaction

from audit.models import AuditTag
from audit.services import audit_record
from devices.models import Device, SecureElement, SecurityDomain
from portal.errors import InvalidError, NotFoundError
from tenants.access import Actor
from tenants.models import MandateAction, Organisation, OrgRole


class DeviceError(InvalidError):
    code = "invalid_device"


def device_register(
    *,
    actor: Actor,
    serial: str,
    kind: str,
    holder: Organisation | None = None,
    subscriber: Organisation | None = None,
    identity_public_key: str = "",
) -> Device:
    """A device manufacturer records one of its devices."""
    if not actor.org.has_role(OrgRole.DEVICE_MANUFACTURER):
        raise DeviceError("Only a device manufacturer registers devices.")
    with transaction.atomic():
        device = Device.objects.create(
            serial=serial,
            kind=kind,
            manufacturer=actor.org,
            holder=holder,
            subscriber=subscriber,
            identity_public_key=identity_public_key,
        )
        audit_record(
            actor=actor,
            tag=AuditTag.DEVICE_REGISTER,
            target=device,
            details={"serial": serial, "kind": kind},
            concerns=[o for o in (holder, subscriber) if o],
        )
    return device


def secure_element_register(
    *,
    actor: Actor,
    device: Device | None,
    serial: str,
    kind: str,
    isd_aid: str,
    supplier: Organisation | None = None,
    cplc: str = "",
) -> SecureElement:
    """An SE issuer records an SE (or TEE) it issues, with its Issuer Security Domain."""
    if not actor.org.has_role(OrgRole.SE_ISSUER):
        raise DeviceError("Only an SE issuer registers secure elements.")
    with transaction.atomic():
        se = SecureElement.objects.create(
            device=device, kind=kind, issuer=actor.org, supplier=supplier, serial=serial, cplc=cplc
        )
        SecurityDomain.objects.create(
            secure_element=se,
            aid=isd_aid,
            owner=actor.org,
            is_isd=True,
            privileges=[
                "security_domain",
                "card_lock",
                "card_terminate",
                "card_reset",
                "cvm_management",
                "authorized_management",
                "global_delete",
                "global_lock",
                "global_registry",
            ],
        )
        concerns = [o for o in (supplier, device.manufacturer if device else None) if o]
        audit_record(
            actor=actor, tag=AuditTag.SE_REGISTER, target=se, details={"serial": serial}, concerns=concerns
        )
    return se


def security_domain_record(
    *, actor: Actor, secure_element: SecureElement, aid: str, owner: Organisation, privileges: list[str]
) -> SecurityDomain:
    """The SE issuer records a supplementary SD for ``owner`` under the ISD (the card work comes with jobs)."""
    if actor.mandate is not None and MandateAction.SD_CREATE not in actor.mandate.actions:
        # acting on behalf without the mandate action: the grantor's card is not the actor's
        raise NotFoundError("Not found.")
    if secure_element.issuer_id != actor.subject.pk:
        raise DeviceError("Only the SE's issuer (or its mandated TSM) records its security domains.")
    with transaction.atomic():
        isd = SecurityDomain.objects.get(secure_element=secure_element, is_isd=True)
        sd = SecurityDomain.objects.create(
            secure_element=secure_element, aid=aid, owner=owner, parent=isd, privileges=privileges
        )
        audit_record(
            actor=actor,
            tag=AuditTag.SD_REGISTER,
            target=sd,
            details={"aid": aid, "owner": owner.slug},
            concerns=[owner],
        )
    return sd
