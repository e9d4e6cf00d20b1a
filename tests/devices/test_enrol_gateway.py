"""`manage.py enrol_gateway` registers what `agent init` printed: device, SE, ISD keys, paired."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from devices.models import Device, SecureElement
from keys.models import KeySet
from keys.services import keyset_static_keys

ROOT = Path(__file__).resolve().parents[2]


def agent_init(tmp_path: Path, serial: str) -> Path:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent",
            "init",
            "--config",
            str(tmp_path / "agent.toml"),
            "--server",
            "https://127.0.0.1:8000",
            "--serial",
            serial,
        ],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "init.json"
    out.write_text(proc.stdout)
    return out


def test_a_freshly_initialised_gateway_is_enrolled_and_paired(
    world: Any, tmp_path: Path, capsys: Any
) -> None:
    # given
    init_path = agent_init(tmp_path, "GW-SIM-1")
    init = json.loads(init_path.read_text())
    hand_over = json.loads(Path(init["isd_keys_file"]).read_text())
    # when
    call_command(
        "enrol_gateway",
        "--manufacturer=owner-sei",
        "--issuer=owner-sei",
        f"--init-json={init_path}",
        "--kind=meter",
        "--subscriber=home-ss",
    )
    # then
    device = Device.objects.get(serial="GW-SIM-1")
    assert device.identity_key_id == init["key_id"]
    assert device.subscriber == world.subscriber
    se = SecureElement.objects.get(serial=init["se"]["serial"])
    assert se.device == device
    keyset = KeySet.objects.get(security_domain__secure_element=se)
    assert keyset.status == "active" and keyset.kvn == init["se"]["kvn"]
    assert keyset.sequence_counter == init["se"]["sequence_counter"]
    assert keyset_static_keys(keyset=keyset).enc.hex().upper() == hand_over["enc"].upper()
    printed = capsys.readouterr().out
    assert keyset.kcv_enc in printed and hand_over["enc"] not in printed.upper()


def test_the_init_json_and_keys_file_are_accepted_by_the_api_as_they_are(world: Any, tmp_path: Path) -> None:
    from tests.conftest import client_for

    init = json.loads(agent_init(tmp_path, "GW-SIM-2").read_text())
    hand_over = json.loads(Path(init["isd_keys_file"]).read_text())
    client = client_for(world.owner_user)
    device = {k: init[k] for k in ("serial", "key_id", "identity_public_key")}
    resp = client.post(
        "/api/v1/orgs/owner-sei/devices/",
        {**device, "kind": "meter", "se_issuer": "owner-sei", "se_serial": init["se"]["serial"]},
        format="json",
    )
    assert resp.status_code == 201, resp.content
    resp = client.post(
        "/api/v1/orgs/owner-sei/secure-elements/",
        {**init["se"], "isd_keys": hand_over, "device": {"manufacturer": "owner-sei", "serial": "GW-SIM-2"}},
        format="json",
    )
    assert resp.status_code == 201, resp.content
    assert resp.json()["pairing"] == {"device": "GW-SIM-2", "state": "paired"}
    # the CASD key the card generated is kept on the SE (no CA in this world: uncertified, and why)
    casd = resp.json()["casd"]
    assert casd["state"] == "uncertified" and casd["detail"]


def test_an_unknown_organisation_is_a_clear_command_error(world: Any, tmp_path: Path) -> None:
    init_path = agent_init(tmp_path, "GW-SIM-3")
    with pytest.raises(CommandError, match="no-such"):
        call_command(
            "enrol_gateway", "--manufacturer=no-such", "--issuer=owner-sei", f"--init-json={init_path}"
        )
    assert not Device.objects.filter(serial="GW-SIM-3").exists()
