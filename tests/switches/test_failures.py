"""Failures injected at every step of the switch saga end in a consistent, audited state: before the
break the new provider's SD is removed and the old provider keeps serving; a device asleep for days
resumes where it stopped; a second switch while one runs is refused."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from audit.models import AuditEvent
from devices.models import SecurityDomain
from jobs.models import Job
from jobs.sweeper import sweep
from switches.errors import SwitchConflict
from switches.models import Switch
from switches.services import switch_request
from tenants.models import Contract
from tests.switches.conftest import APP, NEW_SD, OLD_SD

pytestmark = pytest.mark.django_db(transaction=True)

STEPS = ["create_sd", "install_app", "personalize_app", "load_keys", "verify", "delete_old:0"]


def _card_aids(s: Any) -> set[str]:
    return {bytes(e.aid).hex().upper() for e in s.w.gateway.card.registry.applications}


def _request(s: Any) -> Switch:
    return switch_request(
        actor=s.subscriber_actor,
        device=s.w.device,
        new_provider="greenco",
        keys_mode="portal",
        new_sd_aid=NEW_SD,
        app={"instance_aid": APP, "data": [{"dgi": "0101", "value": "CAFE"}]},
    )


def _drive(s: Any, switch: Switch, *, fail_at: str | None = None, rounds: int = 200) -> Switch:
    """Poll like the agent; while the saga is at ``fail_at`` (going forward) the card answers 6A80
    to everything (a card error at that step)."""
    card = s.w.gateway.card
    real = card.transmit

    def transmit(apdu: bytes) -> bytes:
        now = Switch.objects.values("step", "state").get(pk=switch.pk)
        failing = fail_at is not None and now == {"step": fail_at, "state": "running"}
        return b"\x6a\x80" if failing else real(apdu)

    card.transmit = transmit  # type: ignore[method-assign]
    client = Client()
    try:
        for _ in range(rounds):
            answer = s.w.gateway.exchange(client)
            if not answer.work and not s.w.gateway.pending:
                switch.refresh_from_db()
                if switch.is_final or switch.state == "awaiting_keys":
                    break
    finally:
        card.transmit = real  # type: ignore[method-assign]
    switch.refresh_from_db()
    return switch


def _assert_old_provider_keeps_serving(s: Any, switch: Switch) -> None:
    assert switch.state == "rolled_back", (switch.state, switch.error_code, switch.log)
    aids = _card_aids(s)
    assert OLD_SD in aids and NEW_SD not in aids and APP not in aids
    assert SecurityDomain.objects.filter(aid=OLD_SD, owner=s.w.provider).exists()
    assert not SecurityDomain.objects.filter(aid=NEW_SD).exists()
    assert Contract.objects.get(pk=s.contract.pk).status == "active"
    new = Contract.objects.get(pk=switch.new_contract_id)
    assert (new.status, new.end_reason) == ("canceled", "switch_rolled_back")
    tags = list(
        AuditEvent.objects.filter(target_id=str(switch.pk)).order_by("seq").values_list("tag", "details")
    )
    assert tags[0][0] == "switch:request"
    assert any(t == "switch:state" and d.get("compensating") for t, d in tags)
    assert tags[-1][0] == "switch:state" and tags[-1][1].get("rolled_back")


@pytest.mark.parametrize("step", STEPS)
def test_a_card_error_at_any_step_before_the_break_rolls_back_to_the_old_provider(sworld, step):
    switch = _drive(sworld, _request(sworld), fail_at=step)
    _assert_old_provider_keeps_serving(sworld, switch)
    failed = [e for e in switch.log if e["outcome"] == "failed"]
    assert [e["step"] for e in failed] == [step], switch.log
    assert switch.error_code  # the failing job's code is kept for the people looking at it


def test_a_device_asleep_for_days_resumes_where_it_stopped(sworld, monkeypatch):
    """The device reports the first step and sleeps before the next job exists (and the hook that
    would advance the saga is lost with its worker): the sweeper advances the saga, the next job
    waits for days without giving up, and the saga finishes when the device wakes."""
    from jobs import hooks

    s = sworld
    switch = _request(s)
    listeners = list(hooks._finished)
    monkeypatch.setattr(hooks, "_finished", [])
    client = Client()
    for _ in range(10):
        s.w.gateway.exchange(client)
    switch.refresh_from_db()
    assert switch.step == "create_sd"
    assert Job.objects.get(pk=switch.current_job_id).state == "succeeded"
    monkeypatch.setattr(hooks, "_finished", listeners)  # (not undo(): that would end eager Celery too)
    sweep(now=timezone.now() + timedelta(minutes=1))
    switch.refresh_from_db()
    job = Job.objects.get(pk=switch.current_job_id)
    assert (switch.step, job.kind, job.state) == ("install_app", "install_application", "queued")
    sweep(now=timezone.now() + timedelta(days=5))  # five days later nothing has given up
    job.refresh_from_db()
    switch.refresh_from_db()
    assert (job.state, switch.state, switch.step) == ("queued", "running", "install_app")
    switch = _drive(s, switch)
    assert switch.state == "completed", switch.log
    assert (
        Job.objects.filter(device=s.w.device, kind="create_security_domain", target_aid=NEW_SD).count() == 1
    )


def test_an_agent_that_takes_a_step_and_goes_silent_leaves_the_old_provider_serving(sworld):
    """Offline mid-way: the device took the key step and vanished. The step times out, the undo
    waits for the device, and when it comes back (reporting its late result) the saga rolls back."""
    s = sworld
    switch = _request(s)
    client = Client()
    while switch.step != "load_keys":
        s.w.gateway.exchange(client)
        switch.refresh_from_db()
    s.w.gateway.pending.clear()  # whatever it was doing is lost with the power
    sweep(now=timezone.now() + timedelta(days=1))
    switch.refresh_from_db()
    assert (switch.state, switch.step) == ("compensating", "inspect")
    assert Contract.objects.get(pk=s.contract.pk).status == "active"
    switch = _drive(s, switch)
    _assert_old_provider_keeps_serving(s, switch)


def test_a_second_switch_while_one_runs_is_refused_with_a_clear_message(sworld):
    s = sworld
    _request(s)
    with pytest.raises(SwitchConflict, match="already running"):
        switch_request(
            actor=s.subscriber_actor, device=s.w.device, new_provider="stranger", keys_mode="portal"
        )
    assert Switch.objects.count() == 1
