"""The provider switch saga on an in-process gateway with a software SE (real card, real scripts)."""

from __future__ import annotations

from typing import Any

import pytest

from devices.models import SecurityDomain
from switches.models import Switch
from switches.services import switch_request
from tenants.models import Consent, Contract
from tests.switches.conftest import APP, NEW_SD, OLD_SD

pytestmark = pytest.mark.django_db(transaction=True)


def _card_aids(s: Any) -> set[str]:
    """AIDs of the security domains and applications in the card's own registry."""
    return {bytes(e.aid).hex().upper() for e in s.w.gateway.card.registry.applications}


def _request(s: Any, **kw: Any) -> Switch:
    kw.setdefault("keys_mode", "portal")
    return switch_request(actor=s.subscriber_actor, device=s.w.device, new_provider="greenco", **kw)


def test_a_subscriber_switches_provider_make_before_break_and_the_card_agrees(sworld):
    s = sworld
    switch = _request(
        s, new_sd_aid=NEW_SD, app={"instance_aid": APP, "data": [{"dgi": "0101", "value": "CAFE"}]}
    )
    s.run()
    switch.refresh_from_db()
    assert switch.state == "completed", (switch.error_code, switch.error_message, switch.log)
    assert [e["step"] for e in switch.log] == [
        "create_sd",
        "install_app",
        "personalize_app",
        "load_keys",
        "verify",
        "delete_old:0",
        "finish",
    ]
    aids = _card_aids(s)
    assert NEW_SD in aids and APP in aids and OLD_SD not in aids
    assert not SecurityDomain.objects.filter(aid=OLD_SD).exists()
    assert SecurityDomain.objects.get(aid=NEW_SD).owner == s.new_provider
    old, new = Contract.objects.get(pk=s.contract.pk), Contract.objects.get(pk=switch.new_contract_id)
    assert (old.status, old.end_reason, new.status) == ("ended", "switched", "active")
    assert Consent.objects.get(grantee=s.new_provider, device=s.w.device).status == "granted"


def test_the_application_file_already_on_the_card_is_not_loaded_again(sworld):
    from tests.jobs.gateway import ISD_AID
    from tests.switches.conftest import run_job

    s = sworld
    # the issuer's own application put the demo load file on the card, owned by the ISD
    run_job(
        s.w, s.w.sei_actor, "install_application", {"sd": ISD_AID, "instance_aid": "A0000001515350415051"}
    )
    switch = _request(s, new_sd_aid=NEW_SD, app={"instance_aid": APP})
    s.run()
    switch.refresh_from_db()
    assert switch.state == "completed", (switch.error_code, switch.error_message)
    from jobs.models import Job

    install = Job.objects.get(kind="install_application", target_aid=APP)
    assert install.params["load"] is False
    assert APP in _card_aids(s)
