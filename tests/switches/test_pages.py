"""Contract and provider-switch pages: the subscriber's contracts and "Switch provider", the switch
checklist as each party sees it (subscriber, issuer, new provider, old provider, stranger), the
issuer's form, and bad input answered on the page (never a 500)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from switches.models import Switch
from switches.services import switch_request
from tenants.models import Contract
from tests.switches.conftest import OLD_SD

pytestmark = pytest.mark.django_db(transaction=True)

OLD_NAME, NEW_NAME = "Supplier Ltd", "GreenCo Energy"


def client(s: Any, slug: str) -> Client:
    c = Client()
    c.force_login(s.w.users[slug])
    return c


def text(resp: Any) -> str:
    return resp.content.decode()


@pytest.fixture
def s(sworld: Any) -> Any:
    """The switch world with names a page can be searched for."""
    sworld.w.provider.name = OLD_NAME
    sworld.w.provider.save(update_fields=["name"])
    sworld.new_provider.name = NEW_NAME
    sworld.new_provider.save(update_fields=["name"])
    sworld.subscriber.name = "Homeowner"
    sworld.subscriber.save(update_fields=["name"])
    return sworld


def start_from_page(s: Any, provider: str = "greenco") -> Any:
    return client(s, "home").post(f"/o/home/contracts/{s.contract.pk}/switch/", {"new_provider": provider})


def assert_no_old_provider(body: str) -> None:
    for needle in (OLD_NAME, "supplier", OLD_SD):
        assert needle not in body, needle


# --- the subscriber's contracts -----------------------------------------------------------------


def test_the_subscriber_sees_its_contracts_in_plain_words_and_switch_only_where_allowed(s):
    fixed = Contract.objects.create(
        subscriber=s.subscriber,
        provider=s.w.provider,
        device=s.w.device,
        service="Grid quality",
        switch_allowed=False,
        notice_days=30,
        connectivity_payer=s.subscriber,
    )
    home = client(s, "home")
    listing = home.get("/o/home/contracts/")
    assert listing.status_code == 200
    assert "Electricity supply" in text(listing) and "Grid quality" in text(listing)
    assert OLD_NAME in text(listing)

    switchable = home.get(f"/o/home/contracts/{s.contract.pk}/")
    assert switchable.status_code == 200
    assert 'id="contract-switch"' in text(switchable)
    assert "You may move this service to another provider at any time." in text(switchable)

    locked = home.get(f"/o/home/contracts/{fixed.pk}/")
    assert locked.status_code == 200
    body = text(locked)
    assert 'id="contract-switch"' not in body
    assert "does not let you change provider" in body
    assert "30 days of notice." in body and "You pay for the device&#x27;s network connection." in body
    # the switch form itself is refused for it: back to the contract with the reason
    resp = home.get(f"/o/home/contracts/{fixed.pk}/switch/")
    assert resp.status_code == 302 and resp["Location"] == f"/o/home/contracts/{fixed.pk}/"
    refused = home.post(f"/o/home/contracts/{fixed.pk}/switch/", {"new_provider": "greenco"})
    assert refused.status_code == 403
    assert "does not allow switching provider" in text(refused)
    assert not Switch.objects.exists()


def test_the_switch_form_lists_other_providers_and_explains_make_before_break(s):
    home = client(s, "home")
    resp = home.get(f"/o/home/contracts/{s.contract.pk}/switch/")
    assert resp.status_code == 200
    body = text(resp)
    assert 'data-provider="greenco"' in body and 'data-provider="stranger"' in body
    assert 'data-provider="supplier"' not in body  # the current provider is not a choice
    assert 'data-provider="sei"' not in body  # an SE issuer is not a provider
    assert "keeps serving you" in body and "If anything fails, nothing changes" in body
    confirm = home.get(f"/o/home/contracts/{s.contract.pk}/switch/?to=greenco")
    assert confirm.status_code == 200
    assert f"Move Electricity supply to {NEW_NAME}?" in text(confirm)
    assert 'id="switch-confirm"' in text(confirm)
    bad = home.get(f"/o/home/contracts/{s.contract.pk}/switch/?to=supplier")
    assert bad.status_code == 400 and "Choose one of the listed providers." in text(bad)


def test_posting_starts_a_switch_and_a_second_one_is_refused_with_a_clear_message(s):
    resp = start_from_page(s)
    switch = Switch.objects.get()
    assert resp.status_code == 302 and resp["Location"] == f"/o/home/switches/{switch.pk}/"
    assert (switch.new_provider, switch.initiator, switch.keys_mode) == (
        s.new_provider,
        "subscriber",
        "confidential",
    )
    assert switch.old_contract == s.contract

    again = start_from_page(s, provider="stranger")
    assert again.status_code == 409
    assert "A provider switch is already running for this device" in text(again)
    assert Switch.objects.count() == 1
    # the contract page now points at the running switch instead of offering another
    page = text(client(s, "home").get(f"/o/home/contracts/{s.contract.pk}/"))
    assert 'id="contract-running-switch"' in page and 'id="contract-switch"' not in page


# --- the switch page, per viewer ------------------------------------------------------------------


def test_the_switch_page_shows_the_steps_and_polls_while_running(s):
    start_from_page(s)
    switch = Switch.objects.get()
    home = client(s, "home")
    resp = home.get(f"/o/home/switches/{switch.pk}/")
    assert resp.status_code == 200
    body = text(resp)
    for label in (f"Setting up {NEW_NAME}", "Loading its keys", "Checking", f"Removing {OLD_NAME}", "Done"):
        assert label in body, label
    assert 'class="step-current"' in body  # create_sd is under way
    assert 'hx-trigger="every 2s, switch-changed"' in body
    assert "switches/switches.js" in body
    # the htmx refresh answers the fragment only
    fragment = home.get(f"/o/home/switches/{switch.pk}/", HTTP_HX_REQUEST="true")
    assert fragment.status_code == 200
    assert text(fragment).lstrip().startswith('<div id="switch-live"')
    assert "<html" not in text(fragment)
    # the issuer sees everything, in its switches list too
    sei = client(s, "sei")
    assert f"Removing {OLD_NAME}" in text(sei.get(f"/o/sei/switches/{switch.pk}/"))
    assert str(switch.pk) in text(sei.get("/o/sei/switches/"))


def test_the_new_provider_never_sees_the_old_one(s):
    start_from_page(s)
    switch = Switch.objects.get()
    greenco = client(s, "greenco")
    for path in (f"/o/greenco/switches/{switch.pk}/", "/o/greenco/switches/", "/o/greenco/contracts/"):
        resp = greenco.get(path)
        assert resp.status_code == 200, path
        assert_no_old_provider(text(resp))
    page = text(greenco.get(f"/o/greenco/switches/{switch.pk}/"))
    assert f"Setting up {NEW_NAME}" in page and "Removing" not in page
    contract = text(greenco.get(f"/o/greenco/contracts/{switch.new_contract_id}/"))
    assert_no_old_provider(contract)
    # once its security domain is on the card, the switch waits for the new provider's own keys:
    # the new provider is told what to do, the subscriber what is going on
    s.run()
    switch.refresh_from_db()
    assert switch.state == "awaiting_keys", (switch.step, switch.log)
    page = text(greenco.get(f"/o/greenco/switches/{switch.pk}/"))
    assert f"Load your keys into your new security domain {switch.new_sd_aid}" in page
    assert_no_old_provider(page)
    home = text(client(s, "home").get(f"/o/home/switches/{switch.pk}/"))
    assert f"Loading its keys: waiting for {NEW_NAME}" in home and "loads its own keys" in home
    assert home.count('class="step-done"') == 1  # setting up the new provider


def test_the_old_provider_gets_404_while_it_runs_and_sees_only_lost_after_completion(s):
    switch = switch_request(
        actor=s.subscriber_actor, device=s.w.device, new_provider="greenco", keys_mode="portal"
    )
    supplier = client(s, "supplier")
    assert supplier.get(f"/o/supplier/switches/{switch.pk}/").status_code == 404
    assert str(switch.pk) not in text(supplier.get("/o/supplier/switches/"))

    s.run()
    switch.refresh_from_db()
    assert switch.state == "completed", (switch.error_code, switch.error_message, switch.log)
    resp = supplier.get(f"/o/supplier/switches/{switch.pk}/")
    assert resp.status_code == 200
    body = text(resp)
    assert "Lost" in body and "moved Electricity supply on device" in body
    for needle in (NEW_NAME, "greenco", switch.new_sd_aid, "Setting up"):
        assert needle not in body, needle
    assert "hx-trigger" not in body  # nothing more to follow
    listing = text(supplier.get("/o/supplier/switches/"))
    assert str(switch.pk) in listing and NEW_NAME not in listing
    ended = text(supplier.get(f"/o/supplier/contracts/{s.contract.pk}/"))
    assert "moved to another provider" in ended and "Lost" in ended
    for needle in (NEW_NAME, "greenco"):
        assert needle not in ended, needle

    # the subscriber: all steps done, the old contract among the past ones, the new one in force
    home = client(s, "home")
    done = text(home.get(f"/o/home/switches/{switch.pk}/"))
    assert f"Done: {NEW_NAME} now provides Electricity supply." in done
    assert 'class="step-current"' not in done and 'class="step-todo"' not in done
    assert "hx-trigger" not in done
    contracts = text(home.get("/o/home/contracts/"))
    current, past = contracts.split('id="contracts-past"')
    assert NEW_NAME in current and OLD_NAME in past
    assert_no_old_provider(text(client(s, "greenco").get(f"/o/greenco/switches/{switch.pk}/")))


def test_a_stranger_gets_404_everywhere(s):
    start_from_page(s)
    switch = Switch.objects.get()
    stranger = client(s, "stranger")
    for path in (
        f"/o/stranger/switches/{switch.pk}/",
        f"/o/stranger/contracts/{s.contract.pk}/",
        f"/o/stranger/contracts/{s.contract.pk}/switch/",
        f"/o/home/switches/{switch.pk}/",
        "/o/home/contracts/",
    ):
        assert stranger.get(path).status_code == 404, path
    resp = stranger.post(f"/o/stranger/contracts/{s.contract.pk}/switch/", {"new_provider": "stranger"})
    assert resp.status_code == 404
    assert Switch.objects.count() == 1


# --- the issuer's form, and bad input -------------------------------------------------------------


def test_the_issuer_reassigns_a_leased_device_with_the_same_form(s):
    sei = client(s, "sei")
    form = sei.get("/o/sei/switches/new/")
    assert form.status_code == 200
    assert f'value="{s.contract.pk}"' in text(form) and 'value="greenco"' in text(form)
    resp = sei.post(
        "/o/sei/switches/new/",
        {"contract": str(s.contract.pk), "new_provider": "greenco", "keys_mode": "portal"},
    )
    switch = Switch.objects.get()
    assert resp.status_code == 302 and resp["Location"] == f"/o/sei/switches/{switch.pk}/"
    assert (switch.initiator, switch.requested_by.slug, switch.keys_mode) == ("issuer", "sei", "portal")
    # the subscriber follows it, and is asked for its consent when the new provider's work needs it
    home = client(s, "home")
    assert home.get(f"/o/home/switches/{switch.pk}/").status_code == 200
    s.run()
    switch.refresh_from_db()
    assert switch.current_job is not None and switch.current_job.state == "awaiting_consent", switch.log
    page = text(home.get(f"/o/home/switches/{switch.pk}/"))
    assert f"{NEW_NAME} needs your consent to continue" in page and 'href="/o/home/consents/"' in page
    assert "Waiting for the subscriber" in text(client(s, "sei").get(f"/o/sei/switches/{switch.pk}/"))
    # a refusal rolls the switch back: the page says nothing changed and marks the step that failed
    # the new provider's consent request was put to the subscriber with the switch
    from tenants.models import Consent

    consent = Consent.objects.get(grantee=s.new_provider, device=s.w.device, status="pending")
    assert "answer it on your Consents page" in text(home.get(f"/o/home/switches/{switch.pk}/"))
    assert home.post(f"/o/home/consents/{consent.pk}/deny/").status_code == 302
    s.run()
    switch.refresh_from_db()
    assert switch.state == "rolled_back", (switch.state, switch.log)
    page = text(home.get(f"/o/home/switches/{switch.pk}/"))
    assert f"Not switched: nothing changed, {OLD_NAME} keeps serving." in page
    assert 'class="step-failed"' in page and "Undone: the device is as before" in page
    assert "hx-trigger" not in page
    assert Contract.objects.get(pk=s.contract.pk).status == "active"


SUBSCRIBER_BAD_INPUT = [
    ({}, "Choose the new provider."),
    ({"new_provider": "nope"}, "Choose one of the listed providers."),
    ({"new_provider": "supplier"}, "Choose one of the listed providers."),  # the current one
    ({"new_provider": "x" * 5000}, "Choose one of the listed providers."),
    ({"new_provider": "greenco\x00"}, "Choose one of the listed providers."),
    ({"new_provider": "greenco", "keys_mode": "telepathy"}, "Choose how the new provider"),
]

ISSUER_BAD_INPUT = [
    ({"contract": "not-a-uuid", "new_provider": "greenco"}, "Choose one of the listed services."),
    ({"new_provider": "greenco"}, "Choose the service to move."),
    ({"contract": "{pk}", "new_provider": "sei"}, "Choose one of the listed providers."),  # not a provider
    ({"contract": "{pk}", "new_provider": "supplier"}, "already provides Electricity supply"),
    ({"contract": "{pk}", "new_provider": ["greenco", "stranger"], "keys_mode": "x" * 300}, "Choose how"),
]


def test_bad_input_on_either_form_is_a_message_on_the_page_never_a_500(s):
    # (one test for all cases: the switch world is expensive to build)
    home, sei = client(s, "home"), client(s, "sei")
    for data, message in SUBSCRIBER_BAD_INPUT:
        resp = home.post(f"/o/home/contracts/{s.contract.pk}/switch/", data)
        assert resp.status_code == 400, (data, text(resp)[:300])
        assert message in text(resp), data
    for data, message in ISSUER_BAD_INPUT:
        data = {
            k: (v.replace("{pk}", str(s.contract.pk)) if isinstance(v, str) else v) for k, v in data.items()
        }
        resp = sei.post("/o/sei/switches/new/", data)
        assert resp.status_code == 400, (data, text(resp)[:300])
        assert message in text(resp), data
    assert not Switch.objects.exists()


def test_the_nav_links_to_contracts_and_switches(s):
    body = text(client(s, "home").get("/o/home/contracts/"))
    assert 'href="/o/home/contracts/"' in body and 'href="/o/home/switches/"' in body
