"""A job requested from the device page in Chromium, watched live until the card has done it.

The portal is the real daphne process on the embedded defaults with the demo data, its demo
gateways prepared by ``run_demo --prepare-only`` (a software SE per device, its ISD keys in the
issuer's vault); the gateway of MTR-0001 is a real ``python -m agent run`` process, started only
once the job's page is open, so the page can only learn of the progress over its WebSocket.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.support import CHROMIUM, CHROMIUM_ARGS, ROOT, SHOTS, embedded_portal
from tests.browser.test_roles import log_in, shot
from tests.conftest import service_unavailable

pytestmark = pytest.mark.browser

GATEWAY = "MTR-0001"


class Portal:
    def __init__(self, url: str, var: Path, env: dict[str, str]) -> None:
        self.url = url
        self.var = var
        self.env = env
        self.agents: list[subprocess.Popen[bytes]] = []

    def start_agent(self, serial: str) -> None:
        """The device's agent, polling every half second instead of the production minimum."""
        config = self.var / "gateways" / serial / "agent.toml"
        config.write_text(re.sub(r"(?m)^min_s = .*$", "min_s = 0.5", config.read_text()))
        log = (self.var / f"agent-{serial}.log").open("wb")
        self.agents.append(
            subprocess.Popen(
                [sys.executable, "-m", "agent", "run", "--config", str(config)],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )

    def agent_log(self, serial: str) -> str:
        path = self.var / f"agent-{serial}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


@pytest.fixture(scope="module")
def portal(tmp_path_factory: Any) -> Iterator[Portal]:
    var = tmp_path_factory.mktemp("var")
    with embedded_portal(
        var,
        extra_env={"TESSERA_AGENT_HOLD_MS": "200"},
        prepare=lambda port: [["run_demo", "--prepare-only", "--port", str(port)]],
    ) as (url, env, children):
        running = Portal(url, var, env)
        running.agents = children  # stopped with the server
        yield running


@pytest.fixture(scope="module")
def chromium(portal: Portal) -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - the venv has it
        service_unavailable("playwright is not installed")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def open_device(page: Any, portal: Portal, serial: str) -> None:
    page.click(f"#dashboard-devices a.serial >> text={serial}")
    page.wait_for_load_state("networkidle")


def test_a_read_status_job_requested_on_the_device_page_turns_succeeded_live(
    chromium: Any, portal: Portal
) -> None:
    # given the SE issuer on its meter's page, with the job form showing only read_status's fields
    page = log_in(chromium, portal.url, "gridco")
    try:
        open_device(page, portal, GATEWAY)
        page.select_option("#id_kind", "read_status")
        assert page.locator("#id_sd").is_visible() and not page.locator("#id_owner").is_visible()
        # when it requests the job
        page.click("#job-form button[type=submit]")
        page.wait_for_url(re.compile(r"/o/gridco/jobs/[0-9a-f-]{36}/$"))
        page.wait_for_selector("#live-status[data-state=on]", timeout=10_000)
        # then the job's page shows it waiting for the device
        assert page.locator("#job-state").inner_text().strip() == "Queued"
        page.evaluate("window.__notReloaded = true")
        # and when the gateway calls in, the badge and the steps change without a reload
        portal.start_agent(GATEWAY)
        try:
            page.wait_for_selector("#job-state[data-state=succeeded]", timeout=60_000)
        except Exception:
            shot(page, "jobs-read-status-stuck")
            raise AssertionError("the job did not succeed live:\n" + portal.agent_log(GATEWAY)) from None
        assert page.evaluate("window.__notReloaded") is True
        step = page.locator(".tl-step[data-step=read_status]")
        assert step.get_attribute("data-state") == "completed"
        assert "9000" in step.locator(".sw").first.inner_text()
        shot(page, "jobs-read-status")
    finally:
        page.context.close()


def test_the_tsm_creates_a_security_domain_for_gridco_and_the_device_page_shows_it(
    chromium: Any, portal: Portal
) -> None:
    if not portal.agents:
        portal.start_agent(GATEWAY)
    page = log_in(chromium, portal.url, "trustsm")
    try:
        # given the TSM acting for GridCo on the meter's page
        page.click("text=GridCo Distribution")
        page.wait_for_load_state("networkidle")
        open_device(page, portal, GATEWAY)
        assert "on_behalf_of=gridco" in page.url
        page.select_option("#id_kind", "create_security_domain")
        page.fill("#id_aid", "A0000001515350AA01")
        assert page.locator("#id_owner").input_value() == "gridco"
        page.select_option("#id_mode", "interactive")
        shot(page, "jobs-device-form")
        # a refused request shows its reason in place
        page.fill("#id_aid", "A00001")
        page.click("#job-form button[type=submit]")
        page.wait_for_selector("#job-form .field-error")
        assert "AID of 5–16 bytes" in page.locator("#job-form").inner_text()
        page.select_option("#id_kind", "create_security_domain")
        page.fill("#id_aid", "A0000001515350AA01")
        # when it requests the security domain
        page.click("#job-form button[type=submit]")
        page.wait_for_url(re.compile(r"/o/trustsm/jobs/[0-9a-f-]{36}/\?on_behalf_of=gridco$"))
        # then it watches it succeed
        page.wait_for_selector("#job-state[data-state=succeeded]", timeout=60_000)
        assert page.locator(".tl-step[data-state=completed]").count() == 2
        shot(page, "jobs-create-sd")
        # and the device page lists the job and shows the new security domain
        page.click("h1 a.serial")
        page.wait_for_load_state("networkidle")
        assert "Create security domain" in page.locator("#device-jobs").inner_text()
        assert "A0000001515350AA01" in page.locator(".sd-tree").first.inner_text()
        shot(page, "jobs-device-after")
    finally:
        page.context.close()
