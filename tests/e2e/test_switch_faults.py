"""A provider switch on the real stack (daphne, Celery worker and beat, Redis, PostgreSQL, the agent
as a process) survives a worker killed -9 and an agent killed mid-script: it completes once, every
step's job exists once, no secured command reached the card twice, and the card agrees with the
database. And a card refusing the break rolls the switch back to the old provider."""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from tests.e2e.conftest import Gateway, Stack, repeated_secured_apdus, wait_for
from tests.e2e.helpers import card_state, db_state

pytestmark = [pytest.mark.e2e, pytest.mark.services]

OLD = "A0000001515350E5"
NEW = "A0000001515350E6"


def _old_provider_serves(stack: Stack, gw: Gateway, suffix: str) -> None:
    """The supplier's SD on the card (through a real job) and a leased-kit contract for it."""
    job = stack.request_job(
        "sei", "sei", gw.device_id, "create_security_domain", {"aid": OLD + suffix, "owner": "supplier"}
    )
    done = stack.wait_job("sei", "sei", job["id"], timeout=60)
    assert done["state"] == "succeeded", done
    stack.query(
        "from devices.models import Device\n"
        "from tenants.models import Contract, Organisation, OrgRole, OrgStatus\n"
        "home, _ = Organisation.objects.get_or_create(slug='e2e-home', defaults={'name': 'Home', "
        "'roles': [OrgRole.SERVICE_SUBSCRIBER], 'status': OrgStatus.ACTIVE, 'contact_email': 'h@e.test'})\n"
        f"device = Device.objects.get(pk='{gw.device_id}')\n"
        "device.subscriber = home\ndevice.save(update_fields=['subscriber'])\n"
        "Contract.objects.create(subscriber=home, provider=Organisation.objects.get(slug='supplier'), "
        f"device=device, service='Electricity supply', sd_aid='{OLD + suffix}', consent_required=False)\n"
        "out = 1\n"
    )


def _switch(stack: Stack, gw: Gateway, suffix: str) -> dict[str, Any]:
    with stack.api("sei") as c:
        r = c.post(
            "/orgs/sei/switches/",
            json={
                "device": gw.serial,
                "new_provider": "provider",
                "keys_mode": "portal",
                "new_sd_aid": NEW + suffix,
            },
        )
    assert r.status_code == 201, r.text
    return r.json()


def _get(stack: Stack, switch_id: str) -> dict[str, Any]:
    with stack.api("sei") as c:
        r = c.get(f"/orgs/sei/switches/{switch_id}/")
    assert r.status_code == 200, r.text
    return r.json()


def _wait(stack: Stack, switch_id: str, timeout: float = 120) -> dict[str, Any]:
    return wait_for(
        lambda: (s := _get(stack, switch_id))["state"] in ("completed", "rolled_back", "failed") and s,
        timeout,
        f"switch {switch_id} to end",
        interval=0.5,
    )


def _jobs_per_step(stack: Stack, switch_id: str) -> dict[str, int]:
    return stack.query(
        "from switches.models import Switch\nfrom jobs.models import Job\n"
        f"s = Switch.objects.get(pk='{switch_id}')\n"
        "out = {}\n"
        "for kind, aid in [('create_security_domain', s.new_sd_aid), ('rotate_keys', s.new_sd_aid)]:\n"
        "    out[kind] = Job.objects.filter(device=s.device, kind=kind, target_aid=aid).count()\n"
        "out['delete_old'] = Job.objects.filter(device=s.device, kind='delete_security_domain', "
        "target_aid__in=s.old_sd_aids).count()\n"
        "from audit.models import AuditEvent\n"
        "out['completed_events'] = AuditEvent.objects.filter(target_id=str(s.pk), tag='switch:state', "
        "details__completed=True).count()\n"
    )


def _card_agrees(stack: Stack, gw: Gateway) -> dict[str, Any]:
    card, db = card_state(gw), db_state(stack, gw)
    assert card["sds"] == db["sds"] and card["kvns"] == db["kvns"], (card, db)
    assert repeated_secured_apdus(gw.apdu_log) == {}, "a command reached the card twice"
    return db


def test_a_worker_killed_during_a_switch_is_replaced_and_the_switch_completes_once(stack: Stack) -> None:
    gw = stack.gateway("switch-worker", "GW-SWITCH-WORKER", wait_s=5)
    stack.start_agent(gw)
    _old_provider_serves(stack, gw, "01")
    switch = _switch(stack, gw, "01")
    # when the worker dies -9 while the saga is past its first step
    wait_for(lambda: len(_get(stack, switch["id"])["log"]) >= 1, 60, "the first step to finish")
    victim = stack.procs["worker"]
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    time.sleep(1.5)  # results arrive into a queue nobody serves
    stack.procs["worker"] = stack.start_worker("worker-switch")
    # then the switch completes, each step ran once, and the card holds only the new provider's SD
    done = _wait(stack, switch["id"])
    assert done["state"] == "completed", done
    assert [e["step"] for e in done["log"]] == ["create_sd", "load_keys", "verify", "delete_old:0", "finish"]
    counts = _jobs_per_step(stack, switch["id"])
    assert counts == {"create_security_domain": 1, "rotate_keys": 1, "delete_old": 1, "completed_events": 1}
    stack.stop_gateway(gw)
    db = _card_agrees(stack, gw)
    assert db["sds"] == [NEW + "01"] and db["owners"] == {NEW + "01": "provider"}


def test_an_agent_killed_mid_switch_restarts_and_the_switch_completes_once(stack: Stack) -> None:
    gw = stack.gateway("switch-agent", "GW-SWITCH-AGENT", wait_s=5)
    stack.start_agent(gw)
    _old_provider_serves(stack, gw, "02")
    stack.stop_gateway(gw)
    # given an agent that dies right after the card ran a PUT KEY (the key step of the saga)
    agent = stack.start_agent(gw, TESSERA_AGENT_CRASH_AFTER="D8:1")
    switch = _switch(stack, gw, "02")
    wait_for(lambda: agent.poll() is not None, 60, "the agent to crash")
    assert agent.returncode == 137
    stack.start_agent(gw)
    done = _wait(stack, switch["id"])
    assert done["state"] == "completed", done
    counts = _jobs_per_step(stack, switch["id"])
    assert counts == {"create_security_domain": 1, "rotate_keys": 1, "delete_old": 1, "completed_events": 1}
    stack.stop_gateway(gw)
    db = _card_agrees(stack, gw)
    assert db["sds"] == [NEW + "02"]


def test_a_card_refusing_the_new_keys_rolls_the_switch_back_to_the_old_provider(stack: Stack) -> None:
    gw = stack.gateway("switch-refuse", "GW-SWITCH-REFUSE", wait_s=5)
    stack.start_agent(gw)
    _old_provider_serves(stack, gw, "03")
    stack.stop_gateway(gw)
    # the card answers 6A80 to PUT KEY: the key step of the saga fails on the card
    agent = stack.start_agent(gw, TESSERA_AGENT_CARD_REFUSES="D8")
    switch = _switch(stack, gw, "03")
    done = _wait(stack, switch["id"])
    assert done["state"] == "rolled_back", done
    # creating the SD puts its first keys: the create step fails, and nothing of it stays
    assert [(e["step"], e["outcome"]) for e in done["log"]][0] == ("create_sd", "failed")
    assert agent.poll() is None
    stack.stop_gateway(gw)
    db = _card_agrees(stack, gw)
    assert db["sds"] == [OLD + "03"] and db["owners"] == {OLD + "03": "supplier"}
    contracts = stack.query(
        "from tenants.models import Contract\n"
        f"out = sorted((c.provider.slug, c.status) for c in Contract.objects.filter(device_id='{gw.device_id}'))\n"
    )
    assert contracts == [["provider", "canceled"], ["supplier", "active"]]
