"""Visibility of devices, secure elements and security domains (DESIGN §5; issue 2 item 4).

- A device is visible to its manufacturer, holder and subscriber; to the issuer and supplier of
  its secure hardware; to any organisation owning a security domain on it; and to a grantee of an
  active consent on it.
- A secure element is visible wherever its device is, and to its issuer and supplier.
- A security domain is visible to its owner, to the issuer of its SE (the card's registry is the
  issuer's), and to the device's subscriber (who must know who is on their device). The ISD is
  visible to anyone who sees the SE: it is the root every other SD hangs from. Providers never see
  each other's SDs.
- Acting on behalf of a mandator, the mandate's scope narrows the devices further.
"""

from __future__ import annotations

from django.db.models import Q

from devices.models import Device, SecureElement, SecurityDomain
from tenants.access import Actor, rule
from tenants.models import Consent


def mandate_scope_q(actor: Actor, prefix: str) -> Q:
    """The mandate's scope as a filter on devices reached through ``prefix``."""
    if actor.mandate is None or not actor.mandate.scope:
        return Q()
    scope = actor.mandate.scope
    q = Q()
    if "issuer" in scope:
        q &= Q(**{f"{prefix}secure_elements__issuer__slug": scope["issuer"]})
    if "device_kinds" in scope:
        q &= Q(**{f"{prefix}kind__in": scope["device_kinds"]})
    if "serials" in scope:
        q &= Q(**{f"{prefix}serial__in": scope["serials"]})
    return q


def _device_ids_visible(actor: Actor):  # type: ignore[no-untyped-def]
    org = actor.subject
    direct = Q(manufacturer=org) | Q(holder=org) | Q(subscriber=org)
    via_se = Q(
        pk__in=SecureElement.objects.filter(Q(issuer=org) | Q(supplier=org), device__isnull=False).values(
            "device_id"
        )
    )
    via_sd = Q(pk__in=SecurityDomain.objects.filter(owner=org).values("secure_element__device_id"))
    via_consent = Q(pk__in=Consent.objects.filter(Consent.active_q(), grantee=org).values("device_id"))
    base = Device.objects.filter(direct | via_se | via_sd | via_consent)
    scope = mandate_scope_q(actor, "")
    if scope:
        base = base.filter(scope)
    return base.values("pk")


@rule(Device)
def _device_rule(actor: Actor) -> Q:
    return Q(pk__in=_device_ids_visible(actor))


@rule(SecureElement)
def _secure_element_rule(actor: Actor) -> Q:
    org = actor.subject
    q = Q(device_id__in=_device_ids_visible(actor))
    if actor.mandate is None:
        q |= Q(issuer=org) | Q(supplier=org)
    return q


@rule(SecurityDomain)
def _security_domain_rule(actor: Actor) -> Q:
    org = actor.subject
    seen_devices = _device_ids_visible(actor)
    q = (
        Q(owner=org)
        | Q(secure_element__issuer=org)
        | Q(secure_element__device__subscriber=org)
        | Q(is_isd=True)
    )
    return q & Q(secure_element__device_id__in=seen_devices) | (
        Q(secure_element__issuer=org, secure_element__device__isnull=True)
        if actor.mandate is None
        else Q(pk__in=[])
    )
