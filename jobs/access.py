"""Visibility of jobs and applications.

A job is visible to the organisation that requested it, the one it was requested on behalf of,
its beneficiary (the SD owner), the issuer of the SE it runs on (the card is the issuer's), and the
device's subscriber (who must see what happens on their device). Other providers on the same SE
never see each other's jobs. Applications follow their security domain's visibility.
"""

from __future__ import annotations

from django.db.models import Q

from devices.access import mandate_scope_q
from devices.models import SecurityDomain
from jobs.models import Application, Job
from tenants.access import Actor, rule, rule_q


@rule(Job)
def _job_rule(actor: Actor) -> Q:
    org = actor.subject
    q = (
        Q(requested_by=org)
        | Q(on_behalf_of=org)
        | Q(beneficiary=org)
        | Q(secure_element__issuer=org)
        | Q(device__subscriber=org)
    )
    if actor.mandate is not None and actor.mandate.scope:
        q &= mandate_scope_q(actor, "device__")
    return q


@rule(Application)
def _application_rule(actor: Actor) -> Q:
    return Q(security_domain_id__in=SecurityDomain.objects.filter(rule_q(SecurityDomain, actor)).values("pk"))
