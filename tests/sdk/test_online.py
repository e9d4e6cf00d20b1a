"""``keys load --online`` (sdk.provider.load_keys_online): the provider's own SCP11a session with the
SE's CASD, in two rounds through the fake API (tests/sdk/fake_server.py) and a real soft SE; the
receipt and every R-MAC are checked; the keys never reach the server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gp.scp03 import StaticKeys
from sdk import provider
from sdk.client import ApiClient
from sdk.errors import JobFailed, VerificationError
from sdk.store import KEYSET_ACTIVE, KEYSET_FAILED, KeyStore
from tests.gp.cardkit import Terminal
from tests.sdk.conftest import PASSPHRASE
from tests.sdk.fake_server import ORG, SSD, TOKEN, FakeTessera
from tests.sdk.test_flow import _ready

SD = bytes(SSD)
ROOT = Path(__file__).resolve().parents[2]


def test_keys_load_online_opens_scp11a_and_delivers_the_key_set_then_scp03_works(
    store: KeyStore, client: ApiClient, fake: Any
) -> None:
    server, _url = fake
    _ready(store, client, server)
    out = provider.load_keys_online(store, client, device_id=server.device_id, sd=SD, kvn=0x31)
    assert out["online"] and out["receipt_verified"] and out["rmac_verified"]
    assert out["key_set"]["status"] == KEYSET_ACTIVE
    # two rounds: the opening as a job, the delivery as its input; no key in any request
    kinds = [b.get("kind") for m, p, b in server.requests if m == "POST" and b and "kind" in b]
    assert kinds == ["load_keys_scp11"]
    inputs = [b for m, p, b in server.requests if m == "POST" and p.endswith("/input/")]
    assert len(inputs) == 1 and len(inputs[0]["commands"]) == 2
    assert inputs[0]["commands"][0].startswith("84E620")  # C-MAC only: the relay reads the target SD
    rec = store.key_set(out["se"]["se_id"], SD.hex(), 0x31)
    keys = store.keys_of(rec)
    assert all(k.hex().upper() not in str(server.requests).upper() for k in keys)
    # the card holds exactly these keys, and the SDK's own SCP03 sessions work with them
    Terminal(server.card).open(StaticKeys(*keys), aid=SD, kvn=0x31)
    run = provider.run_script(
        store, client, device_id=server.device_id, sd=SD, apdus=[bytes.fromhex("80CA006600")]
    )
    assert run["rmac_verified"] and run["responses"][0]["sw"] == "9000"
    # a rotation online: the next KVN, AES-256
    rotated = provider.load_keys_online(
        store, client, device_id=server.device_id, sd=SD, rotate=True, key_length=32
    )
    assert rotated["key_set"]["kvn"] == "32" and rotated["key_set"]["key_length"] == 32


def test_a_card_that_lost_its_session_between_the_rounds_fails_the_key_set(
    store: KeyStore, client: ApiClient, fake: Any
) -> None:
    server, _url = fake
    _ready(store, client, server)
    server.reset_between_rounds = True
    with pytest.raises(JobFailed) as info:
        provider.load_keys_online(store, client, device_id=server.device_id, sd=SD, kvn=0x31)
    assert info.value.code == "card_6982"
    assert store.key_set(store.key_sets()[0].se_id, SD.hex(), 0x31).status == KEYSET_FAILED


def test_an_opening_answered_by_another_card_key_is_refused_before_any_key_is_generated(
    store: KeyStore, client: ApiClient, fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _url = fake
    _ready(store, client, server)
    real = FakeTessera._scp11_open

    def forged(self: FakeTessera, params: dict[str, Any]) -> dict[str, Any]:
        out = real(self, params)
        last = bytearray(bytes.fromhex(out["authenticate"][-1]))
        last[-3] ^= 0x01  # the receipt's last byte
        out["authenticate"][-1] = last.hex()
        return out

    monkeypatch.setattr(FakeTessera, "_scp11_open", forged)
    with pytest.raises(VerificationError) as info:
        provider.load_keys_online(store, client, device_id=server.device_id, sd=SD, kvn=0x31)
    assert info.value.code == "receipt_mismatch"
    assert store.key_sets() == []
    assert next(iter(server.jobs.values()))["state"] == "canceled"


def test_the_cli_loads_online_as_its_own_process(tmp_path: Path, fake: Any) -> None:
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

    def cli(*args: str) -> dict[str, Any]:
        out = subprocess.run(
            [sys.executable, "-m", "sdk", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    cli("init")
    cli("ca", "pin", "--fetch")
    fp = cli("ca", "pin", "--fetch")["fingerprint_sha256"]
    cli("ca", "pin", "--fetch", "--fingerprint", fp)
    cli("certificate", "request")
    loaded = cli("keys", "load", "--online", "--device", server.device_id, "--sd", SD.hex(), "--kvn", "31")
    assert loaded["online"] and loaded["rmac_verified"] and loaded["key_set"]["status"] == "active"
