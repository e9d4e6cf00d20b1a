"""Fixtures for the gateway packaging tests: an agent provisioned with ``python -m agent init``
(soft SE, files in a temporary directory) and, where a portal is needed, the real portal behind
pytest-django's ``live_server`` with that agent's device enrolled through the service layer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def agent_env() -> dict[str, str]:
    """The agent's environment: no Django settings, the repository on the path."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(ROOT)
    return env


def run_agent(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        cwd=ROOT,
        env={**agent_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@dataclass
class Provisioned:
    directory: Path
    config: Path
    init: dict[str, Any]

    @property
    def card(self) -> Path:
        return self.config.with_name("agent.se")  # init's default: soft:NAME.se beside the config


def provision(
    directory: Path, server: str, serial: str = "GW-DOCTOR-1", *extra: str, env: dict[str, str] | None = None
) -> Provisioned:
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "agent.toml"
    out = run_agent("init", "--config", str(config), "--server", server, "--serial", serial, *extra, env=env)
    assert out.returncode == 0, out.stderr
    init = json.loads(out.stdout)
    if init.get("isd_keys_file"):  # a soft SE's (a token backend has none)
        Path(init["isd_keys_file"]).unlink()  # the SE issuer imported it (the doctor warns otherwise)
    return Provisioned(directory, config, init)


@pytest.fixture
def manufacturer(transactional_db: Any) -> Any:
    from tenants.access import Actor
    from tenants.models import MemberRole, OrgRole
    from tests import factories as f

    org = f.OrganisationFactory(slug="gw-maker", roles=[OrgRole.DEVICE_MANUFACTURER])
    user = f.MembershipFactory(
        org=org, user=f.UserFactory(username="gw-maker-user"), role=MemberRole.OWNER
    ).user
    return Actor(user=user, org=org, member_role=MemberRole.OWNER)


def enrol(actor: Any, gw: Provisioned) -> Any:
    from devices.services import device_register

    return device_register(
        actor=actor,
        serial=gw.init["serial"],
        kind="meter",
        identity_public_key=gw.init["identity_public_key"],
        key_id=gw.init["key_id"],
    )
