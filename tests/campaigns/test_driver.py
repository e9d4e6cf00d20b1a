"""Campaigns over a fleet of in-process gateways with software SEs (real cards, real switch sagas):
groups, thresholds, rate and in-flight limits, pause/resume, cancel."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from campaigns.models import Campaign, CampaignTarget
from campaigns.services import (
    campaign_cancel,
    campaign_counts,
    campaign_create,
    campaign_pause,
    campaign_resume,
    campaign_start,
    campaign_sweep,
    campaign_tick,
)
from devices.models import SecurityDomain
from switches.models import Switch
from tenants.models import Contract
from tests.campaigns.conftest import OLD_SD, SERVICE, Fleet

pytestmark = pytest.mark.django_db(transaction=True)


def _create(fl: Fleet, **kw: Any) -> Campaign:
    kw.setdefault("devices", fl.serials)
    return campaign_create(actor=fl.w.sei_actor, new_provider="greenco", **kw)


def _targets(c: Campaign) -> dict[str, CampaignTarget]:
    return {t.device.serial: t for t in CampaignTarget.objects.filter(campaign=c).select_related("device")}


def _states(c: Campaign) -> dict[str, str]:
    return {s: t.state for s, t in _targets(c).items()}


def _final(c: Campaign) -> Any:
    return lambda: Campaign.objects.get(pk=c.pk).is_final


def test_a_campaign_over_six_meters_in_three_groups_completes_group_after_group(fleet: Fleet) -> None:
    fl = fleet
    # given a draft campaign of the issuer over six meters, in groups of two
    c = _create(fl, group_size=2, name="GreenCo takes over")
    assert (c.state, c.group_count) == ("draft", 3)
    assert not Switch.objects.exists()
    # when it starts and the agents poll
    c = campaign_start(actor=fl.w.sei_actor, campaign=c)
    assert c.state == "running"
    assert Switch.objects.count() == 2  # the first group only
    fl.run(until=_final(c))
    # then every device switched and the campaign completed
    c.refresh_from_db()
    assert c.state == "completed", (c.reason, _states(c))
    assert set(_states(c).values()) == {"completed"}
    targets = _targets(c)
    switches = Switch.objects.filter(campaign_id=c.pk)
    assert switches.count() == 6 and {s.state for s in switches} == {"completed"}
    assert {t.switch_id for t in targets.values()} == set(switches.values_list("pk", flat=True))
    # groups ran one after the other: no device of a group started before the previous group ended
    by_group: dict[int, list[CampaignTarget]] = {}
    for t in targets.values():
        by_group.setdefault(t.group, []).append(t)
    for g in (1, 2):
        assert min(t.started_at for t in by_group[g]) >= max(t.finished_at for t in by_group[g - 1])
    # and the cards and contracts agree: the new provider's SD everywhere, the old one nowhere
    assert SecurityDomain.objects.filter(owner=fl.new_provider).count() == 6
    assert not SecurityDomain.objects.filter(aid=OLD_SD).exists()
    for gateway in fl.gateways.values():
        aids = {bytes(e.aid).hex().upper() for e in gateway.card.registry.applications}
        assert OLD_SD not in aids
    assert Contract.objects.filter(provider=fl.new_provider, status="active", service=SERVICE).count() == 6
    assert Contract.objects.filter(provider=fl.w.provider, status="ended", end_reason="switched").count() == 6
    assert campaign_counts(c)["completed"] == 6 and c.finished_at is not None


def test_the_error_threshold_stops_the_campaign_and_later_groups_never_start(fleet: Fleet) -> None:
    fl = fleet
    # given a card of the first group that answers errors to everything
    c = _create(fl, group_size=2, error_threshold=0.05)
    fl.break_card(fl.serials[1])
    # when the campaign runs
    campaign_start(actor=fl.w.sei_actor, campaign=c)
    fl.run(until=_final(c))
    # then one rolled-back switch of two is past 5 %: stopped, with the reason
    c.refresh_from_db()
    assert c.state == "stopped", (c.state, _states(c))
    assert "1 of 2" in c.reason
    states = _states(c)
    assert states[fl.serials[0]] == "completed"
    assert states[fl.serials[1]] == "rolled_back"
    assert [states[s] for s in fl.serials[2:]] == ["canceled"] * 4
    # no switch was ever requested for the later groups; the broken card's device keeps its provider
    assert Switch.objects.filter(campaign_id=c.pk).count() == 2
    broken = fl.devices[1]
    assert Contract.objects.get(device=broken, provider=fl.w.provider, status="active")
    assert _targets(c)[fl.serials[1]].reason_code


def test_a_group_below_the_success_threshold_holds_the_next_group_until_resumed(fleet: Fleet) -> None:
    fl = fleet
    # given errors that never stop the campaign, but a success threshold of 95 % per group
    c = _create(fl, group_size=2, error_threshold=1.0, success_threshold=0.95)
    fl.break_card(fl.serials[0])
    campaign_start(actor=fl.w.sei_actor, campaign=c)
    # when the first group ends with one device of two switched
    fl.run(until=lambda: Campaign.objects.get(pk=c.pk).state == "paused")
    c.refresh_from_db()
    # then the campaign holds before the second group, and says why
    assert c.state == "paused" and c.current_group == 0
    assert c.reason.startswith("hold:") and "1 of 2" in c.reason
    assert Switch.objects.filter(campaign_id=c.pk).count() == 2
    campaign_tick(c.pk)
    campaign_sweep()
    assert Switch.objects.filter(campaign_id=c.pk).count() == 2  # ticks do not pass a hold
    # when the owner resumes, the next groups run (both fully successful) and the campaign completes
    c = campaign_resume(actor=fl.w.sei_actor, campaign=c)
    assert (c.state, c.current_group) == ("running", 1)
    fl.run(until=_final(c))
    c.refresh_from_db()
    assert c.state == "completed", (c.reason, _states(c))
    assert campaign_counts(c)["completed"] == 5 and campaign_counts(c)["rolled_back"] == 1


def test_the_rate_limit_holds_across_ticks_by_the_clock(fleet: Fleet) -> None:
    fl = fleet
    # given two starts per minute, and devices that do not answer (switches stay in flight)
    t0 = timezone.now()
    c = _create(fl, rate_per_minute=2, max_in_flight=100)
    campaign_start(actor=fl.w.sei_actor, campaign=c)
    assert Switch.objects.filter(campaign_id=c.pk).count() == 2
    # when ticks come within the same minute, nothing more starts
    for seconds in (1, 20, 59):
        assert campaign_tick(c.pk, now=t0 + timedelta(seconds=seconds))["started"] == 0
    # and once the first starts are a minute old, two more start; then none again
    assert campaign_tick(c.pk, now=t0 + timedelta(seconds=62))["started"] == 2
    assert campaign_tick(c.pk, now=t0 + timedelta(seconds=90))["started"] == 0
    assert campaign_tick(c.pk, now=t0 + timedelta(seconds=125))["started"] == 2
    starts = sorted(t.started_at for t in _targets(c).values())
    for i in range(len(starts)):
        window = [s for s in starts if starts[i] - timedelta(seconds=60) < s <= starts[i]]
        assert len(window) <= 2
    assert Switch.objects.filter(campaign_id=c.pk).count() == 6


def test_at_most_max_in_flight_switches_run_at_once(fleet: Fleet) -> None:
    fl = fleet
    c = _create(fl, rate_per_minute=1000, max_in_flight=3)
    campaign_start(actor=fl.w.sei_actor, campaign=c)
    assert Switch.objects.filter(campaign_id=c.pk, state="running").count() == 3
    assert campaign_tick(c.pk)["started"] == 0
    # as switches end, others take their place — never more than three running
    peak = 0

    def watch() -> bool:
        nonlocal peak
        peak = max(peak, CampaignTarget.objects.filter(campaign=c, state="running").count())
        return Campaign.objects.get(pk=c.pk).is_final

    fl.run(until=watch)
    assert peak <= 3
    assert Campaign.objects.get(pk=c.pk).state == "completed"


def test_pause_lets_running_switches_finish_and_starts_none_until_resumed(fleet: Fleet) -> None:
    fl = fleet
    c = _create(fl, max_in_flight=2)
    campaign_start(actor=fl.w.sei_actor, campaign=c)
    c = campaign_pause(actor=fl.w.sei_actor, campaign=c)
    assert c.state == "paused"
    # when the agents poll while paused: the two running switches finish, nothing else starts
    fl.run()
    campaign_sweep()
    c.refresh_from_db()
    counts = campaign_counts(c)
    assert (c.state, counts["completed"], counts["pending"], counts["running"]) == ("paused", 2, 4, 0)
    assert Switch.objects.filter(campaign_id=c.pk).count() == 2
    # when resumed, the rest runs to the end
    campaign_resume(actor=fl.w.sei_actor, campaign=c)
    fl.run(until=_final(c))
    c.refresh_from_db()
    assert c.state == "completed" and campaign_counts(c)["completed"] == 6


def test_cancel_ends_the_campaign_running_switches_finish_and_are_recorded(fleet: Fleet) -> None:
    fl = fleet
    c = _create(fl, max_in_flight=2)
    campaign_start(actor=fl.w.sei_actor, campaign=c)
    c = campaign_cancel(actor=fl.w.sei_actor, campaign=c)
    assert c.state == "canceled" and c.finished_at is not None
    fl.run()
    c.refresh_from_db()
    states = _states(c)
    assert sorted(states.values()) == ["canceled"] * 4 + ["completed"] * 2
    assert c.state == "canceled"
    assert Switch.objects.filter(campaign_id=c.pk).count() == 2


def test_a_refused_switch_is_skipped_with_its_reason_and_counts_as_an_error(fleet: Fleet) -> None:
    from switches.services import switch_request

    fl = fleet
    # given a device whose provider switch is already running (outside the campaign)
    busy = fl.devices[2]
    switch_request(actor=fl.w.sei_actor, device=busy, new_provider="stranger", keys_mode="portal")
    # when a campaign with a tolerant error threshold reaches it
    c = _create(fl, error_threshold=0.2)
    campaign_start(actor=fl.w.sei_actor, campaign=c)
    fl.run(until=_final(c))
    c.refresh_from_db()
    target = _targets(c)[busy.serial]
    # then that device is skipped with the refusal's code and message; the others switched
    assert (target.state, target.reason_code) == ("skipped", "switch_running")
    assert "already running" in target.reason and target.switch_id is None
    assert c.state == "completed" and campaign_counts(c)["completed"] == 5
    # and with a strict threshold, a refusal in the first group stops the campaign at once
    other = fl.devices[3]
    switch_request(actor=fl.w.sei_actor, device=other, new_provider="stranger", keys_mode="portal")
    c2 = _create(fl, devices=[other.serial, fl.serials[4]], group_size=1, error_threshold=0.0)
    c2 = campaign_start(actor=fl.w.sei_actor, campaign=c2)
    assert c2.state == "stopped", c2.reason
    assert _states(c2) == {other.serial: "skipped", fl.serials[4]: "canceled"}


def test_a_filter_selects_the_issuers_devices_under_the_old_providers_contract(fleet: Fleet) -> None:
    fl = fleet
    c = _create(
        fl, devices=None, filter={"old_provider": "supplier", "service": SERVICE, "device_kind": "meter"}
    )
    assert CampaignTarget.objects.filter(campaign=c).count() == 6
    assert c.selection == {"old_provider": "supplier", "service": SERVICE, "device_kind": "meter"}
    # explicit groups keep their order
    groups = [fl.serials[3:], fl.serials[:3]]
    c2 = _create(fl, devices=None, groups=groups)
    t = _targets(c2)
    assert c2.group_count == 2
    assert [t[s].group for s in fl.serials] == [1, 1, 1, 0, 0, 0]


def test_a_large_budget_is_spent_over_several_short_ticks(fleet: Fleet, monkeypatch: Any) -> None:
    import campaigns.services as services

    fl = fleet
    monkeypatch.setattr(services, "MAX_STARTS_PER_TICK", 2)
    c = _create(fl, rate_per_minute=1000, max_in_flight=100)
    Campaign.objects.filter(pk=c.pk).update(state="running")
    # one tick starts two; with Celery eager, the tick it enqueues runs after it commits, and so on
    first = campaign_tick(c.pk)
    assert first["started"] == 2
    assert Switch.objects.filter(campaign_id=c.pk).count() == 6
    assert campaign_counts(c)["running"] == 6
