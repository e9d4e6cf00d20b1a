"""A homeowner switches electricity supplier on a phone, in Chromium, and watches the checklist move.

The portal is the real daphne process on the embedded defaults with the demo data (Ana's meter
MTR-0001 is supplied by SunPower under a switchable contract), its demo gateways prepared by
``run_demo --prepare-only``; the meter's gateway is a real ``python -m agent run`` process started
only once the switch page is open, so the page learns of the progress only by itself (live events
and its 2 s refresh), never by a reload.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.browser.test_jobs import GATEWAY, Portal, chromium, portal  # noqa: F401  (fixtures)
from tests.browser.test_roles import log_in, shot

pytestmark = pytest.mark.browser

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}


def test_ana_switches_supplier_on_her_phone_and_sees_each_step_live(chromium: Any, portal: Portal) -> None:  # noqa: F811
    page = log_in(chromium, portal.url, "home-ana", **PHONE)
    try:
        # given Ana's contracts, reached from the main navigation
        page.click("nav.mainnav >> text=Contracts")
        page.wait_for_url(re.compile(r"/o/home-ana/contracts/$"))
        page.click("#contracts-current >> text=Electricity supply")
        terms = page.locator("#contract-terms").inner_text()
        assert "SunPower" in terms and "may move this service to another provider" in terms
        shot(page, "switch-contract-phone")
        # when she picks another supplier, reads what will happen and confirms
        page.click("#contract-switch")
        providers = page.locator("#switch-providers [data-provider]")
        slugs = [providers.nth(i).get_attribute("data-provider") for i in range(providers.count())]
        assert "greenwatt" in slugs and "sunpower" not in slugs
        page.click("#switch-providers [data-provider=greenwatt]")
        assert "If anything fails, nothing changes" in page.locator("#switch-explain").inner_text()
        shot(page, "switch-confirm-phone")
        page.click("#switch-confirm")
        page.wait_for_url(re.compile(r"/o/home-ana/switches/[0-9a-f-]{36}/$"))
        # then the switch page shows the first step under way, waiting for the meter
        first = page.locator("#switch-steps li").first
        assert first.get_attribute("data-state") == "current"
        assert "Setting up" in first.inner_text()
        page.wait_for_selector("#live-status[data-state=on]", timeout=10_000)
        page.evaluate("window.__notReloaded = true")
        # and when the meter's gateway calls in, the checklist moves on without a reload: the new
        # supplier's area is set up and the switch waits for it to load its own keys
        portal.start_agent(GATEWAY)
        try:
            page.wait_for_selector("#switch-live[data-state=awaiting_keys]", timeout=90_000)
        except Exception:
            shot(page, "switch-stuck")
            raise AssertionError("the switch did not move on live:\n" + portal.agent_log(GATEWAY)) from None
        assert page.evaluate("window.__notReloaded") is True
        assert page.locator("#switch-steps li").first.get_attribute("data-state") == "done"
        assert "Loading its keys: waiting for" in page.locator("#switch-steps").inner_text()
        headline = page.locator("#switch-headline").inner_text()
        assert "SunPower" in headline and "keeps serving" in headline
        shot(page, "switch-live-phone")
    finally:
        page.context.close()
