"""The vault: envelope encryption bound to owner and purpose, crypto-shredding, the master key."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from keys import vault
from keys.errors import VaultConfigurationError, VaultError
from keys.models import OrgDataKey
from keys.vault import vault_open, vault_seal, vault_shred

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fresh_vault(monkeypatch: Any, tmp_path: Path, settings: Any) -> Path:
    """A vault whose key file lives in a temporary directory, forgotten afterwards."""
    monkeypatch.delenv(vault.MASTER_KEY_ENV, raising=False)
    monkeypatch.delenv(vault.MASTER_KEY_FILE_ENV, raising=False)
    settings.VAR_DIR = tmp_path
    settings.TESSERA_VAULT_GENERATE_KEY = True
    vault.vault_reset()
    yield tmp_path / "vault-master.key"
    vault.vault_reset()


def test_a_sealed_blob_opens_for_its_owner_and_purpose(world: Any) -> None:
    blob = vault_seal(org_id=world.owner.pk, purpose="keyset:1", plaintext=b"secret bytes")
    assert b"secret bytes" not in blob
    assert vault_open(org_id=world.owner.pk, purpose="keyset:1", blob=blob) == b"secret bytes"


def test_sealing_twice_gives_different_blobs(world: Any) -> None:
    one = vault_seal(org_id=world.owner.pk, purpose="p", plaintext=b"x")
    two = vault_seal(org_id=world.owner.pk, purpose="p", plaintext=b"x")
    assert one != two


def test_a_blob_moved_to_another_organisation_does_not_open(world: Any) -> None:
    blob = vault_seal(org_id=world.owner.pk, purpose="keyset:1", plaintext=b"k")
    vault_seal(org_id=world.provider.pk, purpose="keyset:1", plaintext=b"other")
    with pytest.raises(VaultError):
        vault_open(org_id=world.provider.pk, purpose="keyset:1", blob=blob)


def test_a_blob_used_for_another_purpose_does_not_open(world: Any) -> None:
    blob = vault_seal(org_id=world.owner.pk, purpose="keyset:1", plaintext=b"k")
    with pytest.raises(VaultError):
        vault_open(org_id=world.owner.pk, purpose="keyset:2", blob=blob)


@pytest.mark.parametrize("spoil", ["flip-last", "flip-nonce", "truncate", "empty", "wrong-version"])
def test_a_tampered_blob_does_not_open_and_the_error_echoes_nothing(world: Any, spoil: str) -> None:
    blob = bytearray(vault_seal(org_id=world.owner.pk, purpose="p", plaintext=b"plaintext-marker"))
    if spoil == "flip-last":
        blob[-1] ^= 1
    elif spoil == "flip-nonce":
        blob[3] ^= 1
    elif spoil == "truncate":
        blob = blob[:20]
    elif spoil == "empty":
        blob = bytearray()
    else:
        blob[0] = 9
    with pytest.raises(VaultError) as info:
        vault_open(org_id=world.owner.pk, purpose="p", blob=bytes(blob))
    assert "plaintext-marker" not in str(info.value)
    assert not blob or bytes(blob).hex() not in str(info.value)


def test_each_organisation_gets_its_own_wrapped_data_key(world: Any) -> None:
    vault_seal(org_id=world.owner.pk, purpose="p", plaintext=b"a")
    vault_seal(org_id=world.provider.pk, purpose="p", plaintext=b"b")
    rows = list(OrgDataKey.objects.filter(org__in=[world.owner, world.provider]))
    assert len(rows) == 2
    assert rows[0].wrapped != rows[1].wrapped
    assert all(len(bytes(r.wrapped)) == 12 + 32 + 16 for r in rows)


def test_shredding_destroys_the_data_key_and_every_blob_with_it(world: Any) -> None:
    # given
    blob = vault_seal(org_id=world.owner.pk, purpose="keyset:1", plaintext=b"k")
    other = vault_seal(org_id=world.provider.pk, purpose="keyset:1", plaintext=b"k2")
    # when
    assert vault_shred(org_id=world.owner.pk) is True
    # then
    row = OrgDataKey.objects.get(org=world.owner)
    assert bytes(row.wrapped) == b"" and row.shredded_at is not None
    with pytest.raises(VaultError, match="shredded"):
        vault_open(org_id=world.owner.pk, purpose="keyset:1", blob=blob)
    with pytest.raises(VaultError):
        vault_seal(org_id=world.owner.pk, purpose="keyset:2", plaintext=b"new")
    # and others are untouched
    assert vault_open(org_id=world.provider.pk, purpose="keyset:1", blob=other) == b"k2"
    from audit.models import AuditEvent

    assert AuditEvent.objects.filter(tag="vault:shred").count() == 1
    assert vault_shred(org_id=world.owner.pk) is False


def test_the_data_key_cache_is_bounded() -> None:
    cache = vault._DataKeyCache(size=3, ttl=60)
    import uuid

    ids = [uuid.uuid4() for _ in range(5)]
    for i in ids:
        cache.put(i, b"k")
    assert len(cache) == 3
    assert cache.get(ids[0]) is None and cache.get(ids[-1]) == b"k"


def test_cached_data_keys_expire() -> None:
    import uuid

    cache = vault._DataKeyCache(size=3, ttl=-1)
    oid = uuid.uuid4()
    cache.put(oid, b"k")
    assert cache.get(oid) is None


# --- the master key ------------------------------------------------------------------------------


def test_the_embedded_default_generates_the_master_key_file_with_mode_0600(fresh_vault: Path) -> None:
    backend = vault.master_key_backend()
    assert fresh_vault.exists()
    assert (fresh_vault.stat().st_mode & 0o777) == 0o600
    assert len(base64.b64decode(fresh_vault.read_text().strip())) == 32
    assert backend.key_id.startswith("local:")
    # the same file gives the same key next time
    vault.vault_reset()
    assert vault.master_key_backend().key_id == backend.key_id


def test_a_key_file_readable_by_others_is_refused(fresh_vault: Path) -> None:
    fresh_vault.write_text(base64.b64encode(os.urandom(32)).decode())
    fresh_vault.chmod(0o644)
    with pytest.raises(VaultConfigurationError, match="chmod 600"):
        vault.master_key_backend()


@pytest.mark.parametrize("content", ["not base64!!", base64.b64encode(b"short").decode(), ""])
def test_a_malformed_key_file_is_refused_with_a_clear_error(fresh_vault: Path, content: str) -> None:
    fd = os.open(fresh_vault, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, content.encode())
    os.close(fd)
    with pytest.raises(VaultConfigurationError, match="not a base64-encoded 32-byte key"):
        vault.master_key_backend()


def test_an_explicit_key_file_that_does_not_exist_is_never_generated(
    fresh_vault: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv(vault.MASTER_KEY_FILE_ENV, str(fresh_vault.parent / "elsewhere.key"))
    with pytest.raises(VaultConfigurationError, match="no vault master key"):
        vault.master_key_backend()
    assert not (fresh_vault.parent / "elsewhere.key").exists()


def test_without_a_key_and_without_generation_the_vault_says_what_to_set(
    fresh_vault: Path, settings: Any
) -> None:
    settings.TESSERA_VAULT_GENERATE_KEY = False
    with pytest.raises(VaultConfigurationError, match="TESSERA_VAULT_MASTER_KEY"):
        vault.master_key_backend()


def test_the_master_key_from_the_environment_wins(fresh_vault: Path, monkeypatch: Any) -> None:
    key = os.urandom(32)
    monkeypatch.setenv(vault.MASTER_KEY_ENV, base64.b64encode(key).decode())
    assert vault.master_key_backend().key_id == vault.LocalMasterKey(key).key_id
    assert not fresh_vault.exists()


def test_a_data_key_wrapped_by_another_master_key_does_not_open(
    world: Any, fresh_vault: Path, monkeypatch: Any
) -> None:
    blob = vault_seal(org_id=world.owner.pk, purpose="p", plaintext=b"k")
    monkeypatch.setenv(vault.MASTER_KEY_ENV, base64.b64encode(os.urandom(32)).decode())
    vault.vault_reset()
    with pytest.raises(VaultError, match="another master key"):
        vault_open(org_id=world.owner.pk, purpose="p", blob=blob)


def _start(env: dict[str, str], tmp: Path) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    code = "import django,os; os.environ['DJANGO_SETTINGS_MODULE']='portal.settings'; django.setup()"
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**base, "TESSERA_VAR_DIR": str(tmp), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_process_refuses_to_start_with_a_malformed_master_key(tmp_path: Path) -> None:
    proc = _start({vault.MASTER_KEY_ENV: "c2hvcnQ="}, tmp_path)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "VaultConfigurationError" in last and "TESSERA_VAULT_MASTER_KEY" in last
    assert "c2hvcnQ=" not in proc.stderr


def test_the_process_refuses_to_start_with_an_unreadable_key_file(tmp_path: Path) -> None:
    key_file = tmp_path / "dir-not-file.key"
    key_file.mkdir()
    proc = _start({vault.MASTER_KEY_FILE_ENV: str(key_file)}, tmp_path)
    assert proc.returncode != 0
    assert "not a regular file" in proc.stderr.strip().splitlines()[-1]


def test_the_embedded_default_starts_and_creates_its_key_file(tmp_path: Path) -> None:
    proc = _start({}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "vault-master.key").stat().st_mode & 0o777 == 0o600
