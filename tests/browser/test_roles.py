"""Each stakeholder role logs in to the real ASGI server in Chromium and sees its own world.

The server is a real ``daphne`` process on the embedded defaults (SQLite in a temporary var dir,
in-memory channel layer) with the demo data of ``seed_demo``. Screenshots go to
``artifacts/screenshots/`` for people to look at; the assertions are what the test checks.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.support import CHROMIUM, CHROMIUM_ARGS, PASSWORD, SHOTS, embedded_portal
from tests.conftest import service_unavailable

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory: Any) -> Iterator[str]:
    """``manage.py migrate`` + ``seed_demo`` on a fresh var dir, then daphne on a free port."""
    with embedded_portal(tmp_path_factory.mktemp("var")) as (url, _env, _children):
        yield url


@pytest.fixture(scope="module")
def chromium(server: str) -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - the venv has it
        service_unavailable("playwright is not installed")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def log_in(browser: Any, server: str, username: str, **context_args: Any) -> Any:
    context = browser.new_context(**{"viewport": {"width": 1280, "height": 860}, **context_args})
    page = context.new_page()
    page.goto(server + "/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")
    return page


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def dashboard_devices(page: Any) -> list[str]:
    if page.locator("#dashboard-devices").count() == 0:
        return []
    return [s.strip() for s in page.locator("#dashboard-devices .serial").all_inner_texts()]


# username, role code, devices it must see on its dashboard, serial prefixes it must not see
ROLES = [
    ("gridco", "sei", ["MTR-0001", "MTR-0002", "MTR-0003"], ["OBU-", "GW"]),
    ("voltameter", "dm", ["MTR-0001", "MTR-0002", "MTR-0003"], ["OBU-", "GW"]),
    ("siliconsafe", "ses", ["MTR-0001", "OBU-0001", "GW-0001"], []),
    ("trustroot-ca", "ca", [], ["MTR-", "OBU-", "GW"]),
    ("trustsm", "tsm", [], ["MTR-", "OBU-", "GW"]),
    ("sunpower", "sp", ["MTR-0001"], ["MTR-0002", "OBU-", "GW"]),
    ("quickfix", "ap", ["OBU-0001"], ["OBU-0002", "MTR-", "GW"]),
    ("home-ana", "ss", ["MTR-0001"], ["MTR-0002", "MTR-0003", "OBU-", "GW"]),
    ("netlink", "np", [], ["MTR-", "OBU-", "GW"]),
]


@pytest.mark.parametrize(("username", "role", "sees", "never"), ROLES, ids=[r[1] for r in ROLES])
def test_each_role_logs_in_and_its_dashboard_shows_only_its_world(
    chromium: Any, server: str, username: str, role: str, sees: list[str], never: list[str]
) -> None:
    page = log_in(chromium, server, username)
    try:
        # one organisation each: straight to its dashboard
        assert re.search(rf"/o/{re.escape(username)}/$", page.url), page.url
        assert page.locator("h1").first.inner_text().strip()
        serials = dashboard_devices(page)
        for serial in sees:
            assert serial in serials, (username, serials)
        for prefix in never:
            assert not [s for s in serials if s.startswith(prefix)], (username, serials)
        if not sees:
            assert not serials
        # the nav bar of an owner, and the recent events of the organisation
        nav = page.locator(".mainnav").inner_text()
        for item in ("Dashboard", "Devices", "Members", "Mandates", "Audit", "API docs"):
            assert item in nav
        assert page.locator("#events li").count() >= 1
        shot(page, role)
    finally:
        page.context.close()


def test_the_sunpower_device_page_shows_its_own_security_domain_and_not_gridcos(
    chromium: Any, server: str
) -> None:
    page = log_in(chromium, server, "sunpower")
    try:
        page.click("#dashboard-devices a.serial >> text=MTR-0001")
        page.wait_for_load_state("networkidle")
        tree = page.locator(".sd-tree").inner_text()
        assert "A000000151535053554E" in tree  # SunPower's own SD
        assert "A000000151000000" in tree  # the ISD every SD hangs from
        assert "A0000001515350475249" not in tree  # GridCo's application SD: not SunPower's business
        shot(page, "sp-device")
    finally:
        page.context.close()


def test_the_tsm_acts_for_gridco_under_its_mandate_and_sees_the_meters(chromium: Any, server: str) -> None:
    page = log_in(chromium, server, "trustsm")
    try:
        page.click("text=GridCo Distribution")
        page.wait_for_load_state("networkidle")
        assert "on_behalf_of=gridco" in page.url
        banner = page.locator("#behalf-banner").inner_text()
        assert "Acting for" in banner and "GridCo Distribution" in banner
        assert "MTR-0001" in dashboard_devices(page)
        nav = page.locator(".mainnav").inner_text()
        assert "Members" not in nav and "Mandates" not in nav  # never on someone's behalf
        shot(page, "tsm-for-gridco")
    finally:
        page.context.close()


def test_the_operator_sees_the_pending_applications(chromium: Any, server: str) -> None:
    page = log_in(chromium, server, "operator")
    try:
        assert page.url.rstrip("/") == server
        page.click("a.button >> text=Pending applications")
        page.wait_for_load_state("networkidle")
        assert page.locator("h1").inner_text() == "Pending applications"
        shot(page, "operator")
    finally:
        page.context.close()


def test_a_new_event_appears_live_on_the_dashboard(chromium: Any, server: str) -> None:
    page = log_in(chromium, server, "gridco")
    try:
        page.wait_for_selector("#live-status[data-state=on]", timeout=10_000)
        other = page.context.new_page()
        other.goto(server + "/o/gridco/mandates/")
        other.fill("#id_grantee", "greenwatt")
        other.check("input[name=actions][value='status.read']")
        other.click("#grant-form button[type=submit]")
        other.wait_for_load_state("networkidle")
        assert "Mandate granted" in other.content()
        page.wait_for_selector("#events li.fresh >> text=mandate:grant", timeout=10_000)
        shot(page, "sei-live")
        shot(other, "sei-mandates")
        other.goto(server + "/o/gridco/members/")
        shot(other, "sei-members")
    finally:
        page.context.close()


def grant(page: Any, server: str, org: str, grantee: str) -> None:
    page.goto(f"{server}/o/{org}/mandates/")
    page.fill("#id_grantee", grantee)
    page.check("input[name=actions][value='audit.view']")
    page.click("#grant-form button[type=submit]")
    page.wait_for_load_state("networkidle")


def test_granting_and_revoking_a_mandate_works_without_javascript(chromium: Any, server: str) -> None:
    page = log_in(chromium, server, "autowerk", java_script_enabled=False)
    try:
        grant(page, server, "autowerk", "quickfix")
        row = page.locator("#mandates-given tbody tr", has_text="QuickFix Garage")
        assert row.locator(".state").inner_text() == "active"
        row.locator("button", has_text="Revoke").click()
        page.wait_for_load_state("networkidle")
        assert "Mandate revoked." in page.locator(".messages").inner_text()
        row = page.locator("#mandates-given tbody tr", has_text="QuickFix Garage")
        assert row.locator(".state").inner_text() == "revoked"
    finally:
        page.context.close()


def test_revoking_a_mandate_with_htmx_swaps_the_row_in_place(chromium: Any, server: str) -> None:
    page = log_in(chromium, server, "medigate")
    try:
        grant(page, server, "medigate", "southclinic")
        row = page.locator("#mandates-given tbody tr", has_text="South Clinic")
        row.locator("button", has_text="Revoke").click()
        page.wait_for_selector("#mandates-given tr >> .state-revoked", timeout=5_000)
        assert page.locator(".messages", has_text="Mandate revoked.").count() == 0  # no reload
        assert page.url.endswith("/o/medigate/mandates/")
    finally:
        page.context.close()


def test_the_portal_is_usable_on_a_phone(chromium: Any, server: str) -> None:
    page = log_in(
        chromium,
        server,
        "home-ana",
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    try:
        assert "MTR-0001" in dashboard_devices(page)
        # nothing wider than the screen: the layout reflows instead of scrolling sideways
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, width
        shot(page, "phone-ss-dashboard")
        page.goto(server + "/o/home-ana/devices/")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        shot(page, "phone-ss-devices")
    finally:
        page.context.close()
