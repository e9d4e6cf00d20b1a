"""Objects of the owner organisation for generated tests, by the URL vocabulary that names them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.utils import timezone

from audit.models import AuditTag
from audit.services import audit_record
from tests import factories as f


@dataclass
class OwnerObjects:
    """One object of each kind that the owner organisation (``owner-sei``) may see, by collection.

    ``by_collection`` maps the URL segment naming a collection (``devices`` in
    ``…/devices/<pk>/``) to the id of an owner-visible member; ``by_param`` maps other URL
    parameter names (``<uuid:device>``) to ids. Generated tests fail for a route whose parameters
    are in neither map, so a new route cannot escape them.
    """

    by_collection: dict[str, Any]
    by_param: dict[str, Any]

    def value_for(self, route: Any, param: str) -> Any:
        if param in self.by_param:
            return self.by_param[param]
        if param == "pk":
            collection = route.segment_before("pk")
            if collection in self.by_collection:
                return self.by_collection[collection]
        raise LookupError(
            f"route {route} ({route.route}) has a parameter <{param}> that names no object of the "
            "world fixture: map it in tests/support/objects.py (owner_objects) so generated access "
            "tests cover it"
        )

    def kwargs_for(self, route: Any, org: str) -> dict[str, Any]:
        return {p: (org if p == "org" else self.value_for(route, p)) for p in route.params}

    def missing_kwargs_for(self, route: Any, org: str) -> dict[str, Any]:
        """The same URL with every object id replaced by one that does not exist."""
        import uuid

        out = {}
        for p in route.params:
            if p == "org":
                out[p] = org
                continue
            real = self.value_for(route, p)
            out[p] = 2_000_000_000 + int(real) if isinstance(real, int) else uuid.uuid4()
        return out


def owner_objects(world: Any) -> OwnerObjects:
    """Complete the world with owner-visible objects of every kind (the world's contract and consent
    are between the subscriber and the provider), and an audit event concerning the owner."""
    contract = f.ContractFactory(subscriber=world.subscriber, provider=world.owner, device=world.device)
    consent = f.ConsentFactory(subscriber=world.subscriber, grantee=world.owner, device=world.device)
    invitation = world.owner.invitations.create(
        email="invitee@example.test",
        role="operator",
        token_hash="0" * 64,
        invited_by=world.owner_user,
        expires_at=timezone.now() + timedelta(days=1),
    )
    event = audit_record(
        actor=None, tag=AuditTag.DEVICE_REGISTER, target=world.device, concerns=[world.owner]
    )
    auditor_membership = world.owner.memberships.get(user=world.owner_auditor)
    job = _owner_job(world)
    # The SE's CASD certificate, from a Controlling Authority outside the world: the owner sees it as
    # the SE's issuer, the collaborator on its behalf through the SE (devices.view).
    from tests.support.ca import casd_certificate_for

    casd = casd_certificate_for(world.se)
    webhook = _owner_webhook(world)
    switch = _owner_switch(world, contract)
    campaign = _owner_campaign(world)
    by_collection = {
        "members": auditor_membership.pk,
        "invitations": invitation.pk,
        "mandates": world.mandate.pk,
        "contracts": contract.pk,
        "consents": consent.pk,
        "devices": world.device.pk,
        "secure-elements": world.se.pk,
        "security-domains": world.ssd.pk,
        "audit": event.seq,
        "jobs": job.pk,
        "certificates": casd.pk,
        "webhooks": webhook.pk,
        "switches": switch.pk,
        "campaigns": campaign.pk,
    }
    by_param = {
        "device": world.device.pk,
        "device_id": world.device.pk,
        "secure_element": world.se.pk,
        "se": world.se.pk,
        "security_domain": world.ssd.pk,
        "sd": world.ssd.pk,
        "mandate": world.mandate.pk,
        "seq": event.seq,
        "job": job.pk,
    }
    return OwnerObjects(by_collection=by_collection, by_param=by_param)


def _owner_webhook(world: Any) -> Any:
    from notifications.services import webhook_create
    from tenants.access import resolve_actor

    webhook, _secret = webhook_create(
        actor=resolve_actor(world.owner_user, "owner-sei"),
        url="https://hooks.example.test/owner",
        event_types=["job.*"],
    )
    return webhook


def _owner_campaign(world: Any) -> Any:
    """A draft switch campaign of the owner (the SE issuer) over its device."""
    from campaigns.services import campaign_create
    from tenants.access import resolve_actor

    return campaign_create(
        actor=resolve_actor(world.owner_user, "owner-sei"), new_provider="provider-sp", devices=["MTR-0001"]
    )


def _owner_switch(world: Any, contract: Any) -> Any:
    """A finished (rolled back) provider switch on the world's device, seen by the owner as the SE
    issuer, written directly — the access tests need a row, not a run."""
    from switches.models import Initiator, Switch

    return Switch.objects.create(
        device=world.device,
        subscriber=world.subscriber,
        issuer=world.owner,
        old_provider=world.provider,
        new_provider=world.owner,
        old_contract=world.contract,
        new_contract=contract,
        initiator=Initiator.SUBSCRIBER,
        requested_by=world.subscriber,
        keys_mode="portal",
        new_sd_aid="A0000001515350AA01",
        state="rolled_back",
        step="done",
    )


def _owner_job(world: Any) -> Any:
    """A job on the world's device that the owner sees as the SE issuer (it did not request it: the
    provider read its own SD's status), written directly — the access tests need a row, not a run."""
    from jobs.models import Job, JobKind, JobState

    return Job.objects.create(
        kind=JobKind.READ_STATUS,
        state=JobState.QUEUED,
        device=world.device,
        secure_element=world.se,
        target_sd=world.ssd,
        target_aid=world.ssd.aid,
        requested_by=world.provider,
        beneficiary=world.provider,
        params={"sd": world.ssd.aid},
    )
