"""The provider's key store: permissions, encryption at rest, corrupt and missing files, and the
PKCS#11 backend in SoftHSMv2 (its own process, so its SOFTHSM2_CONF is its own)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from sdk.errors import StoreError
from sdk.store import PASSPHRASE_ENV, KeyStore
from tests.sdk.conftest import PASSPHRASE
from tests.support.softhsm import SoftHsm, softhsm_library

ROOT = Path(__file__).resolve().parents[2]
SE, SD = "0102030405060708", "A000000151535001"


def _all_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.rglob("*") if p.is_file())


def test_files_are_private(store: KeyStore) -> None:
    store.new_key_set(se_id=SE, sd=SD, kvn=0x30, key_length=16)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o700
    files = [p for p in store.path.rglob("*") if p.is_file()]
    assert len(files) >= 4 and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)


def test_keys_are_encrypted_at_rest(store: KeyStore) -> None:
    _rec, keys = store.new_key_set(se_id=SE, sd=SD, kvn=0x30, key_length=32)
    raw = _all_bytes(store.path)
    for key in keys:
        assert key not in raw and key.hex().encode() not in raw and key.hex().upper().encode() not in raw
    assert PASSPHRASE.encode() not in raw
    assert b"ENCRYPTED PRIVATE KEY" in (store.path / "oce-key.pem").read_bytes()
    private = store.oce_key().private_numbers().private_value.to_bytes(32, "big")
    assert private not in raw and private.hex().encode() not in raw
    # and they come back with the right KCVs
    again = KeyStore.open(store.path)
    assert again.keys_of(again.key_set(SE, SD, 0x30)) == keys


def test_a_wrong_or_missing_passphrase_is_a_clear_error(
    store: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.new_key_set(se_id=SE, sd=SD, kvn=0x30, key_length=16)
    monkeypatch.setenv(PASSPHRASE_ENV, "not the passphrase")
    with pytest.raises(StoreError) as info:
        KeyStore.open(store.path).oce_key()
    assert info.value.code == "wrong_passphrase"
    monkeypatch.delenv(PASSPHRASE_ENV)
    s = KeyStore.open(store.path)
    with pytest.raises(StoreError) as info:
        s.keys_of(s.key_set(SE, SD, 0x30))
    assert info.value.code == "passphrase_missing"


def test_missing_store_and_overwrite_are_refused(tmp_path: Path, store: KeyStore) -> None:
    with pytest.raises(StoreError) as info:
        KeyStore.open(tmp_path / "nothing")
    assert info.value.code == "no_store"
    with pytest.raises(StoreError) as info:
        KeyStore.create(store.path, passphrase=PASSPHRASE)
    assert info.value.code == "store_exists"
    with pytest.raises(StoreError) as info:
        KeyStore.create(tmp_path / "weak", passphrase="short")
    assert info.value.code == "weak_passphrase"


def test_loose_permissions_are_refused(store: KeyStore) -> None:
    store.new_key_set(se_id=SE, sd=SD, kvn=0x30, key_length=16)
    path = next((store.path / "keysets").glob("*.json"))
    path.chmod(0o644)
    with pytest.raises(StoreError) as info:
        store.key_set(SE, SD, 0x30)
    assert info.value.code == "store_permissions"
    store.path.chmod(0o755)
    with pytest.raises(StoreError) as info:
        KeyStore.open(store.path)
    assert info.value.code == "store_permissions"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(sealed=d["sealed"][:-8] + "AAAAAAA="),  # ciphertext altered
        lambda d: d.update(kcvs=["000000", "000000", "000000"]),  # KCVs altered
        lambda d: d.update(kvn=0x31),  # sealed for another name
        lambda d: d.update(status="weird"),
        lambda d: d.update(extra=1),
        lambda d: d.update(sealed="***"),
    ],
)
def test_a_corrupt_key_set_is_refused(store: KeyStore, mutate: object) -> None:
    store.new_key_set(se_id=SE, sd=SD, kvn=0x30, key_length=16)
    path = next((store.path / "keysets").glob("*.json"))
    data = json.loads(path.read_text())
    mutate(data)  # type: ignore[operator]
    path.write_text(json.dumps(data))
    path.chmod(0o600)
    with pytest.raises(StoreError) as info:
        rec = store.key_set(SE, SD, 0x30)
        store.keys_of(rec)
    assert info.value.code == "store_corrupt"


@pytest.mark.parametrize(
    "content", [b"", b"{", b"[]", b'{"version": 9}', b'{"version": 1, "backend": "file"}']
)
def test_a_corrupt_store_description_is_refused(store: KeyStore, content: bytes) -> None:
    (store.path / "store.json").write_bytes(content)
    with pytest.raises(StoreError) as info:
        KeyStore.open(store.path)
    assert info.value.code == "store_corrupt"


def test_a_corrupt_oce_key_is_refused(store: KeyStore) -> None:
    (store.path / "oce-key.pem").write_bytes(
        b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
    )
    with pytest.raises(StoreError) as info:
        KeyStore.open(store.path).oce_key()
    assert info.value.code == "store_corrupt"


def test_a_store_without_passphrase_relies_on_permissions_and_says_so(tmp_path: Path) -> None:
    s = KeyStore.create(tmp_path / "plain", passphrase=None, environ={})
    assert s.meta["encrypted"] is False
    _rec, keys = s.new_key_set(se_id=SE, sd=SD, kvn=0x30, key_length=16)
    again = KeyStore.open(s.path, environ={})
    assert again.keys_of(again.key_set(SE, SD, 0x30)) == keys


def test_counters_are_strictly_increasing_and_kept(store: KeyStore) -> None:
    values = [store.next_counter(SE, SD) for _ in range(5)]
    assert values == sorted(set(values))
    assert KeyStore.open(store.path).next_counter(SE, SD) > values[-1]
    assert store.next_counter(SE, "A000000151535002") >= 1


PKCS11_SCRIPT = r"""
import json, sys
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from sdk.store import KeyStore
from sdk import provider
from sdk.errors import StoreError
s = KeyStore.open(sys.argv[1])
key = s.oce_key()
sig = s.sign(b"data")
key.public_key().verify(sig, b"data", ec.ECDSA(hashes.SHA256()))
try:
    key.private_numbers(); exported = True
except StoreError:
    exported = False
rec, keys = s.new_key_set(se_id="0102", sd="A000000151535001", kvn=0x30, key_length=16)
again = KeyStore.open(sys.argv[1])
ok = again.keys_of(again.key_set("0102", "A000000151535001", 0x30)) == keys
from cryptography import x509
csr = x509.load_pem_x509_csr(provider.csr_pem(s).encode())
print(json.dumps({"exported": exported, "roundtrip": ok, "csr": csr.is_signature_valid,
                  "keys_in_files": any(k.hex().upper() in open(p).read().upper()
                  for k in keys for p in [str(again.path / "keysets" / (rec.name + ".json"))])}))
"""


def test_a_pkcs11_store_keeps_its_keys_in_the_token(tmp_path: Path) -> None:
    library = softhsm_library()
    if library is None:
        pytest.skip("SoftHSMv2 is not installed")
    hsm = SoftHsm.create(library, tmp_path / "hsm")
    hsm.init_token("provider")
    env = {
        **os.environ,
        "SOFTHSM2_CONF": str(hsm.conf),
        "TESSERA_PROVIDER_PKCS11_PIN": hsm.pin,
        "PYTHONPATH": str(ROOT),
    }
    env.pop(PASSPHRASE_ENV, None)
    store = tmp_path / "store"
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, *a], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    out = run("-m", "sdk", "init", "--store", str(store), "--pkcs11", library, "--token", "provider")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["backend"] == "pkcs11" and not (store / "oce-key.pem").exists()
    out = run("-c", PKCS11_SCRIPT, str(store))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {
        "exported": False,
        "roundtrip": True,
        "csr": True,
        "keys_in_files": False,
    }
    again = run(
        "-m", "sdk", "init", "--store", str(tmp_path / "second"), "--pkcs11", library, "--token", "provider"
    )
    assert again.returncode == 2 and "store_exists" in again.stderr and len(again.stderr.splitlines()) == 1
    wrong = run("-m", "sdk", "keys", "list", "--store", str(store))
    assert wrong.returncode == 0  # listing needs no secret
    env["TESSERA_PROVIDER_PKCS11_PIN"] = "0000"
    bad = run("-c", PKCS11_SCRIPT, str(store))
    assert bad.returncode != 0 and "pkcs11_pin" in bad.stderr
