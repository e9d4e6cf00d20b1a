"""The CLI: JSON on success; on bad input one line on stderr, exit 2, never a traceback; and the
whole flow as its own process (own key store, only the API token) against the fake API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from sdk.cli import main
from tests.sdk.conftest import PASSPHRASE
from tests.sdk.fake_server import ORG, SSD, TOKEN

ROOT = Path(__file__).resolve().parents[2]
DEV = "6f1c1a4e-2f0b-4b59-9a53-0d1e7f1f0c11"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["nonsense"],
        ["keys", "load", "--device", DEV],  # no --sd
        ["keys", "load", "--device", DEV, "--sd", "A0", "--store", "{store}"],  # AID too short
        ["keys", "load", "--device", DEV, "--sd", "XYZ", "--store", "{store}"],
        ["keys", "load", "--device", DEV, "--sd", "A000000151535001", "--kvn", "80", "--store", "{store}"],
        ["keys", "load", "--device", DEV, "--sd", "A000000151535001", "--key-length", "20", "--store", "{store}"],
        ["keys", "load", "--device", "not-a-uuid", "--sd", "A000000151535001", "--store", "{store}"],
        ["script", "run", "--device", DEV, "--sd", "A000000151535001", "--apdu", "80", "--store", "{store}"],
        ["script", "run", "--device", DEV, "--sd", "A000000151535001", "--apdu", "80CA00660000FF", "--store", "{store}"],
        ["personalize", "--device", DEV, "--sd", "A000000151535001", "--app", "A000000151535001", "--dgi", "0101"],
        ["personalize", "--device", DEV, "--sd", "A000000151535001", "--app", "A0000001515350", "--dgi", "01=00"],
        ["receipt", "verify", "--se-id", "01", "--sd", "A000000151535001", "--kvn", "30", "--receipt", "00", "--store", "{store}"],
        ["receipt", "verify", "--se-id", "01", "--sd", "A000000151535001", "--kvn", "30", "--receipt", "00" * 16, "--store", "{store}"],
        ["ca", "pin", "--store", "{store}"],
        ["ca", "pin", "--root", "/nonexistent", "--store", "{store}"],
        ["ca", "pin", "--fetch", "--store", "{store}"],  # no server configured
        ["se", "verify", "--device", DEV, "--store", "/nonexistent/store"],
        ["se", "verify", "--device", DEV],  # no store
        ["init", "--store", "{store}"],  # exists
        ["init", "--store", "{new}", "--pkcs11", "/usr/lib/nothing.so"],  # no --token
        ["config", "--url", "ftp://x", "--store", "{store}"],
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], store: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [a.format(store=store.path, new=tmp_path / "new") for a in argv]
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and err.startswith("tessera-provider: ")
    assert "Traceback" not in err


def test_init_refuses_an_unencrypted_store_unless_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TESSERA_PROVIDER_PASSPHRASE", raising=False)
    assert main(["init", "--store", str(tmp_path / "a")]) == 2
    assert "passphrase_missing" in capsys.readouterr().err
    assert main(["init", "--store", str(tmp_path / "a"), "--no-passphrase"]) == 0
    assert json.loads(capsys.readouterr().out)["encrypted"] is False


def test_the_cli_as_its_own_process_against_the_api(tmp_path: Path, fake: Any) -> None:
    server, url = fake
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "TESSERA_PROVIDER_PASSPHRASE": PASSPHRASE,
        "TESSERA_PROVIDER_STORE": str(tmp_path / "store"),
        "TESSERA_URL": url,
        "TESSERA_ORG": ORG,
        "TESSERA_TOKEN": TOKEN,
    }

    def cli(*args: str, status: int = 0) -> dict[str, Any]:
        out = subprocess.run(
            [sys.executable, "-m", "sdk", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == status, out.stderr
        if status:
            assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
            return {"stderr": out.stderr}
        return json.loads(out.stdout)

    init = cli("init")
    assert init["backend"] == "file" and init["encrypted"]
    assert cli("config", "--check")["reachable"]
    fetched = cli("ca", "pin", "--fetch")
    fp = server.root.public_bytes(serialization.Encoding.DER)
    assert (
        fetched["pinned"] is False
        and fetched["fingerprint_sha256"] == __import__("hashlib").sha256(fp).hexdigest()
    )
    cli("ca", "pin", "--fetch", "--fingerprint", "00" * 32, status=3)
    assert cli("ca", "pin", "--fetch", "--fingerprint", fetched["fingerprint_sha256"])["pinned"]
    assert cli("certificate", "request")["chain_verified"]
    se = cli("se", "verify", "--device", server.device_id)
    assert se["se_id"] == server.card.casd_identifier().hex().upper() and se["casd_fingerprint_sha256"]
    sd = bytes(SSD).hex()
    loaded = cli("keys", "load", "--device", server.device_id, "--sd", sd, "--kvn", "31")
    assert loaded["receipt_verified"] and loaded["key_set"]["status"] == "active"
    run = cli("script", "run", "--device", server.device_id, "--sd", sd, "--apdu", "80CA006600")
    assert run["responses"][0]["sw"] == "9000" and run["rmac_verified"]
    perso = cli("personalize", "--device", server.device_id, "--sd", sd, "--app", sd, "--dgi", "0101=0102")
    assert len(perso["responses"]) == 2
    rotated = cli("keys", "rotate", "--device", server.device_id, "--sd", sd)
    assert rotated["key_set"]["kvn"] == "32"
    listed = cli("keys", "list")["key_sets"]
    assert {k["kvn"] for k in listed} == {"31", "32"} and all("sealed" not in k for k in listed)
    receipt = next(k for k in listed if k["kvn"] == "31")["expected_receipt"]
    assert cli("receipt", "verify", "--se-id", se["se_id"], "--sd", sd, "--kvn", "31", "--receipt", receipt)[
        "receipt_verified"
    ]
    cli(
        "receipt",
        "verify",
        "--se-id",
        se["se_id"],
        "--sd",
        sd,
        "--kvn",
        "31",
        "--receipt",
        "00" * 16,
        status=3,
    )
    env["TESSERA_TOKEN"] = "wrong"
    assert "not_authenticated" in cli("se", "verify", "--device", server.device_id, status=4)["stderr"]
