"""The provider's whole flow through the SDK against a fake API (tests/sdk/fake_server.py) and a
real soft SE: CSR, pinned root, CASD chain, confidential key loading with its receipt, precomputed
SCP03 sessions with every R-MAC checked, and the refusals."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gp.scp03 import StaticKeys
from sdk import provider
from sdk.client import ApiClient
from sdk.errors import SdkError, UsageError, VerificationError
from sdk.store import KEYSET_ACTIVE, KEYSET_FAILED, KeyStore
from tests.gp.cardkit import Terminal
from tests.sdk.fake_server import SSD, FakeTessera

SD = bytes(SSD)
GET_CARD_DATA = bytes.fromhex("80CA006600")


def _root(fake: FakeTessera) -> bytes:
    return fake.root.public_bytes(serialization.Encoding.DER)


def _ready(store: KeyStore, client: ApiClient, fake: FakeTessera) -> None:
    provider.pin_root(store, _root(fake))
    out = provider.certificate_request(store, client)
    assert out["chain_verified"] and out["gp_form"]


def test_load_keys_then_sessions(store: KeyStore, client: ApiClient, fake: Any) -> None:
    server, _url = fake
    _ready(store, client, server)
    se = provider.verify_se(store, client, server.device_id)
    assert se.se_id == server.card.casd_identifier() and se.crl_checked
    out = provider.load_keys(store, client, device_id=server.device_id, sd=SD, kvn=0x31)
    assert out["receipt_verified"] and out["key_set"]["status"] == KEYSET_ACTIVE
    # the package went through the server; the keys did not
    posted = [
        b for m, _p, b in server.requests if m == "POST" and b and b.get("kind") == "load_keys_confidential"
    ]
    rec = store.key_set(se.se_id.hex(), SD.hex(), 0x31)
    keys = store.keys_of(rec)
    assert len(posted) == 1 and all(k.hex().upper() not in str(server.requests).upper() for k in keys)
    run = provider.run_script(store, client, device_id=server.device_id, sd=SD, apdus=[GET_CARD_DATA])
    assert run["rmac_verified"] and run["security_level"] == "33" and len(run["jobs"]) == 2
    assert run["responses"][0]["sw"] == "9000" and run["responses"][0]["data"].startswith("66")
    again = provider.run_script(store, client, device_id=server.device_id, sd=SD, apdus=[GET_CARD_DATA] * 2)
    assert len(again["jobs"]) == 1 and again["completed"]  # the counter was known: one precomputed job
    # the card holds exactly these keys (another terminal opens a session with them)
    Terminal(server.card).open(StaticKeys(*keys), aid=SD, kvn=0x31)
    # the counter moved behind the SDK's back: it notices, then learns it again
    with pytest.raises(VerificationError) as info:
        provider.run_script(store, client, device_id=server.device_id, sd=SD, apdus=[GET_CARD_DATA])
    assert info.value.code == "counter_mismatch"
    assert provider.run_script(store, client, device_id=server.device_id, sd=SD, apdus=[GET_CARD_DATA])[
        "completed"
    ]
    # rotation: a new KVN, the same way
    rotated = provider.load_keys(store, client, device_id=server.device_id, sd=SD, rotate=True, key_length=32)
    assert rotated["key_set"]["kvn"] == "32" and rotated["key_set"]["key_length"] == 32
    assert provider.run_script(
        store, client, device_id=server.device_id, sd=SD, apdus=[GET_CARD_DATA], kvn=0x32
    )["completed"]
    # the receipt check on its own
    ok = provider.verify_receipt(
        store, se_id=se.se_id.hex(), sd=SD.hex(), kvn=0x31, receipt=bytes.fromhex(rec.expected_receipt)
    )
    assert ok["receipt_verified"]
    with pytest.raises(VerificationError):
        provider.verify_receipt(store, se_id=se.se_id.hex(), sd=SD.hex(), kvn=0x31, receipt=bytes(16))


def test_counters_strictly_increase_per_se_and_sd(store: KeyStore, client: ApiClient, fake: Any) -> None:
    server, _url = fake
    _ready(store, client, server)
    a = provider.load_keys(store, client, device_id=server.device_id, sd=SD, kvn=0x31)["key_set"]["counter"]
    b = provider.load_keys(store, client, device_id=server.device_id, sd=SD, kvn=0x31)["key_set"]["counter"]
    assert b > a > 0


def test_a_receipt_that_does_not_match_leaves_the_key_set_failed(
    store: KeyStore, client: ApiClient, fake: Any
) -> None:
    server, _url = fake
    _ready(store, client, server)
    server.tamper_receipt = True
    with pytest.raises(VerificationError) as info:
        provider.load_keys(store, client, device_id=server.device_id, sd=SD, kvn=0x31)
    assert info.value.code == "receipt_mismatch"
    (rec,) = store.key_sets()
    assert rec.status == KEYSET_FAILED and rec.error == "receipt_mismatch"
    with pytest.raises(UsageError):  # no active key set: no session
        provider.run_script(store, client, device_id=server.device_id, sd=SD, apdus=[GET_CARD_DATA])


def test_a_card_refusal_fails_the_job_and_the_key_set(store: KeyStore, client: ApiClient, fake: Any) -> None:
    server, _url = fake
    _ready(store, client, server)
    provider.load_keys(store, client, device_id=server.device_id, sd=SD, kvn=0x31)
    # a store that lost its counter table reuses an older counter: the card answers 6985 (replayed)
    (store.path / "counters.json").write_text("{}")
    import time

    real = time.time
    try:
        time.time = lambda: 1.0  # type: ignore[assignment]
        with pytest.raises(SdkError) as info:
            provider.load_keys(store, client, device_id=server.device_id, sd=SD, kvn=0x33)
    finally:
        time.time = real  # type: ignore[assignment]
    assert info.value.code == "card_6985"
    assert store.key_set(
        provider.verify_se(store, client, server.device_id).se_id.hex(), SD.hex(), 0x33
    ).status == (KEYSET_FAILED)


def test_a_casd_certificate_not_chaining_to_the_pinned_root_is_refused(
    store: KeyStore, client: ApiClient, fake: Any
) -> None:
    server, _url = fake
    _ready(store, client, server)
    rogue = FakeTessera()  # another CA certifies a key it chose, for this SE's id
    server.casd_override = rogue.casd_detail
    with pytest.raises(VerificationError) as info:
        provider.verify_se(store, client, server.device_id)
    assert info.value.code in ("wrong_root", "bad_chain")
    assert not [b for m, _p, b in server.requests if m == "POST" and b and "kind" in b]


def test_a_revoked_casd_certificate_is_refused(store: KeyStore, client: ApiClient, fake: Any) -> None:
    server, _url = fake
    _ready(store, client, server)
    server.revoked.add(int(server.casd_detail["serial"], 16))
    with pytest.raises(VerificationError) as info:
        provider.load_keys(store, client, device_id=server.device_id, sd=SD)
    assert info.value.code == "revoked" and store.key_sets() == []


def test_a_casd_certificate_of_another_se_is_refused(store: KeyStore, client: ApiClient, fake: Any) -> None:
    server, _url = fake
    _ready(store, client, server)
    other = server._issue(
        ec.generate_private_key(ec.SECP256R1()).public_key(),
        cn="0102030405060708",
        serial_number="another-se",
        kind="casd",
        subject_id=bytes.fromhex("0102030405060708"),
    )
    server.casd_override = other
    with pytest.raises(VerificationError) as info:
        provider.verify_se(store, client, server.device_id)
    assert info.value.code == "wrong_se"


def test_pinning_checks_the_fingerprint(store: KeyStore, fake: Any) -> None:
    server, _url = fake
    der = _root(server)
    with pytest.raises(VerificationError):
        provider.pin_root(store, der, expected_fingerprint="00" * 32)
    with pytest.raises(SdkError):
        store.pinned_root()
    pem = server.root.public_bytes(serialization.Encoding.PEM)
    out = provider.pin_root(store, pem, expected_fingerprint=provider.fingerprint(der).upper())
    assert out["pinned"] and store.pinned_root() == der
    with pytest.raises(UsageError):
        provider.pin_root(store, b"not a certificate")
    leaf = x509.load_pem_x509_certificate(server.casd_detail["pem"].encode())
    with pytest.raises(UsageError):  # not self-signed
        provider.pin_root(store, leaf.public_bytes(serialization.Encoding.DER))


def test_without_a_pinned_root_nothing_is_trusted(store: KeyStore, client: ApiClient, fake: Any) -> None:
    server, _url = fake
    provider.certificate_request(store, client)
    with pytest.raises(SdkError) as info:
        provider.verify_se(store, client, server.device_id)
    assert info.value.code == "no_pinned_root"


def test_personalize_goes_through_the_session(store: KeyStore, client: ApiClient, fake: Any) -> None:
    server, _url = fake
    _ready(store, client, server)
    provider.load_keys(store, client, device_id=server.device_id, sd=SD, kvn=0x31)
    out = provider.personalize(
        store, client, device_id=server.device_id, sd=SD, app=SD, dgis=[(0x0101, b"\x01\x02"), (0x0102, b"")]
    )
    assert out["rmac_verified"] and len(out["responses"]) == 3
    install, *stores = (bytes.fromhex(r["command"]) for r in out["responses"])
    assert install[1] == 0xE6 and install[2] == 0x20 and all(s[1] == 0xE2 for s in stores)
