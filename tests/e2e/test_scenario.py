"""The whole life of a provider's security domain on real processes (PostgreSQL, Redis, daphne,
Celery worker and beat, agents), on a soft-card gateway and on a PC/SC gateway (pcscd + vpcd)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import Stack, repeated_secured_apdus, service_unavailable, state_changing
from tests.e2e.helpers import card_state, db_state

pytestmark = [pytest.mark.e2e, pytest.mark.services]

SD_KEPT = "A0000001515350E201"
SD_GONE = "A0000001515350E202"


@pytest.mark.parametrize("backend", ["soft", "pcsc"])
def test_a_tsm_and_a_provider_run_the_life_of_an_sd_and_the_card_agrees_with_the_database(
    stack: Stack, backend: str
) -> None:
    if backend == "pcsc" and stack.pcscd_unavailable:
        service_unavailable(stack.pcscd_unavailable)
    gw = stack.gateway(f"life-{backend}", f"GW-LIFE-{backend.upper()}", backend=backend)
    stack.start_agent(gw)
    tsm = {"on_behalf_of": "sei"}

    def run(user: str, org: str, kind: str, params: dict[str, Any], **kw: Any) -> dict[str, Any]:
        job = stack.request_job(user, org, gw.device_id, kind, params, **kw)
        done = stack.wait_job(user, org, job["id"], **({"on_behalf_of": kw["on_behalf_of"]} if kw else {}))
        assert done["state"] == "succeeded", (kind, done)
        return done

    # given a TSM mandated by the SE issuer and by the provider: two SDs for the provider
    run("tsm", "tsm", "create_security_domain", {"aid": SD_KEPT, "owner": "supplier"}, **tsm)
    run(
        "tsm",
        "tsm",
        "create_security_domain",
        {"aid": SD_GONE, "owner": "supplier"},
        mode="interactive",
        **tsm,
    )
    before = db_state(stack, gw)["kvns"][SD_KEPT]
    # the provider rotates the keys of one, itself
    run("supplier", "supplier", "rotate_keys", {"sd": SD_KEPT, "key_length": 32})
    # the issuer reads the card's registry (reconciliation)
    run("sei", "sei", "read_status", {})
    # the TSM deletes the other
    run("tsm", "tsm", "delete_security_domain", {"aid": SD_GONE}, **tsm)

    # a stranger sees nothing of the device or its jobs
    with stack.api("stranger") as c:
        assert c.get(f"/orgs/stranger/devices/{gw.device_id}/").status_code == 404
        assert c.get(f"/orgs/stranger/devices/{gw.device_id}/jobs/").status_code == 404
        jobs = stack.api("sei").get(f"/orgs/sei/devices/{gw.device_id}/jobs/").json()["results"]
        assert len(jobs) == 5
        for job in jobs:
            assert c.get(f"/orgs/stranger/jobs/{job['id']}/").status_code == 404
        assert all(j["id"] not in c.get("/orgs/stranger/jobs/").text for j in jobs)

    # then, the agent stopped, the card's own GET STATUS matches the database
    stack.stop_gateway(gw)
    card, db = card_state(gw), db_state(stack, gw)
    assert card["sds"] == db["sds"] == [SD_KEPT]
    assert db["owners"] == {SD_KEPT: "supplier"}
    assert card["kvns"] == db["kvns"]
    assert len(card["kvns"][SD_KEPT]) == 1 and card["kvns"][SD_KEPT] != before
    # and no command ever reached the card twice
    assert repeated_secured_apdus(gw.apdu_log) == {}
    assert len(state_changing(gw.apdu_log)) >= 6  # 2 × (INSTALL×2, PUT KEY), PUT KEY, DELETE, DELETE KEY
