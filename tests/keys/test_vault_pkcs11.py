"""The vault's master key in a PKCS#11 token (SoftHSMv2), the token signer, and rewrapping.

Every test runs against a real SoftHSMv2 token of this test process (``softhsm`` fixture); none
mocks the crypto. The rewrap tests run ``manage.py vault_rewrap`` as a real process and SIGKILL it
between organisations and inside a transaction, then resume it.
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from keys import pkcs11 as p11
from keys import vault
from keys.errors import VaultConfigurationError, VaultError
from keys.models import OrgDataKey
from keys.vault import RewrapOutcome, vault_open, vault_rewrap_one, vault_seal
from tests import factories as f
from tests.support.softhsm import SoftHsm

ROOT = Path(__file__).resolve().parents[2]


def _label(prefix: str = "mk") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _master_key(hsm: SoftHsm, label: str | None = None) -> tuple[p11.Pkcs11Config, p11.Pkcs11MasterKey]:
    config = p11.Pkcs11Config.from_env(hsm.env(key_label=label or _label()))
    p11.create_master_key(config)
    return config, p11.Pkcs11MasterKey(config)


@pytest.fixture
def pkcs11_vault(softhsm: SoftHsm, monkeypatch: Any, settings: Any) -> Iterator[p11.Pkcs11MasterKey]:
    """The process's vault on a fresh master key in the token (TESSERA_VAULT_BACKEND=pkcs11)."""
    label = _label()
    for name, value in softhsm.env(key_label=label).items():
        monkeypatch.setenv(name, value)
    _, key = _master_key(softhsm, label)
    settings.TESSERA_VAULT_BACKEND = "pkcs11"
    settings.TESSERA_VAULT_NEW_BACKEND = ""
    vault.vault_reset()
    yield key
    vault.vault_reset()


# --- the master key --------------------------------------------------------------------------


def test_a_secret_sealed_through_the_token_opens_again(world: Any, pkcs11_vault: p11.Pkcs11MasterKey) -> None:
    blob = vault_seal(org_id=world.owner.pk, purpose="keyset:1", plaintext=b"isd keys")
    row = OrgDataKey.objects.get(org=world.owner)
    assert row.master_key_id == pkcs11_vault.key_id and row.master_key_id.startswith("pkcs11:")
    assert len(bytes(row.wrapped)) == 12 + 32 + 16
    vault.vault_reset()  # no cached data key: the token must unwrap it
    assert vault_open(org_id=world.owner.pk, purpose="keyset:1", blob=blob) == b"isd keys"


def test_the_wrapping_is_bound_to_its_associated_data_and_key(softhsm: SoftHsm) -> None:
    _, key = _master_key(softhsm)
    _, other = _master_key(softhsm)
    data_key = os.urandom(32)
    wrapped = key.wrap(data_key, aad=b"org-a")
    assert key.unwrap(wrapped, aad=b"org-a") == data_key
    assert key.wrap(data_key, aad=b"org-a") != wrapped  # a fresh nonce each time
    for spoil in (
        lambda: key.unwrap(wrapped, aad=b"org-b"),
        lambda: other.unwrap(wrapped, aad=b"org-a"),
        lambda: key.unwrap(wrapped[:-1] + bytes([wrapped[-1] ^ 1]), aad=b"org-a"),
    ):
        with pytest.raises(VaultError, match="cannot be unwrapped"):
            spoil()


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.binary(max_size=100), aad=st.binary(max_size=40))
def test_arbitrary_wrapped_bytes_give_a_vault_error_never_a_crash(
    softhsm: SoftHsm, garbage: bytes, aad: bytes
) -> None:
    key = _shared_key(softhsm)
    # a fixed message: nothing of the input (or of a key) echoed
    with pytest.raises(VaultError) as info:
        key.unwrap(garbage, aad=aad)
    assert str(info.value) == "The organisation's data key cannot be unwrapped by this master key."


_SHARED: dict[str, p11.Pkcs11MasterKey] = {}


def _shared_key(hsm: SoftHsm) -> p11.Pkcs11MasterKey:
    if "key" not in _SHARED:
        _SHARED["key"] = _master_key(hsm)[1]
    return _SHARED["key"]


def test_the_master_key_cannot_be_read_out_of_the_token(softhsm: SoftHsm) -> None:
    import pkcs11

    config, key = _master_key(softhsm)
    A = pkcs11.Attribute

    def inspect(session: Any) -> dict[str, Any]:
        obj = session.get_key(object_class=pkcs11.ObjectClass.SECRET_KEY, label=config.key_label)
        seen: dict[str, Any] = {
            "token": obj[A.TOKEN],
            "sensitive": obj[A.SENSITIVE],
            "extractable": obj[A.EXTRACTABLE],
            "never_extractable": obj[A.NEVER_EXTRACTABLE],
        }
        with pytest.raises(pkcs11.AttributeSensitive):
            obj[A.VALUE]
        with pytest.raises(pkcs11.PKCS11Error):  # not modifiable (CKR_ACTION_PROHIBITED on SoftHSMv2)
            obj[A.EXTRACTABLE] = True
        # nor can another key wrap it out of the token
        wrapper = session.generate_key(pkcs11.KeyType.AES, 256, template={A.WRAP: True, A.TOKEN: False})
        with pytest.raises(pkcs11.KeyUnextractable):
            wrapper.wrap_key(obj, mechanism=pkcs11.Mechanism.AES_KEY_WRAP_PAD)
        return seen

    seen = p11._token_session(config).run(config, inspect)
    assert seen == {"token": True, "sensitive": True, "extractable": False, "never_extractable": True}


def test_an_extractable_key_is_refused_as_a_master_key(softhsm: SoftHsm) -> None:
    import pkcs11

    config = p11.Pkcs11Config.from_env(softhsm.env(key_label=_label("weak")))

    def make(session: Any) -> None:
        session.generate_key(
            pkcs11.KeyType.AES,
            256,
            label=config.key_label,
            store=True,
            template={pkcs11.Attribute.EXTRACTABLE: True, pkcs11.Attribute.SENSITIVE: False},
        )

    p11._token_session(config).run(config, make)
    with pytest.raises(VaultConfigurationError, match="non-extractable"):
        p11.Pkcs11MasterKey(config)


def test_a_master_key_deleted_from_the_token_gives_a_vault_error(softhsm: SoftHsm) -> None:
    import pkcs11

    config, key = _master_key(softhsm)
    wrapped = key.wrap(os.urandom(32), aad=b"")  # its handle is now cached

    def destroy(session: Any) -> None:
        session.get_key(object_class=pkcs11.ObjectClass.SECRET_KEY, label=config.key_label).destroy()

    p11._token_session(config).run(config, destroy)
    with pytest.raises(VaultError, match="no longer in the token"):
        key.unwrap(wrapped, aad=b"")
    _, other = _master_key(softhsm)  # the token is still usable afterwards
    assert other.unwrap(other.wrap(b"k" * 32, aad=b""), aad=b"") == b"k" * 32


def test_the_key_id_is_stable_public_and_differs_per_key(softhsm: SoftHsm) -> None:
    config, key = _master_key(softhsm)
    assert p11.Pkcs11MasterKey(config).key_id == key.key_id
    assert _master_key(softhsm)[1].key_id != key.key_id
    assert len(key.key_id) <= 64


def test_an_existing_key_is_never_overwritten(softhsm: SoftHsm) -> None:
    config, key = _master_key(softhsm)
    with pytest.raises(VaultConfigurationError, match="already holds"):
        p11.create_master_key(config)
    assert p11.Pkcs11MasterKey(config).key_id == key.key_id


# --- configuration errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "names"),
    [
        ({"TESSERA_PKCS11_LIBRARY": "/nonexistent/libpkcs11.so"}, "TESSERA_PKCS11_LIBRARY"),
        ({"TESSERA_PKCS11_LIBRARY": ""}, "TESSERA_PKCS11_LIBRARY"),
        ({"TESSERA_PKCS11_TOKEN": "no-such-token"}, "TESSERA_PKCS11_TOKEN"),
        ({"TESSERA_PKCS11_PIN": ""}, "TESSERA_PKCS11_PIN_FILE"),
        ({"TESSERA_PKCS11_KEY_LABEL": "never-created"}, "TESSERA_PKCS11_KEY_LABEL"),
        ({"TESSERA_PKCS11_PIN": "wrong-pin-1"}, "TESSERA_PKCS11_PIN"),
        ({"TESSERA_PKCS11_TOKEN": "other", "TESSERA_PKCS11_PIN": "wrong-pin-2"}, "TESSERA_PKCS11_PIN"),
    ],
)
def test_a_misconfigured_token_gives_a_clear_error_naming_the_variable(
    softhsm: SoftHsm, change: dict[str, str], names: str
) -> None:
    _shared_key(softhsm)  # the "vault" token is open in this process: a wrong PIN must still fail
    env = {**softhsm.env(key_label=_shared_key(softhsm)._config.key_label), **change}
    with pytest.raises(VaultConfigurationError) as info:
        p11.Pkcs11MasterKey(p11.Pkcs11Config.from_env(env))
    assert names in str(info.value)
    assert softhsm.pin not in str(info.value) and "wrong-pin" not in str(info.value)


def test_the_pin_may_come_from_a_file_readable_by_its_owner_only(softhsm: SoftHsm, tmp_path: Path) -> None:
    pin_file = tmp_path / "pin"
    pin_file.write_text(softhsm.pin + "\n")
    pin_file.chmod(0o600)
    env = {k: v for k, v in softhsm.env().items() if k != "TESSERA_PKCS11_PIN"}
    assert p11.Pkcs11Config.from_env({**env, "TESSERA_PKCS11_PIN_FILE": str(pin_file)}).pin == softhsm.pin
    pin_file.chmod(0o644)
    with pytest.raises(VaultConfigurationError, match="chmod 600"):
        p11.Pkcs11Config.from_env({**env, "TESSERA_PKCS11_PIN_FILE": str(pin_file)})


def _django(env: dict[str, str], tmp: Path, code: str = "") -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    script = (
        "import django,os; os.environ['DJANGO_SETTINGS_MODULE']='portal.settings'; django.setup()\n" + code
    )
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**base, "TESSERA_VAR_DIR": str(tmp), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_process_refuses_to_start_with_a_wrong_pin(softhsm: SoftHsm, tmp_path: Path) -> None:
    env = {**softhsm.env(), "TESSERA_VAULT_BACKEND": "pkcs11", "TESSERA_PKCS11_PIN": "0000-bad"}
    proc = _django(env, tmp_path)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert (
        "VaultConfigurationError" in last and "refused the user PIN" in last and "TESSERA_PKCS11_PIN" in last
    )
    assert "0000-bad" not in proc.stderr and softhsm.pin not in proc.stderr


def test_the_process_starts_on_the_token_and_seals_nothing_in_the_clear(
    softhsm: SoftHsm, tmp_path: Path
) -> None:
    config, key = _master_key(softhsm)
    env = {**softhsm.env(key_label=config.key_label), "TESSERA_VAULT_BACKEND": "pkcs11"}
    proc = _django(
        env, tmp_path, "from keys.vault import master_key_backend; print(master_key_backend().key_id)"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == key.key_id


def test_an_unknown_backend_name_is_refused_at_start_up(tmp_path: Path) -> None:
    proc = _django({"TESSERA_VAULT_BACKEND": "hsm"}, tmp_path)
    assert proc.returncode != 0
    assert "TESSERA_VAULT_BACKEND='hsm'" in proc.stderr.strip().splitlines()[-1]


def test_the_init_command_creates_the_master_key_and_the_ca_key(softhsm: SoftHsm, tmp_path: Path) -> None:
    label = _label()
    # the backend is already set to the key that does not exist yet: the command must still start
    env = {**softhsm.env(key_label=label), "TESSERA_VAULT_BACKEND": "pkcs11"}
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    proc = subprocess.run(
        [sys.executable, "manage.py", "vault_pkcs11_init", "--master-key", "--ca-key", f"{label}-ca"],
        cwd=ROOT,
        env={**base, "TESSERA_VAR_DIR": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    config = p11.Pkcs11Config.from_env(softhsm.env(key_label=label))
    assert p11.Pkcs11MasterKey(config).key_id in proc.stdout
    signer = p11.Pkcs11Signer(config, f"{label}-ca")
    assert signer.key_id in proc.stdout and "BEGIN PUBLIC KEY" in proc.stdout


# --- the signer ----------------------------------------------------------------------------------


def test_token_signatures_verify_with_cryptography(softhsm: SoftHsm) -> None:
    config = p11.Pkcs11Config.from_env(softhsm.env())
    signer = p11.create_signing_key(config, _label("ca"))
    public = signer.public_key()
    assert isinstance(public.curve, ec.SECP256R1)
    for message in (b"", b"tbsCertificate", os.urandom(5000)):
        signature = signer.sign(message)
        public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        with pytest.raises(InvalidSignature):
            public.verify(signature, message + b"x", ec.ECDSA(hashes.SHA256()))
    # the same key again by label, its private half locked in the token
    again = p11.Pkcs11Signer(config, signer._label)
    assert again.key_id == signer.key_id
    again.public_key().verify(signer.sign(b"m"), b"m", ec.ECDSA(hashes.SHA256()))


def test_the_signing_key_is_not_extractable(softhsm: SoftHsm) -> None:
    import pkcs11

    config = p11.Pkcs11Config.from_env(softhsm.env())
    label = _label("ca")
    p11.create_signing_key(config, label)

    def inspect(session: Any) -> bool:
        private = session.get_key(object_class=pkcs11.ObjectClass.PRIVATE_KEY, label=label)
        with pytest.raises(pkcs11.AttributeSensitive):
            private[pkcs11.Attribute.VALUE]
        return bool(private[pkcs11.Attribute.EXTRACTABLE])

    assert p11._token_session(config).run(config, inspect) is False


def test_a_missing_signing_key_names_the_command_that_creates_it(softhsm: SoftHsm) -> None:
    with pytest.raises(VaultConfigurationError, match="vault_pkcs11_init --ca-key"):
        p11.Pkcs11Signer(p11.Pkcs11Config.from_env(softhsm.env()), "no-such-ca")


def test_the_token_is_usable_from_many_threads(softhsm: SoftHsm) -> None:
    from concurrent.futures import ThreadPoolExecutor

    _, key = _master_key(softhsm)
    keys = [os.urandom(32) for _ in range(64)]

    def round_trip(data_key: bytes) -> bool:
        return key.unwrap(key.wrap(data_key, aad=b"t"), aad=b"t") == data_key

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(round_trip, keys))


def test_a_forked_child_logs_in_again_and_uses_the_key(softhsm: SoftHsm) -> None:
    _, key = _master_key(softhsm)
    wrapped = key.wrap(b"k" * 32, aad=b"f")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        try:
            ok = (
                key.unwrap(wrapped, aad=b"f") == b"k" * 32
                and key.unwrap(key.wrap(b"x" * 32, aad=b""), aad=b"") == b"x" * 32
            )
        except BaseException:  # noqa: BLE001
            ok = False
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert key.unwrap(wrapped, aad=b"f") == b"k" * 32  # the parent's session still works


# --- two master keys during a rewrap ---------------------------------------------------------------


@pytest.fixture
def local_key(monkeypatch: Any, settings: Any) -> Iterator[bytes]:
    key = os.urandom(32)
    monkeypatch.setenv(vault.MASTER_KEY_ENV, base64.b64encode(key).decode())
    settings.TESSERA_VAULT_BACKEND = "local"
    settings.TESSERA_VAULT_NEW_BACKEND = ""
    vault.vault_reset()
    yield key
    vault.vault_reset()


def test_during_a_rewrap_the_vault_opens_under_either_key_and_wraps_new_keys_under_the_new_one(
    world: Any, softhsm: SoftHsm, local_key: bytes, monkeypatch: Any, settings: Any
) -> None:
    # given: two organisations sealed under the local key
    old = vault.master_key_backend()
    one = vault_seal(org_id=world.owner.pk, purpose="p", plaintext=b"one")
    two = vault_seal(org_id=world.provider.pk, purpose="p", plaintext=b"two")
    # when: the token's key is configured as the new key and one organisation is moved
    label = _label()
    _master_key(softhsm, label)
    for name, value in softhsm.env(prefix="TESSERA_VAULT_NEW_PKCS11_", key_label=label).items():
        monkeypatch.setenv(name, value)
    settings.TESSERA_VAULT_NEW_BACKEND = "pkcs11"
    vault.vault_reset()
    new = vault.new_master_key_backend()
    assert new is not None and new.key_id != old.key_id
    assert vault_rewrap_one(org_id=world.owner.pk, target=new, sources=[old]) == RewrapOutcome.REWRAPPED
    vault.vault_reset()
    # then: both open, each under the key its row names
    rows = {r.org_id: r.master_key_id for r in OrgDataKey.objects.all()}
    assert rows[world.owner.pk] == new.key_id and rows[world.provider.pk] == old.key_id
    assert vault_open(org_id=world.owner.pk, purpose="p", blob=one) == b"one"
    assert vault_open(org_id=world.provider.pk, purpose="p", blob=two) == b"two"
    # and a data key created now is wrapped by the new key
    vault_seal(org_id=world.stranger.pk, purpose="p", plaintext=b"three")
    assert OrgDataKey.objects.get(org=world.stranger).master_key_id == new.key_id
    # and a process knowing only the old key says which key it lacks
    settings.TESSERA_VAULT_NEW_BACKEND = ""
    vault.vault_reset()
    with pytest.raises(VaultError, match=new.key_id):
        vault_open(org_id=world.owner.pk, purpose="p", blob=one)


def test_rewrapping_one_organisation_skips_shredded_moved_and_unknown_rows(
    world: Any, softhsm: SoftHsm, local_key: bytes
) -> None:
    old = vault.master_key_backend()
    for org in (world.owner, world.provider, world.stranger):
        vault_seal(org_id=org.pk, purpose="p", plaintext=b"x")
    vault.vault_shred(org_id=world.provider.pk)
    OrgDataKey.objects.filter(org=world.stranger).update(master_key_id="local:0000000000000000")
    _, new = _master_key(softhsm)
    before = bytes(OrgDataKey.objects.get(org=world.owner).wrapped)
    assert vault_rewrap_one(org_id=world.owner.pk, target=new, sources=[old], dry_run=True) == "would-rewrap"
    assert bytes(OrgDataKey.objects.get(org=world.owner).wrapped) == before
    assert vault_rewrap_one(org_id=world.owner.pk, target=new, sources=[old]) == RewrapOutcome.REWRAPPED
    assert vault_rewrap_one(org_id=world.owner.pk, target=new, sources=[old]) == RewrapOutcome.ALREADY
    assert vault_rewrap_one(org_id=world.provider.pk, target=new, sources=[old]) == RewrapOutcome.SHREDDED
    assert vault_rewrap_one(org_id=world.stranger.pk, target=new, sources=[old]) == RewrapOutcome.UNKNOWN_KEY
    assert vault_rewrap_one(org_id=uuid.uuid4(), target=new, sources=[old]) == RewrapOutcome.GONE


# --- the rewrap command, killed and resumed -----------------------------------------------------------


def _database_url() -> str:
    from django.db import connection

    sd = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{sd['NAME']}"
    user = sd.get("USER") or ""
    password = f":{sd['PASSWORD']}" if sd.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    return f"postgres://{auth}{sd.get('HOST') or '127.0.0.1'}:{sd.get('PORT') or 5432}/{sd['NAME']}"


class Rewrap:
    """``manage.py vault_rewrap`` as a real process on the test database."""

    def __init__(self, env: dict[str, str], tmp: Path) -> None:
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "DATABASE_URL": _database_url(),
            "SECRET_KEY": secrets.token_urlsafe(48),
            "DEBUG": "0",
            "TESSERA_VAR_DIR": str(tmp),
            "PYTHONUNBUFFERED": "1",
            **env,
        }

    def run(self, *args: str, **hooks: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", "vault_rewrap", *args],
            cwd=ROOT,
            env={**self.env, **hooks},
            capture_output=True,
            text=True,
            timeout=300,
        )

    def run_and_kill_when_paused(self, *args: str, **hooks: str) -> str:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "vault_rewrap", *args],
            cwd=ROOT,
            env={**self.env, **hooks},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        seen: list[str] = []
        deadline = time.monotonic() + 120
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                seen.append(line)
                if line.startswith("paused"):
                    proc.send_signal(signal.SIGKILL)
                    break
                assert time.monotonic() < deadline, "".join(seen)
            assert proc.wait(timeout=30) == -signal.SIGKILL, "".join(seen)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return "".join(seen)


def _key_ids() -> dict[str, int]:
    counts: dict[str, int] = {}
    for key_id in OrgDataKey.objects.values_list("master_key_id", flat=True):
        counts[key_id] = counts.get(key_id, 0) + 1
    return counts


@pytest.mark.django_db(transaction=True)
def test_rewrap_local_to_pkcs11_killed_between_and_inside_transactions_then_resumed(
    softhsm: SoftHsm, local_key: bytes, tmp_path: Path, monkeypatch: Any, settings: Any
) -> None:
    # given: 30 organisations with a sealed secret each, under the local master key
    orgs: list[Any] = [f.OrganisationFactory() for _ in range(30)]
    secrets_by_org = {o.pk: os.urandom(48) for o in orgs}
    blobs = {
        oid: vault_seal(org_id=oid, purpose="keyset:x", plaintext=s) for oid, s in secrets_by_org.items()
    }
    old = vault.master_key_backend()
    label = _label()
    _, new = _master_key(softhsm, label)
    rewrap = Rewrap(
        {
            vault.MASTER_KEY_ENV: base64.b64encode(local_key).decode(),
            **softhsm.env(prefix="TESSERA_VAULT_NEW_PKCS11_", key_label=label),
        },
        tmp_path,
    )

    # when: killed -9 after 10 organisations
    out = rewrap.run_and_kill_when_paused("--to", "pkcs11", TESSERA_VAULT_REWRAP_PAUSE_AFTER="10")
    # then: 10 rows moved, 20 not, and a vault knowing both keys opens everything
    assert "paused after 10" in out
    assert _key_ids() == {new.key_id: 10, old.key_id: 20}
    for name, value in softhsm.env(prefix="TESSERA_VAULT_NEW_PKCS11_", key_label=label).items():
        monkeypatch.setenv(name, value)
    settings.TESSERA_VAULT_NEW_BACKEND = "pkcs11"
    vault.vault_reset()
    assert all(
        vault_open(org_id=o, purpose="keyset:x", blob=b) == secrets_by_org[o] for o, b in blobs.items()
    )

    # when: resumed and killed -9 inside the 6th transaction, after its write, before its commit
    out = rewrap.run_and_kill_when_paused("--to", "pkcs11", TESSERA_VAULT_REWRAP_PAUSE_INSIDE="5")
    # then: that organisation's row is still wholly old
    assert "20 organisation(s) to go" in out and "paused inside" in out
    assert _key_ids() == {new.key_id: 15, old.key_id: 15}

    # when: a dry run, then the real run to the end
    dry = rewrap.run("--to", "pkcs11", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "15 would-rewrap" in dry.stdout and _key_ids() == {new.key_id: 15, old.key_id: 15}
    done = rewrap.run("--to", "pkcs11", "-v", "2")
    # then: every row is under the token's key and every sealed secret opens with it alone
    assert done.returncode == 0, done.stdout + done.stderr
    assert "summary: 15 rewrapped" in done.stdout and "every live data key is wrapped by" in done.stdout
    assert _key_ids() == {new.key_id: 30}
    for name, value in softhsm.env(key_label=label).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv(vault.MASTER_KEY_ENV)
    settings.TESSERA_VAULT_BACKEND = "pkcs11"
    settings.TESSERA_VAULT_NEW_BACKEND = ""
    vault.vault_reset()
    assert all(
        vault_open(org_id=o, purpose="keyset:x", blob=b) == secrets_by_org[o] for o, b in blobs.items()
    )
    # and no key material in anything the command printed
    printed = out + dry.stdout + dry.stderr + done.stdout + done.stderr
    assert base64.b64encode(local_key).decode() not in printed and softhsm.pin not in printed
    # and running it again has nothing to do
    again = rewrap.run("--to", "pkcs11")
    assert again.returncode == 0 and "0 organisation(s) to go" in again.stdout


@pytest.mark.django_db(transaction=True)
def test_rewrap_pkcs11_to_pkcs11_and_local_to_local(
    softhsm: SoftHsm, local_key: bytes, tmp_path: Path, monkeypatch: Any, settings: Any
) -> None:
    # given: organisations sealed under the local key
    orgs: list[Any] = [f.OrganisationFactory() for _ in range(4)]
    blobs = {o.pk: vault_seal(org_id=o.pk, purpose="p", plaintext=o.pk.bytes) for o in orgs}
    # when: local -> local
    second = os.urandom(32)
    local2 = Rewrap(
        {
            vault.MASTER_KEY_ENV: base64.b64encode(local_key).decode(),
            vault.NEW_MASTER_KEY_ENV: base64.b64encode(second).decode(),
        },
        tmp_path,
    ).run("--to", "local")
    assert local2.returncode == 0, local2.stdout + local2.stderr
    assert _key_ids() == {vault.LocalMasterKey(second).key_id: 4}
    # when: local -> pkcs11 (label A), then pkcs11 (A) -> pkcs11 (B) in the same token
    label_a, label_b = _label(), _label()
    _, key_a = _master_key(softhsm, label_a)
    _, key_b = _master_key(softhsm, label_b)
    to_a = Rewrap(
        {
            vault.MASTER_KEY_ENV: base64.b64encode(second).decode(),
            **softhsm.env(prefix="TESSERA_VAULT_NEW_PKCS11_", key_label=label_a),
        },
        tmp_path,
    ).run("--to", "pkcs11")
    assert to_a.returncode == 0, to_a.stdout + to_a.stderr
    to_b = Rewrap(
        {
            "TESSERA_VAULT_BACKEND": "pkcs11",
            **softhsm.env(key_label=label_a),
            "TESSERA_VAULT_NEW_BACKEND": "pkcs11",
            "TESSERA_VAULT_NEW_PKCS11_KEY_LABEL": label_b,  # library, token and PIN: the current ones
        },
        tmp_path,
    ).run()
    assert to_b.returncode == 0, to_b.stdout + to_b.stderr
    # then
    assert _key_ids() == {key_b.key_id: 4}
    for name, value in softhsm.env(key_label=label_b).items():
        monkeypatch.setenv(name, value)
    settings.TESSERA_VAULT_BACKEND = "pkcs11"
    vault.vault_reset()
    assert all(vault_open(org_id=o, purpose="p", blob=b) == o.bytes for o, b in blobs.items())


@pytest.mark.django_db(transaction=True)
def test_rewrap_reports_rows_it_cannot_open_and_exits_non_zero(
    softhsm: SoftHsm, local_key: bytes, tmp_path: Path
) -> None:
    org: Any = f.OrganisationFactory()
    vault_seal(org_id=org.pk, purpose="p", plaintext=b"x")
    OrgDataKey.objects.filter(org=org).update(master_key_id="local:ffffffffffffffff")
    label = _label()
    _master_key(softhsm, label)
    proc = Rewrap(
        {
            vault.MASTER_KEY_ENV: base64.b64encode(local_key).decode(),
            **softhsm.env(prefix="TESSERA_VAULT_NEW_PKCS11_", key_label=label),
        },
        tmp_path,
    ).run("--to", "pkcs11")
    assert proc.returncode == 1
    assert f"{org.pk}: unknown-key" in proc.stdout and "run the command again" in proc.stderr


def test_rewrap_without_a_target_says_what_to_set(tmp_path: Path, local_key: bytes) -> None:
    proc = Rewrap({vault.MASTER_KEY_ENV: base64.b64encode(local_key).decode()}, tmp_path).run("--to", "local")
    assert proc.returncode == 1
    assert vault.NEW_MASTER_KEY_ENV in proc.stderr
