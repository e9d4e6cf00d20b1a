"""The systemd unit and the documented configuration (packaging/systemd/) agree with each other,
with `agent init` and with the agent's configuration loader; systemd itself accepts the unit."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent import config as agent_config
from agent.config import load_config
from tests.agent_packaging.conftest import provision

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "packaging" / "systemd" / "tessera-agent.service"
EXAMPLE = ROOT / "packaging" / "systemd" / "agent.toml.example"
SYSUSERS = ROOT / "packaging" / "systemd" / "tessera-agent.sysusers.conf"


def _unit() -> dict[str, dict[str, list[str]]]:
    """section → key → values (systemd allows a key more than once, so no configparser)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections.setdefault(current, {})
            continue
        key, _, value = line.partition("=")
        sections[current].setdefault(key.strip(), []).append(value.strip())
    return sections


def _one(section: dict[str, list[str]], key: str) -> str:
    assert key in section, f"{key}= missing"
    return section[key][-1]


def test_the_unit_runs_the_agent_unprivileged_and_hardened() -> None:
    unit = _unit()
    service = unit["Service"]
    assert _one(service, "User") == "tessera-agent" != "root"
    hardening = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        "DevicePolicy": "closed",
        "DeviceAllow": "/dev/tee0 rw",
        "Restart": "on-failure",
        "UMask": "0077",
        "StateDirectoryMode": "0700",
    }
    for key, value in hardening.items():
        assert _one(service, key) == value, key
    assert re.fullmatch(r"\d+s?", _one(service, "RestartSec"))
    # Exit codes a restart cannot cure (agent.cli): configuration error and unusable journal.
    assert set(_one(service, "RestartPreventExitStatus").split()) == {"2", "4"}
    assert "time-sync.target" in _one(unit["Unit"], "After")
    user = SYSUSERS.read_text().split("\n")[1].split()
    assert user[:2] == ["u", "tessera-agent"] and user[-1] == "/var/lib/tessera-agent"


def _example_keys() -> dict[str, set[str]]:
    """section → keys documented in the example, commented out or not."""
    out: dict[str, set[str]] = {"": set()}
    section = ""
    for raw in EXAMPLE.read_text().splitlines():
        line = raw.lstrip("#").strip() if re.match(r"#?\[|#?[a-z_]+ = ", raw) else ""
        if not line:
            continue
        if line.startswith("["):
            section = line.split("#", 1)[0].strip().strip("[]")
            out.setdefault(section, set())
        else:
            out[section].add(line.split(" = ")[0])
    return out


def test_the_example_documents_every_key_the_loader_accepts() -> None:
    documented = _example_keys()
    tables = {"poll", "timeouts", "localapi", "token"}
    assert documented[""] == agent_config._TOP - tables
    assert documented["poll"] == agent_config._POLL | {"wait_s"}
    assert documented["timeouts"] == agent_config._TIMEOUTS
    assert documented["localapi"] == agent_config._LOCALAPI - {"apps"}
    assert documented["localapi.apps"] == agent_config._LOCALAPI_APP
    assert documented["token"] == agent_config._TOKEN
    assert tables <= agent_config._TOP


def _paths() -> tuple[str, str, str, str]:
    """(config file in ExecStart, /etc dir, /var/lib dir, /run dir) from the unit."""
    service = _unit()["Service"]
    exec_start = _one(service, "ExecStart").split()
    assert exec_start[1] == "run" and exec_start[2] == "--config"
    etc = f"/etc/{_one(service, 'ConfigurationDirectory')}"
    state = f"/var/lib/{_one(service, 'StateDirectory')}"
    run = f"/run/{_one(service, 'RuntimeDirectory')}"
    return exec_start[3], etc, state, run


def test_the_unit_and_the_example_name_the_same_places(tmp_path: Path) -> None:
    config_file, etc, state, run = _paths()
    assert config_file == f"{etc}/agent.toml"
    text = EXAMPLE.read_text()
    assert text.startswith(f"# {config_file} ")
    assert f'identity_key = "{state}/agent.identity.pem"' in text
    assert f'journal = "{state}/agent.journal.sqlite"' in text
    assert f'backend = "soft:{state}/agent.se"' in text
    assert f'#socket = "{run}/agent.sock"' in text
    assert f'#pin_file = "{state}/token.pin"' in text

    # The example loads, once its directories exist (here: under tmp_path).
    fake_etc, fake_state, fake_run = tmp_path / "etc", tmp_path / "state", tmp_path / "run"
    for d in (fake_etc, fake_state, fake_run):
        d.mkdir()
    live = text.replace(state, str(fake_state)).replace(etc, str(fake_etc)).replace(run, str(fake_run))
    live = live.replace("#[localapi]", "[localapi]").replace('#socket = "', 'socket = "')
    (fake_etc / "agent.toml").write_text(live)
    # The install flow of docs/agent-install.md: init in the state directory, config moved to /etc.
    gw = provision(fake_state, "https://portal.example.org", "GW-0001")
    shutil.move(gw.config, fake_etc / "from-init.toml")
    example = load_config(fake_etc / "agent.toml")
    from_init = load_config(fake_etc / "from-init.toml")
    assert example.localapi is not None and example.localapi.socket == fake_run / "agent.sock"
    for field in (
        "server_url",
        "serial",
        "identity_key",
        "backend",
        "journal",
        "log_level",
        "poll",
        "timeouts",
    ):
        assert getattr(example, field) == getattr(from_init, field), field


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        from tests.conftest import service_unavailable

        service_unavailable("systemd-analyze is not installed (Debian package systemd)")
    # verify checks that ExecStart's program exists: point it at this interpreter.
    unit = tmp_path / "tessera-agent.service"
    unit.write_text(UNIT.read_text().replace("/opt/tessera-agent/bin/tessera-agent", sys.executable))
    verify = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stderr
    assert verify.stderr.strip() == "" and verify.stdout.strip() == "", verify.stderr  # no unknown keys
    security = subprocess.run(
        [analyze, "security", "--offline=yes", "--threshold=20", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert security.returncode == 0, security.stdout[-3000:] + security.stderr
    level = re.search(r"Overall exposure level for tessera-agent.service: (\d+\.\d+) (\w+)", security.stdout)
    assert level is not None, security.stdout[-2000:]
    assert float(level.group(1)) <= 2.0 and level.group(2) == "OK", level.group(0)


@pytest.mark.parametrize("broken", ["Bogus=yes", "ProtectSystem=sometimes"])
def test_the_verification_catches_a_broken_unit(tmp_path: Path, broken: str) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (covered by test_systemd_accepts_the_unit)")
    unit = tmp_path / "tessera-agent.service"
    text = UNIT.read_text().replace("/opt/tessera-agent/bin/tessera-agent", sys.executable)
    unit.write_text(text.replace("[Service]\n", f"[Service]\n{broken}\n"))
    verify = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert verify.returncode != 0 or verify.stderr.strip(), "systemd-analyze did not object"
