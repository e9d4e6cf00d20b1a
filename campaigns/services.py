"""Writes of the campaigns app: creating a campaign over many devices and driving it.

A campaign belongs to the SE issuer of its devices (``owner``); it is created as a ``draft``
(targets chosen and grouped), then ``running`` ⇄ ``paused``, and ends ``completed``, ``stopped``
(the error threshold passed) or ``canceled``.

The driver is ``campaign_tick``: idempotent, under a row lock on the campaign, called after every
switch of the campaign ends (``switches.hooks``), by the jobs sweeper and by a beat task. Each tick

1. records the outcome of targets whose switch has ended (a lost hook is recovered here);
2. stops the campaign when errors (``rolled_back``, ``failed``, ``skipped``) exceed
   ``error_threshold`` of the targets in the groups opened so far;
3. when the current group is done (no target pending or switching): opens the next group if the
   share of ``completed`` targets in it reaches ``success_threshold``, holds the campaign
   (``paused``, with the reason) if not — resuming is the owner's decision to go on — or completes
   the campaign after the last group;
4. starts switches of the current group, at most ``rate_per_minute`` in any 60 seconds (counted
   from the targets' start times, so the limit holds across ticks and workers) and at most
   ``max_in_flight`` switching at once. A switch that ``switches.services.switch_request``
   refuses (no contract in force, a switch already running…) makes its target ``skipped`` with
   the refusal's code and message; it counts as an error.

Pausing stops new starts (running switches finish and are recorded); canceling also marks the
targets not yet started ``canceled``. Live events (kind ``campaign``) go to the owner, the creator
and the new provider — they carry counts only, never the old provider nor the selection.
"""

from __future__ import annotations

import logging
import math
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from audit.models import AuditTag
from audit.services import audit_record
from campaigns.access import MANAGE, require_campaigns
from campaigns.errors import CampaignInvalid, CampaignStateConflict
from campaigns.models import (
    ERROR_TARGET_STATES,
    FINAL_CAMPAIGN_STATES,
    FINAL_TARGET_STATES,
    Campaign,
    CampaignState,
    CampaignTarget,
    TargetState,
)
from devices.models import Device
from portal.errors import DomainError, ForbiddenError
from portal.events import publish
from switches.models import FINAL_SWITCH_STATES, KeysMode, Switch
from tenants.access import Actor
from tenants.models import (
    Contract,
    ContractStatus,
    MemberRole,
    Organisation,
    OrgRole,
    OrgStatus,
)

log = logging.getLogger(__name__)

MAX_TARGETS = 10_000
MAX_GROUPS = 1_000
# Starts per tick at most: a tick holds the campaign's row lock, so a large budget is spent over
# several short ticks (each enqueues the next) rather than in one long transaction.
MAX_STARTS_PER_TICK = 50
PROVIDER_ROLES = {OrgRole.SERVICE_PROVIDER, OrgRole.APPLICATION_PROVIDER}
_SWITCH_TO_TARGET = {
    "completed": TargetState.COMPLETED,
    "rolled_back": TargetState.ROLLED_BACK,
    "failed": TargetState.FAILED,
}
_OPEN_TARGET_STATES = (TargetState.PENDING, TargetState.RUNNING)


# --- reading helpers (also used by selectors and serializers) --------------------------------


def campaign_counts(campaign: Campaign) -> dict[str, int]:
    """Targets per state (every state present, zeros included) and the total."""
    counts = {s: 0 for s in TargetState.values}
    for row in campaign.targets.values("state").annotate(n=Count("id")).order_by():
        counts[row["state"]] = row["n"]
    counts["total"] = sum(counts[s] for s in TargetState.values)
    return counts


def campaign_group_counts(campaign: Campaign) -> list[dict[str, int]]:
    """Per group (in order): its number and targets per state."""
    groups = [
        {"group": i + 1, "total": 0, **{s: 0 for s in TargetState.values}}
        for i in range(campaign.group_count)
    ]
    for row in campaign.targets.values("group", "state").annotate(n=Count("id")).order_by():
        g = groups[row["group"]]
        g[row["state"]] += row["n"]
        g["total"] += row["n"]
    return groups


def _event(
    campaign: Campaign, event: str, counts: dict[str, int] | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "kind": "campaign",
        "event": event,
        "campaign": str(campaign.pk),
        "state": campaign.state,
        "group": campaign.current_group + 1,
        "groups": campaign.group_count,
        "counts": counts if counts is not None else campaign_counts(campaign),
        **extra,
    }


def audience(campaign: Campaign) -> set[Any]:
    """Who follows the campaign live: the owner, its creator (a TSM), the new provider."""
    return {campaign.owner_id, campaign.created_by_id, campaign.new_provider_id}


def _publish(campaign: Campaign, event: str, **extra: Any) -> None:
    publish(audience(campaign), _event(campaign, event, **extra))


def _audit(campaign: Campaign, actor: Actor | None, tag: AuditTag, **details: Any) -> None:
    audit_record(
        actor=actor,
        tag=tag,
        target=campaign,
        details={"state": campaign.state, **details},
        concerns=audience(campaign),
    )


# --- creating ---------------------------------------------------------------------------------


def _provider(slug: Any) -> Organisation:
    org = (
        Organisation.objects.filter(slug=slug, status=OrgStatus.ACTIVE).first()
        if isinstance(slug, str) and 0 < len(slug) <= 50
        else None
    )
    if org is None or not (set(org.roles) & PROVIDER_ROLES):
        raise CampaignInvalid(
            "new_provider must name an active service or application provider (its short name).",
            fields={"new_provider": ["invalid"]},
        )
    return org


def _fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise CampaignInvalid(f"{name} must be a number from 0 to 1.", fields={name: ["invalid"]})
    if isinstance(value, float) and math.isnan(value):
        raise CampaignInvalid(f"{name} must be a number from 0 to 1.", fields={name: ["invalid"]})
    return float(value)


def _count(name: str, value: Any, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise CampaignInvalid(
            f"{name} must be a whole number from 1 to {maximum}.", fields={name: ["invalid"]}
        )
    return value


def _serials(name: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not value or len(value) > MAX_TARGETS:
        raise CampaignInvalid(
            f"{name} must be a list of 1 to {MAX_TARGETS} device serial numbers.", fields={name: ["invalid"]}
        )
    if not all(isinstance(s, str) and 0 < len(s) <= 64 for s in value):
        raise CampaignInvalid(f"{name} must hold device serial numbers (text).", fields={name: ["invalid"]})
    if len(set(value)) != len(value):
        raise CampaignInvalid(f"{name} names a device twice.", fields={name: ["duplicate"]})
    return list(value)


def _owned_devices(owner: Organisation) -> Any:
    """Devices whose secure element the owner issued: the only ones its campaigns may switch."""
    return Device.objects.filter(secure_elements__issuer=owner).distinct()


def _devices_by_serial(owner: Organisation, serials: list[str], field: str) -> list[Device]:
    found = {d.serial: d for d in _owned_devices(owner).filter(serial__in=serials)}
    unknown = [s for s in serials if s not in found]
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise CampaignInvalid(
            f"No device of yours (as the SE issuer) has the serial number {shown}.",
            fields={field: ["unknown"]},
        )
    return [found[s] for s in serials]


def _devices_by_filter(owner: Organisation, flt: Any) -> tuple[list[Device], dict[str, Any]]:
    if (
        not isinstance(flt, dict)
        or set(flt) - {"old_provider", "service", "device_kind"}
        or "old_provider" not in flt
    ):
        raise CampaignInvalid(
            "filter takes old_provider (a short name), and optionally service and device_kind.",
            fields={"filter": ["invalid"]},
        )
    for key in ("old_provider", "service", "device_kind"):
        value = flt.get(key)
        if value is not None and (not isinstance(value, str) or not 0 < len(value) <= 120):
            raise CampaignInvalid(f"filter.{key} must be text.", fields={"filter": [key]})
    contracts = Contract.objects.filter(
        status=ContractStatus.ACTIVE, provider__slug=flt["old_provider"], device__in=_owned_devices(owner)
    )
    if flt.get("service"):
        contracts = contracts.filter(service=flt["service"])
    devices = Device.objects.filter(pk__in=contracts.values("device_id"))
    if flt.get("device_kind"):
        devices = devices.filter(kind=flt["device_kind"])
    found = list(devices.order_by("serial")[: MAX_TARGETS + 1])
    if not found:
        raise CampaignInvalid("The filter selects no device.", fields={"filter": ["empty"]})
    if len(found) > MAX_TARGETS:
        raise CampaignInvalid(
            f"The filter selects more than {MAX_TARGETS} devices.", fields={"filter": ["too_many"]}
        )
    return found, {k: flt[k] for k in ("old_provider", "service", "device_kind") if flt.get(k)}


def _clean_app(app: Any) -> dict[str, Any]:
    from switches.errors import SwitchRequestInvalid
    from switches.services import clean_app as clean_switch_app

    try:
        return clean_switch_app(app)
    except SwitchRequestInvalid as e:
        raise CampaignInvalid(e.message, fields=e.fields) from None


def campaign_create(
    *,
    actor: Actor,
    new_provider: Any,
    devices: Any = None,
    filter: Any = None,  # noqa: A002 - the API's name for it
    groups: Any = None,
    group_size: Any = None,
    name: Any = "",
    service: Any = None,
    keys_mode: Any = KeysMode.PORTAL,
    app: Any = None,
    success_threshold: Any = 0.95,
    error_threshold: Any = 0.05,
    rate_per_minute: Any = 60,
    max_in_flight: Any = 10,
) -> Campaign:
    """A ``draft`` campaign moving devices of the actor (their SE issuer) to ``new_provider``.

    Targets: ``devices`` (serial numbers), or ``filter`` ``{"old_provider", "service"?,
    "device_kind"?}`` (the owner's devices with a contract in force with that provider), or
    ``groups`` (lists of serials, in order: each list is a group). Without explicit groups the
    targets are cut into groups of ``group_size`` (default: one group). ``service`` narrows the
    contract each switch moves (as in ``switch_request``). 400 ``invalid_campaign`` for anything
    wrong, naming the field; a device that is not the owner's reads as unknown.
    """
    require_campaigns(actor, MANAGE)
    owner = actor.subject
    provider = _provider(new_provider)
    if not isinstance(name, str) or len(name) > 120:
        raise CampaignInvalid("name must be text of at most 120 characters.", fields={"name": ["invalid"]})
    if service is not None and (not isinstance(service, str) or not 0 < len(service) <= 120):
        raise CampaignInvalid(
            "service must be text of at most 120 characters.", fields={"service": ["invalid"]}
        )
    if keys_mode not in KeysMode.values:
        raise CampaignInvalid(
            f"keys_mode must be one of {', '.join(KeysMode.values)}.", fields={"keys_mode": ["invalid"]}
        )
    success = _fraction("success_threshold", success_threshold)
    errors = _fraction("error_threshold", error_threshold)
    rate = _count("rate_per_minute", rate_per_minute, 100_000)
    in_flight = _count("max_in_flight", max_in_flight, 100_000)
    clean_app = _clean_app(app)
    chosen = [x is not None for x in (devices, filter, groups)]
    if sum(chosen) != 1:
        raise CampaignInvalid(
            "Name the devices in exactly one way: devices, filter or groups.",
            fields={"devices": ["one_of"], "filter": ["one_of"], "groups": ["one_of"]},
        )
    if groups is not None:
        if group_size is not None:
            raise CampaignInvalid(
                "Give groups or group_size, not both.", fields={"group_size": ["with_groups"]}
            )
        if not isinstance(groups, list) or not 0 < len(groups) <= MAX_GROUPS:
            raise CampaignInvalid(
                f"groups must be a list of 1 to {MAX_GROUPS} lists of serial numbers.",
                fields={"groups": ["invalid"]},
            )
        cut = [_serials("groups", g) for g in groups]
        flat = [s for g in cut for s in g]
        _serials("groups", flat)  # no device twice across groups, not too many
        by_serial = {d.serial: d for d in _devices_by_serial(owner, flat, "groups")}
        grouped = [[by_serial[s] for s in g] for g in cut]
        selection: dict[str, Any] = {"groups": len(cut)}
    else:
        if devices is not None:
            targets = _devices_by_serial(owner, _serials("devices", devices), "devices")
            selection = {"devices": len(targets)}
        else:
            targets, selection = _devices_by_filter(owner, filter)
        size = len(targets) if group_size is None else _count("group_size", group_size, MAX_TARGETS)
        grouped = [targets[i : i + size] for i in range(0, len(targets), size)]
        if len(grouped) > MAX_GROUPS:
            raise CampaignInvalid(
                f"That makes more than {MAX_GROUPS} groups; choose a larger group_size.",
                fields={"group_size": ["too_small"]},
            )
    with transaction.atomic():
        campaign = Campaign.objects.create(
            name=name,
            owner=owner,
            created_by=actor.org,
            new_provider=provider,
            service=service or "",
            keys_mode=keys_mode,
            app=clean_app,
            selection=selection,
            group_count=len(grouped),
            success_threshold=success,
            error_threshold=errors,
            rate_per_minute=rate,
            max_in_flight=in_flight,
        )
        CampaignTarget.objects.bulk_create(
            [
                CampaignTarget(campaign=campaign, device=d, group=g, position=p)
                for g, members in enumerate(grouped)
                for p, d in enumerate(members)
            ],
            batch_size=500,
        )
        _audit(
            campaign,
            actor,
            AuditTag.CAMPAIGN_CREATE,
            new_provider=provider.slug,
            targets=sum(len(g) for g in grouped),
            groups=len(grouped),
        )
        _publish(campaign, "created")
    return campaign


# --- the owner's controls ---------------------------------------------------------------------


def _locked(campaign: Campaign) -> Campaign:
    return Campaign.objects.select_for_update().get(pk=campaign.pk)


def _request_tick(campaign: Campaign) -> None:
    from campaigns.tasks import tick
    from portal.tasks import enqueue_on_commit

    enqueue_on_commit(tick, args=[str(campaign.pk)])


def _change(actor: Actor, campaign: Campaign, allowed: tuple[str, ...], to: str, verb: str) -> Campaign:
    require_campaigns(actor, MANAGE)
    if actor.subject.pk != campaign.owner_id:
        # The new provider follows a campaign; only its owner runs it.
        raise ForbiddenError("Only the campaign's owner (the devices' SE issuer) may run it.")
    with transaction.atomic():
        locked = _locked(campaign)
        if locked.state not in allowed:
            raise CampaignStateConflict(
                f"A {locked.state} campaign cannot be {verb}.", fields={"state": [locked.state]}
            )
        now = timezone.now()
        held = locked.reason if locked.reason.startswith("hold:") else ""
        locked.state = to
        locked.updated_at = now
        if to == CampaignState.RUNNING:
            locked.started_at = locked.started_at or now
            locked.reason = ""
            if held:
                # Resuming after a hold is the owner's decision to go on with the next group.
                locked.current_group += 1
        elif to == CampaignState.PAUSED:
            locked.reason = "paused by the owner"
        elif to == CampaignState.CANCELED:
            locked.reason = "canceled by the owner"
            _end(locked, now)
        locked.save()
        _audit(locked, actor, AuditTag.CAMPAIGN_STATE, action=verb, **({"after": held} if held else {}))
        _publish(locked, verb)
        if to == CampaignState.RUNNING:
            _request_tick(locked)
    campaign.refresh_from_db()
    return campaign


def campaign_start(*, actor: Actor, campaign: Campaign) -> Campaign:
    """``draft`` → ``running``; the first switches start in a worker right after."""
    return _change(actor, campaign, (CampaignState.DRAFT,), CampaignState.RUNNING, "started")


def campaign_pause(*, actor: Actor, campaign: Campaign) -> Campaign:
    """``running`` → ``paused``: no new switch starts; running ones finish and are recorded."""
    return _change(actor, campaign, (CampaignState.RUNNING,), CampaignState.PAUSED, "paused")


def campaign_resume(*, actor: Actor, campaign: Campaign) -> Campaign:
    """``paused`` → ``running`` (after a hold below the success threshold: on to the next group)."""
    return _change(actor, campaign, (CampaignState.PAUSED,), CampaignState.RUNNING, "resumed")


def campaign_cancel(*, actor: Actor, campaign: Campaign) -> Campaign:
    """Any unfinished campaign → ``canceled``: targets not started are ``canceled``; switches already
    running finish on their own (a saga is never cut in the middle) and their outcome is recorded."""
    return _change(
        actor,
        campaign,
        (CampaignState.DRAFT, CampaignState.RUNNING, CampaignState.PAUSED),
        CampaignState.CANCELED,
        "canceled",
    )


def _end(campaign: Campaign, now: Any) -> None:
    """Final state: targets never started are canceled. Inside the caller's transaction."""
    campaign.targets.filter(state=TargetState.PENDING).update(
        state=TargetState.CANCELED, finished_at=now, reason_code="campaign_" + campaign.state
    )
    campaign.finished_at = now


# --- the driver -------------------------------------------------------------------------------


def _owner_side(campaign: Campaign) -> Actor:
    return Actor(user=None, org=campaign.owner, member_role=MemberRole.OWNER)


def _collect(campaign: Campaign, now: Any) -> int:
    """Record the outcome of targets whose switch has ended. Returns how many."""
    done = 0
    for target in campaign.targets.filter(
        state=TargetState.RUNNING, switch__state__in=FINAL_SWITCH_STATES
    ).select_related("switch"):
        switch = target.switch
        assert switch is not None
        target.state = _SWITCH_TO_TARGET[switch.state]
        target.finished_at = switch.finished_at or now
        if target.state != TargetState.COMPLETED:
            target.reason_code = switch.error_code[:64]
            target.reason = switch.error_message[:300]
        target.save(update_fields=["state", "finished_at", "reason_code", "reason"])
        done += 1
    return done


def _start(campaign: Campaign, target: CampaignTarget, actor: Actor, now: Any) -> bool:
    """Request the target's switch; a refusal makes it ``skipped``. True if a switch started."""
    from switches.services import switch_request

    target.started_at = now
    try:
        with transaction.atomic():
            switch = switch_request(
                actor=actor,
                device=target.device,
                new_provider=campaign.new_provider.slug,
                service=campaign.service or None,
                keys_mode=campaign.keys_mode,
                app=campaign.app or None,
                campaign_id=campaign.pk,
            )
    except DomainError as e:
        target.state = TargetState.SKIPPED
        target.finished_at = now
        target.reason_code = e.code[:64]
        target.reason = e.message[:300]
        target.save(update_fields=["state", "started_at", "finished_at", "reason_code", "reason"])
        return False
    target.switch = switch
    # The switch may already be over (refused first job, compensated at once): recorded by _collect.
    target.state = TargetState.RUNNING
    target.save(update_fields=["state", "started_at", "switch"])
    return True


def _progress_seconds() -> float:
    return float(settings.TESSERA_CAMPAIGN_PROGRESS_SECONDS)


def campaign_tick(campaign_id: Any, *, now: Any = None) -> dict[str, Any]:
    """Drive the campaign one step (see the module docstring). Idempotent; safe to call at any time
    from any number of workers (the campaign row is locked). ``now`` is the clock (tests)."""
    now = now or timezone.now()
    out: dict[str, Any] = {"started": 0, "skipped": 0, "collected": 0}
    with transaction.atomic():
        campaign = (
            Campaign.objects.select_for_update(of=("self",))
            .select_related("owner", "new_provider")
            .filter(pk=campaign_id)
            .first()
        )
        if campaign is None or campaign.state == CampaignState.DRAFT:
            return out
        out["collected"] = _collect(campaign, now)
        before_state, before_group = campaign.state, campaign.current_group
        if campaign.state == CampaignState.RUNNING:
            _drive(campaign, now, out)
        out["state"] = campaign.state
        if campaign.state != before_state:
            if campaign.state in FINAL_CAMPAIGN_STATES:
                _end(campaign, now)
            campaign.updated_at = campaign.progress_published_at = now
            campaign.save()
            _audit(campaign, None, AuditTag.CAMPAIGN_STATE, reason=campaign.reason)
            _publish(campaign, "held" if campaign.state == CampaignState.PAUSED else campaign.state)
            return out
        active = out["collected"] or out["started"] or out["skipped"]
        if campaign.current_group != before_group:
            campaign.progress_published_at = now
            _publish(campaign, "group")
        elif active:
            last = campaign.progress_published_at
            if last is None or (now - last).total_seconds() >= _progress_seconds():
                campaign.progress_published_at = now
                _publish(campaign, "progress")
        if active or campaign.current_group != before_group:
            campaign.updated_at = now
            campaign.save(update_fields=["current_group", "updated_at", "progress_published_at"])
    return out


def _stop_if_errors(campaign: Campaign) -> bool:
    """Stop the campaign if errors exceed the threshold among the targets of the groups opened."""
    opened = campaign.targets.filter(group__lte=campaign.current_group)
    rows = {r["state"]: r["n"] for r in opened.values("state").annotate(n=Count("id")).order_by()}
    total = sum(rows.values())
    errors = sum(rows.get(s, 0) for s in ERROR_TARGET_STATES)
    if total and errors / total > campaign.error_threshold:
        campaign.state = CampaignState.STOPPED
        campaign.reason = (
            f"{errors} of {total} devices in the groups so far failed, rolled back or were skipped "
            f"(error threshold {campaign.error_threshold:.0%})"
        )
        return True
    return False


def _drive(campaign: Campaign, now: Any, out: dict[str, Any]) -> None:
    """Thresholds, groups and starts of a running campaign (locked, in the caller's transaction)."""
    while campaign.state == CampaignState.RUNNING:
        if _stop_if_errors(campaign):
            return
        group = campaign.targets.filter(group=campaign.current_group)
        g = {r["state"]: r["n"] for r in group.values("state").annotate(n=Count("id")).order_by()}
        if not any(g.get(s, 0) for s in _OPEN_TARGET_STATES):
            size, ok = sum(g.values()), g.get(TargetState.COMPLETED, 0)
            if campaign.current_group + 1 >= campaign.group_count:
                campaign.state = CampaignState.COMPLETED
                campaign.reason = ""
                return
            if size and ok / size < campaign.success_threshold:
                campaign.state = CampaignState.PAUSED
                campaign.reason = (
                    f"hold: group {campaign.current_group + 1} switched {ok} of {size} devices, below the "
                    f"success threshold ({campaign.success_threshold:.0%}); resume to go on with the next group"
                )
                return
            campaign.current_group += 1
            continue
        started, skipped = _start_some(campaign, now)
        out["started"] += started
        out["skipped"] += skipped
        if not skipped:
            return
        # Refusals may pass the error threshold or end the group: look again.


def _start_some(campaign: Campaign, now: Any) -> tuple[int, int]:
    """Start switches of the current group within the rate and in-flight limits. A refused
    switch (skipped) uses no device and no rate budget."""
    started_targets = campaign.targets.filter(switch__isnull=False)
    in_flight = campaign.targets.filter(state=TargetState.RUNNING).count()
    recent = started_targets.filter(started_at__gt=now - timedelta(seconds=60), started_at__lte=now).count()
    budget = min(campaign.rate_per_minute - recent, campaign.max_in_flight - in_flight)
    if budget <= 0:
        return 0, 0
    actor = _owner_side(campaign)
    pending = list(
        campaign.targets.filter(group=campaign.current_group, state=TargetState.PENDING)
        .select_related("device")
        .order_by("position")[: min(budget, MAX_STARTS_PER_TICK + 1)]
    )
    if budget > MAX_STARTS_PER_TICK and len(pending) > MAX_STARTS_PER_TICK:
        pending = pending[:MAX_STARTS_PER_TICK]
        _request_tick(campaign)  # the rest of the budget, right after this tick commits
    started = skipped = 0
    for target in pending:
        if _start(campaign, target, actor, now):
            started += 1
        else:
            skipped += 1
    return started, skipped


# --- hooks and the sweeper --------------------------------------------------------------------


def campaign_of_switch(switch_id: Any) -> Any:
    """The campaign id of a switch that belongs to one (one indexed query), or None."""
    return Switch.objects.filter(pk=switch_id).values_list("campaign_id", flat=True).first()


def campaign_sweep(now: Any = None) -> dict[str, int]:
    """Tick every running or paused campaign (paused: to record outcomes of its running switches)."""
    now = now or timezone.now()
    ticked = 0
    for pk in Campaign.objects.filter(state__in=[CampaignState.RUNNING, CampaignState.PAUSED]).values_list(
        "pk", flat=True
    ):
        campaign_tick(pk, now=now)
        ticked += 1
    # Canceled or stopped campaigns may still have switches running: record their outcomes.
    for pk in (
        CampaignTarget.objects.filter(state=TargetState.RUNNING, campaign__state__in=FINAL_CAMPAIGN_STATES)
        .values_list("campaign_id", flat=True)
        .distinct()
    ):
        campaign_record_outcomes(pk, now=now)
    return {"ticked": ticked}


def campaign_record_outcomes(campaign_id: Any, *, now: Any = None) -> int:
    """Record ended switches of a campaign in any state (a finished campaign's late outcomes)."""
    now = now or timezone.now()
    with transaction.atomic():
        campaign = Campaign.objects.select_for_update().filter(pk=campaign_id).first()
        if campaign is None:
            return 0
        n = _collect(campaign, now)
        if n:
            _publish(campaign, "progress")
        return n


def on_switch_finished(switch_id: Any, state: str) -> None:
    campaign_id = campaign_of_switch(switch_id)
    if campaign_id is None:
        return
    state_now = Campaign.objects.filter(pk=campaign_id).values_list("state", flat=True).first()
    if state_now in (CampaignState.RUNNING, CampaignState.PAUSED):
        campaign_tick(campaign_id)
    elif state_now is not None:
        campaign_record_outcomes(campaign_id)


__all__ = [
    "FINAL_TARGET_STATES",
    "campaign_cancel",
    "campaign_counts",
    "campaign_create",
    "campaign_group_counts",
    "campaign_pause",
    "campaign_resume",
    "campaign_start",
    "campaign_sweep",
    "campaign_tick",
]
