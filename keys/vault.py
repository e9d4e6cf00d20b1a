"""The vault: envelope encryption of key material (DESIGN §6).

1. Each organisation has a random 256-bit *data key*; only its wrapped form is stored
   (``OrgDataKey.wrapped``), wrapped by the *master key* of a ``MasterKeyBackend``.
2. ``vault_seal`` encrypts with the organisation's data key under AES-256-GCM. The associated data
   names the owner organisation and a purpose string (``keyset:<id>``…), so a blob copied to
   another organisation's row, or to another purpose, fails to open.
3. ``vault_shred`` destroys the wrapped data key: every blob of that organisation is gone for good.

The master key backend is chosen by configuration (``TESSERA_VAULT_BACKEND``: ``local``,
``pkcs11``, or a dotted path to a factory returning a ``MasterKeyBackend``). ``local`` reads the
key from ``TESSERA_VAULT_MASTER_KEY`` (base64 of 32 bytes) or from the file
``TESSERA_VAULT_MASTER_KEY_FILE`` (default ``$TESSERA_VAR_DIR/vault-master.key``), which the
embedded default generates with mode 0600 on first use. ``pkcs11`` (``keys.pkcs11``) keeps it as
a non-extractable AES-256 key in a PKCS#11 token (``TESSERA_PKCS11_*``).

Changing the master key (``manage.py vault_rewrap``): the new key is configured *next to* the
current one with ``TESSERA_VAULT_NEW_BACKEND`` (``local`` or ``pkcs11``) and its variables under
``TESSERA_VAULT_NEW_`` (``TESSERA_VAULT_NEW_MASTER_KEY[_FILE]``, ``TESSERA_VAULT_NEW_PKCS11_*``).
While both are configured every process opens a data key under whichever of the two its row
names (``OrgDataKey.master_key_id``) and wraps fresh data keys under the new one, so the
transition converges; the command rewraps one organisation per transaction and can be killed
and run again at any point. Afterwards the new key becomes ``TESSERA_VAULT_BACKEND`` and the
``TESSERA_VAULT_NEW_*`` variables go.

Unwrapped data keys live in process memory only, in a small LRU with a short time-to-live; a
shred in another process is therefore honoured here within ``CACHE_TTL_SECONDS`` at the latest.
Nothing in this module logs or raises key material.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
import stat
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Protocol
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from keys.errors import VaultConfigurationError, VaultError

MASTER_KEY_ENV = "TESSERA_VAULT_MASTER_KEY"
MASTER_KEY_FILE_ENV = "TESSERA_VAULT_MASTER_KEY_FILE"
NEW_MASTER_KEY_ENV = "TESSERA_VAULT_NEW_MASTER_KEY"
NEW_MASTER_KEY_FILE_ENV = "TESSERA_VAULT_NEW_MASTER_KEY_FILE"
# TESSERA_VAULT_BACKEND / TESSERA_VAULT_NEW_BACKEND names: the current key's factory, the new key's
BACKENDS = {
    "local": ("keys.vault.local_backend", "keys.vault.new_local_backend"),
    "pkcs11": ("keys.pkcs11.pkcs11_backend", "keys.pkcs11.new_pkcs11_backend"),
}
BLOB_VERSION = b"\x01"
NONCE_BYTES = 12
CACHE_SIZE = 256
CACHE_TTL_SECONDS = 30.0
_AAD_PREFIX = b"tessera-vault/v1\x00"
_WRAP_AAD_PREFIX = b"tessera-vault/v1/org-data-key\x00"
_MAX_PURPOSE = 200


class MasterKeyBackend(Protocol):
    """What the vault needs from a master key: wrap and unwrap data keys, and name the key."""

    @property
    def key_id(self) -> str: ...

    def wrap(self, data_key: bytes, *, aad: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes, *, aad: bytes) -> bytes: ...


class LocalMasterKey:
    """A master key held in process memory (env or file): AES-256-GCM key wrapping."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise VaultConfigurationError("the vault master key must be 32 bytes")
        self._aead = AESGCM(key)
        # A public name for the key: a hash under a fixed label, useless for recovering it.
        self._key_id = "local:" + hashlib.sha256(b"tessera-vault-master-key-id\x00" + key).hexdigest()[:16]

    @property
    def key_id(self) -> str:
        return self._key_id

    def wrap(self, data_key: bytes, *, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, data_key, aad)

    def unwrap(self, wrapped: bytes, *, aad: bytes) -> bytes:
        try:
            return self._aead.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], aad)
        except (InvalidTag, ValueError):
            raise VaultError("The organisation's data key cannot be unwrapped by this master key.") from None

    def __repr__(self) -> str:
        return f"LocalMasterKey({self._key_id})"


# --- loading the master key ------------------------------------------------------------------


def _decode_master_key(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise VaultConfigurationError(
            f"{where} is not a base64-encoded 32-byte key; generate one with "
            '`python -c "import base64,os;print(base64.b64encode(os.urandom(32)).decode())"`'
        )
    return key


def _generate_key_file(path: Path) -> None:
    """Create ``path`` with a new key, mode 0600, atomically: concurrent first uses agree on one key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(base64.b64encode(os.urandom(32)).decode() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # fails if another process won the race: its key is the key
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)


def _read_key_file(path: Path, var: str = MASTER_KEY_FILE_ENV) -> bytes:
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            raise VaultConfigurationError(f"{var} {path} is not a regular file")
        if mode & 0o077:
            raise VaultConfigurationError(
                f"the vault master key file {path} is readable by other users (mode {stat.S_IMODE(mode):03o}); "
                f"run `chmod 600 {path}`"
            )
        text = path.read_text(encoding="ascii")
    except VaultConfigurationError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise VaultConfigurationError(
            f"cannot read the vault master key file {path} ({type(exc).__name__}); check it exists and "
            "is readable by this user"
        ) from None
    return _decode_master_key(text, f"the vault master key file {path}")


def _key_file_path() -> tuple[Path, bool]:
    """The key file and whether it was configured explicitly (explicit files are never generated)."""
    explicit = os.environ.get(MASTER_KEY_FILE_ENV, "").strip()
    if explicit:
        return Path(explicit), True
    return Path(settings.VAR_DIR) / "vault-master.key", False


def _may_generate() -> bool:
    return bool(getattr(settings, "TESSERA_VAULT_GENERATE_KEY", False))


def local_backend() -> LocalMasterKey:
    """The embedded default: the master key from the environment or from the key file."""
    raw = os.environ.get(MASTER_KEY_ENV)
    if raw is not None and raw.strip():
        return LocalMasterKey(_decode_master_key(raw, MASTER_KEY_ENV))
    path, explicit = _key_file_path()
    if not path.exists():
        if explicit or not _may_generate():
            raise VaultConfigurationError(
                f"no vault master key: set {MASTER_KEY_ENV} (base64 of 32 bytes) or {MASTER_KEY_FILE_ENV} "
                f"(a file holding one, mode 0600); {path} does not exist"
            )
        _generate_key_file(path)
    return LocalMasterKey(_read_key_file(path))


def new_local_backend() -> LocalMasterKey:
    """A rewrap's target: ``TESSERA_VAULT_NEW_MASTER_KEY`` or ``…_FILE`` (never generated)."""
    raw = os.environ.get(NEW_MASTER_KEY_ENV, "")
    if raw.strip():
        return LocalMasterKey(_decode_master_key(raw, NEW_MASTER_KEY_ENV))
    path = os.environ.get(NEW_MASTER_KEY_FILE_ENV, "").strip()
    if not path:
        raise VaultConfigurationError(
            f"TESSERA_VAULT_NEW_BACKEND=local needs {NEW_MASTER_KEY_ENV} (base64 of 32 bytes) or "
            f"{NEW_MASTER_KEY_FILE_ENV} (a file holding one, mode 0600)"
        )
    return LocalMasterKey(_read_key_file(Path(path), NEW_MASTER_KEY_FILE_ENV))


def _factory_path(setting: str, value: str, *, new: bool) -> str:
    if value in BACKENDS:
        return BACKENDS[value][1 if new else 0]
    if "." in value:
        return value
    raise VaultConfigurationError(
        f"{setting}={value!r}: use one of {', '.join(sorted(BACKENDS))} (or a dotted path to a backend factory)"
    )


def _build(setting: str, value: str, *, new: bool) -> MasterKeyBackend:
    path = _factory_path(setting, value, new=new)
    try:
        factory = import_string(path)
    except ImportError:
        raise VaultConfigurationError(f"{setting}={value!r} names no importable factory") from None
    return factory()


def backend_for(kind: str, *, new: bool = False) -> MasterKeyBackend:
    """A backend of ``kind`` (``local``/``pkcs11``/dotted path) from the current or the ``NEW_`` variables."""
    return _build("TESSERA_VAULT_NEW_BACKEND" if new else "TESSERA_VAULT_BACKEND", kind, new=new)


_backend_lock = threading.Lock()
_backend: MasterKeyBackend | None = None
_new_backend: MasterKeyBackend | None = None
_new_loaded = False


def _current_setting() -> str:
    return (getattr(settings, "TESSERA_VAULT_BACKEND", "") or "local").strip()


def _new_setting() -> str:
    return (getattr(settings, "TESSERA_VAULT_NEW_BACKEND", "") or "").strip()


def master_key_backend() -> MasterKeyBackend:
    """The configured backend (``TESSERA_VAULT_BACKEND``), built once per process."""
    global _backend
    with _backend_lock:
        if _backend is None:
            _backend = _build("TESSERA_VAULT_BACKEND", _current_setting(), new=False)
        return _backend


def new_master_key_backend() -> MasterKeyBackend | None:
    """The master key being moved to (``TESSERA_VAULT_NEW_BACKEND``), or None outside a rewrap."""
    global _new_backend, _new_loaded
    with _backend_lock:
        if not _new_loaded:
            kind = _new_setting()
            _new_backend = _build("TESSERA_VAULT_NEW_BACKEND", kind, new=True) if kind else None
            _new_loaded = True
        return _new_backend


def _backend_named(key_id: str) -> MasterKeyBackend | None:
    for backend in (master_key_backend(), new_master_key_backend()):
        if backend is not None and backend.key_id == key_id:
            return backend
    return None


def _wrapping_backend() -> MasterKeyBackend:
    """Fresh data keys go under the new key while one is configured, so a rewrap converges."""
    return new_master_key_backend() or master_key_backend()


# The command that creates the token's keys cannot demand that they exist already.
_NO_STARTUP_CHECK = frozenset({"vault_pkcs11_init"})


def vault_check_configuration() -> None:
    """At start-up: refuse a malformed or unreadable master key at once.

    A deployment that configured nothing and may not generate a key starts anyway (the portal
    does not need the vault for most pages) and fails on the first seal or open with the same
    clear message.
    """
    if len(sys.argv) > 1 and sys.argv[1] in _NO_STARTUP_CHECK:
        return
    raw = os.environ.get(MASTER_KEY_ENV, "").strip()
    path, explicit = _key_file_path()
    if (
        raw
        or explicit
        or path.exists()
        or _may_generate()
        or _current_setting() not in ("local", "keys.vault.local_backend")
    ):
        master_key_backend()
    new_master_key_backend()


def vault_reset() -> None:
    """Forget the backends and every cached data key (tests; a master key rotation)."""
    global _backend, _new_backend, _new_loaded
    with _backend_lock:
        _backend = None
        _new_backend = None
        _new_loaded = False
    _cache.clear()


# --- the data key cache ------------------------------------------------------------------------


class _DataKeyCache:
    """A bounded LRU of unwrapped data keys with a time-to-live, safe across threads."""

    def __init__(self, size: int, ttl: float) -> None:
        self._size = size
        self._ttl = ttl
        self._items: OrderedDict[UUID, tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, org_id: UUID) -> bytes | None:
        with self._lock:
            item = self._items.get(org_id)
            if item is None:
                return None
            if item[0] < time.monotonic():
                del self._items[org_id]
                return None
            self._items.move_to_end(org_id)
            return item[1]

    def put(self, org_id: UUID, key: bytes) -> None:
        with self._lock:
            self._items[org_id] = (time.monotonic() + self._ttl, key)
            self._items.move_to_end(org_id)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def drop(self, org_id: UUID) -> None:
        with self._lock:
            self._items.pop(org_id, None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


_cache = _DataKeyCache(CACHE_SIZE, CACHE_TTL_SECONDS)


def _uuid(org_id: UUID | str) -> UUID:
    try:
        return org_id if isinstance(org_id, UUID) else UUID(str(org_id))
    except ValueError:
        raise VaultError("The vault needs an organisation id.") from None


def _wrap_aad(org_id: UUID) -> bytes:
    return _WRAP_AAD_PREFIX + org_id.bytes


def _data_key(org_id: UUID, *, create: bool) -> bytes:
    """The organisation's unwrapped data key; created on first seal, never after a shred."""
    from keys.models import OrgDataKey

    cached = _cache.get(org_id)
    if cached is not None:
        return cached
    row = OrgDataKey.objects.filter(org_id=org_id).first()
    if row is None:
        if not create:
            raise VaultError("Nothing was ever sealed for this organisation.")
        wrapping = _wrapping_backend()
        fresh = os.urandom(32)
        try:
            with transaction.atomic():
                row = OrgDataKey.objects.create(
                    org_id=org_id,
                    wrapped=wrapping.wrap(fresh, aad=_wrap_aad(org_id)),
                    master_key_id=wrapping.key_id,
                )
        except IntegrityError:
            # Another request created it first: use theirs.
            row = OrgDataKey.objects.get(org_id=org_id)
    if row.shredded_at is not None or not row.wrapped:
        raise VaultError("This organisation's data key was shredded; its sealed material is gone.")
    backend = _backend_named(row.master_key_id)
    if backend is None:
        raise VaultError(
            f"This organisation's data key is wrapped by another master key ({row.master_key_id}); configure "
            "that key (TESSERA_VAULT_BACKEND, or TESSERA_VAULT_NEW_BACKEND during a rewrap)."
        )
    key = backend.unwrap(bytes(row.wrapped), aad=_wrap_aad(org_id))
    _cache.put(org_id, key)
    return key


def _aad(org_id: UUID, purpose: str) -> bytes:
    if not isinstance(purpose, str) or not purpose or len(purpose) > _MAX_PURPOSE:
        raise VaultError("A vault purpose is a non-empty string of at most 200 characters.")
    return _AAD_PREFIX + org_id.bytes + b"\x00" + purpose.encode()


# --- the public functions ----------------------------------------------------------------------


def vault_seal(*, org_id: UUID | str, purpose: str, plaintext: bytes) -> bytes:
    """Encrypt ``plaintext`` for organisation ``org_id`` and ``purpose``: version‖nonce‖ct‖tag."""
    oid = _uuid(org_id)
    aad = _aad(oid, purpose)
    if not isinstance(plaintext, bytes | bytearray):
        raise VaultError("The vault seals bytes.")
    nonce = os.urandom(NONCE_BYTES)
    ct = AESGCM(_data_key(oid, create=True)).encrypt(nonce, bytes(plaintext), aad)
    return BLOB_VERSION + nonce + ct


def vault_open(*, org_id: UUID | str, purpose: str, blob: bytes) -> bytes:
    """Decrypt a blob sealed for exactly this organisation and purpose, or raise ``VaultError``."""
    oid = _uuid(org_id)
    aad = _aad(oid, purpose)
    blob = bytes(blob) if isinstance(blob, bytes | bytearray | memoryview) else b""
    if len(blob) < 1 + NONCE_BYTES + 16 or blob[:1] != BLOB_VERSION:
        raise VaultError("The sealed blob is malformed.")
    key = _data_key(oid, create=False)
    try:
        return AESGCM(key).decrypt(blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :], aad)
    except InvalidTag:
        raise VaultError(
            "The sealed blob does not open for this organisation and purpose (moved, altered or shredded)."
        ) from None


def vault_shred(*, org_id: UUID | str) -> bool:
    """Crypto-shred: destroy the organisation's data key. Returns False if there was none to destroy.

    Effects: the wrapped key is overwritten with nothing and ``shredded_at`` set, in one
    transaction with a ``vault:shred`` audit event (by the platform); this process's cache
    forgets it at once, other processes within ``CACHE_TTL_SECONDS``. Irreversible by design.
    """
    from audit.models import AuditTag
    from audit.services import audit_record
    from keys.models import OrgDataKey

    oid = _uuid(org_id)
    with transaction.atomic():
        done = OrgDataKey.objects.filter(org_id=oid, shredded_at__isnull=True).update(
            wrapped=b"", shredded_at=timezone.now()
        )
        if done:
            audit_record(actor=None, tag=AuditTag.VAULT_SHRED, details={"org": str(oid)}, concerns=[oid])
    _cache.drop(oid)
    transaction.on_commit(lambda: _cache.drop(oid))
    return bool(done)


# --- rewrapping to a new master key (manage.py vault_rewrap) -----------------------------------


class RewrapOutcome:
    REWRAPPED = "rewrapped"
    WOULD_REWRAP = "would-rewrap"  # --dry-run: unwrapped and wrapped, not written
    ALREADY = "already"  # under the target key (a resumed run)
    SHREDDED = "shredded"
    GONE = "gone"
    UNKNOWN_KEY = "unknown-key"  # wrapped by a key that is neither the current nor the target
    FAILED = "failed"  # the source key did not open it


def vault_rewrap_pending(*, target_key_id: str) -> list[UUID]:
    """Organisations whose live data key is not (yet) wrapped by ``target_key_id``, in a stable order."""
    from keys.models import OrgDataKey

    return list(
        OrgDataKey.objects.filter(shredded_at__isnull=True)
        .exclude(master_key_id=target_key_id)
        .order_by("org_id")
        .values_list("org_id", flat=True)
    )


def vault_rewrap_one(
    *,
    org_id: UUID | str,
    target: MasterKeyBackend,
    sources: list[MasterKeyBackend],
    dry_run: bool = False,
    before_commit: Callable[[], None] | None = None,
) -> str:
    """Rewrap one organisation's data key under ``target``, in one transaction; a ``RewrapOutcome``.

    1. Lock the row; a shredded, vanished or already moved row needs nothing.
    2. Unwrap it with the source named by the row's ``master_key_id``.
    3. Wrap the same data key under ``target`` and unwrap that again (a token that wraps but
       cannot unwrap must not eat a key), then write ``wrapped`` and ``master_key_id`` together,
       only if the row still has the key id we read (compare-and-set).
    The data key itself does not change, so sealed blobs and cached keys stay valid. Killed at
    any point, the row is either wholly old or wholly new; running again picks up the rest.
    """
    from keys.models import OrgDataKey

    oid = _uuid(org_id)
    with transaction.atomic():
        row = OrgDataKey.objects.select_for_update().filter(org_id=oid).first()
        if row is None:
            return RewrapOutcome.GONE
        if row.shredded_at is not None or not row.wrapped:
            return RewrapOutcome.SHREDDED
        if row.master_key_id == target.key_id:
            return RewrapOutcome.ALREADY
        source = next((b for b in sources if b.key_id == row.master_key_id), None)
        if source is None:
            return RewrapOutcome.UNKNOWN_KEY
        aad = _wrap_aad(oid)
        try:
            data_key = source.unwrap(bytes(row.wrapped), aad=aad)
            wrapped = target.wrap(data_key, aad=aad)
            if target.unwrap(wrapped, aad=aad) != data_key:
                return RewrapOutcome.FAILED
        except VaultError:
            return RewrapOutcome.FAILED
        if dry_run:
            return RewrapOutcome.WOULD_REWRAP
        done = OrgDataKey.objects.filter(
            pk=row.pk, master_key_id=row.master_key_id, shredded_at__isnull=True
        ).update(wrapped=wrapped, master_key_id=target.key_id)
        if before_commit is not None:
            before_commit()
        return RewrapOutcome.REWRAPPED if done else RewrapOutcome.FAILED
