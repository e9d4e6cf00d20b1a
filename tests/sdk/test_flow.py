"""The provider's whole flow through the SDK against a fake API and a real soft SE."""

from __future__ import annotations

from typing import Any

import pytest

from gp.scp03 import StaticKeys
from sdk import provider
from sdk.client import ApiClient
from sdk.errors import VerificationError
from sdk.store import KEYSET_ACTIVE, KeyStore
from tests.gp.cardkit import Terminal
from tests.sdk.fake_server import SSD, FakeTessera

SD = bytes(SSD)


def _ready(store: KeyStore, client: ApiClient, fake: FakeTessera) -> None:
    provider.pin_root(
        store,
        fake.root.public_bytes(
            __import__("cryptography.hazmat.primitives.serialization", fromlist=["x"]).Encoding.DER
        ),
    )
    provider.certificate_request(store, client)


def test_load_keys_then_a_session(store: KeyStore, client: ApiClient, fake: Any) -> None:
    server, _url = fake
    _ready(store, client, server)
    se = provider.verify_se(store, client, server.device_id)
    assert se.se_id == server.card.casd_identifier()
    out = provider.load_keys(store, client, device_id=server.device_id, sd=SD, kvn=0x31)
    assert out["receipt_verified"] and out["key_set"]["status"] == KEYSET_ACTIVE
    rec = store.key_set(se.se_id.hex(), SD.hex(), 0x31)
    keys = StaticKeys(*store.keys_of(rec))
    Terminal(server.card).open(keys, aid=SD, kvn=0x31)  # the card holds exactly these keys
    run = provider.run_script(
        store, client, device_id=server.device_id, sd=SD, apdus=[bytes.fromhex("80CA006600")]
    )
    assert run["rmac_verified"] and len(run["jobs"]) == 2
    run2 = provider.run_script(
        store, client, device_id=server.device_id, sd=SD, apdus=[bytes.fromhex("80CA006600")]
    )
    assert len(run2["jobs"]) == 1  # the counter was known: one precomputed job
    print(run, run2)
