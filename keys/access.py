"""Visibility of key sets (DESIGN §5–6).

A key set is visible to its owner organisation only — an SE issuer does not see a provider's key
sets on its card, a subscriber does not see anyone's. A grantee acting on the owner's behalf sees
them (as KCVs, like everyone) only when its mandate covers loading or rotating keys, and only on
the devices the mandate's scope reaches. Nobody ever sees key bytes: APIs and pages show KCVs.
"""

from __future__ import annotations

from django.db.models import Q

from devices.access import _device_ids_visible
from devices.models import SecureElement
from keys.models import Certificate, CertificateKind, KeySet, ServiceMasterKey
from tenants.access import Actor, rule, rule_q
from tenants.models import MandateAction

KEY_MANDATE_ACTIONS = frozenset({MandateAction.KEYS_LOAD, MandateAction.KEYS_ROTATE})


@rule(KeySet)
def _key_set_rule(actor: Actor) -> Q:
    own = Q(owner=actor.subject)
    if actor.mandate is None:
        return own
    if not KEY_MANDATE_ACTIONS & set(actor.mandate.actions):
        return Q(pk__in=[])
    return own & Q(security_domain__secure_element__device_id__in=_device_ids_visible(actor))


@rule(Certificate)
def _certificate_rule(actor: Actor) -> Q:
    """A CA sees every certificate it issued; an off-card entity its own certificates; whoever sees
    a secure element (its issuer, supplier, the orgs on or around its device) its CASD certificates.
    On a mandator's behalf only the last applies, within the mandate's scope."""
    seen_ses = SecureElement.objects.filter(rule_q(SecureElement, actor)).values("pk")
    casd = Q(kind=CertificateKind.CASD, secure_element_id__in=seen_ses)
    if actor.mandate is not None:
        return casd
    org = actor.subject
    return casd | Q(issuer__owner=org) | Q(kind=CertificateKind.OCE, subject_org=org)


@rule(ServiceMasterKey)
def _service_master_key_rule(actor: Actor) -> Q:
    """A service master key is its owner's alone: never seen on anyone's behalf."""
    if actor.mandate is not None:
        return Q(pk__in=[])
    return Q(owner=actor.subject)
