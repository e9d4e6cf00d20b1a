"""Ticks racing on PostgreSQL: the campaign row lock makes concurrent ticks start each device once
and keep the rate limit (SQLite serialises writers anyway, so this needs the real database)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from campaigns.models import Campaign, CampaignTarget
from campaigns.services import campaign_create, campaign_tick
from switches.models import Switch
from tests.campaigns.conftest import Fleet
from tests.conftest import service_unavailable

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def test_concurrent_ticks_start_each_device_once_within_the_rate(fleet: Fleet) -> None:
    if connection.vendor != "postgresql":
        service_unavailable("concurrent row locks need PostgreSQL (DATABASE_URL)")
    fl = fleet
    c = campaign_create(actor=fl.w.sei_actor, new_provider="greenco", devices=fl.serials, rate_per_minute=3)
    now = timezone.now()
    Campaign.objects.filter(pk=c.pk).update(state="running", started_at=now)
    barrier = threading.Barrier(4)
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def tick() -> None:
        from django.db import connection as conn

        try:
            barrier.wait(timeout=10)
            results.append(campaign_tick(c.pk, now=now))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=tick) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    # then the four ticks together started exactly the rate's worth, none refused as a duplicate
    assert sum(r["started"] for r in results) == 3 and sum(r["skipped"] for r in results) == 0, results
    assert Switch.objects.filter(campaign_id=c.pk).count() == 3
    assert CampaignTarget.objects.filter(campaign=c, state="running").count() == 3
    assert CampaignTarget.objects.filter(campaign=c, state="pending").count() == 3
