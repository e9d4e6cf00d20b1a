"""The vault's master key, and the CA's signing key, in a PKCS#11 token (DESIGN §6; issue 5).

``Pkcs11MasterKey`` is a ``keys.vault.MasterKeyBackend`` whose key is an AES-256 secret key object
in the token (CKA_TOKEN, CKA_SENSITIVE, not CKA_EXTRACTABLE): the data keys are encrypted and
decrypted *inside* the token with CKM_AES_GCM (a 12-byte random nonce, the vault's associated data,
a 128-bit tag). The wrapped form is ``nonce ‖ ciphertext ‖ tag`` like ``LocalMasterKey``'s. We use
C_Encrypt/C_Decrypt rather than C_WrapKey/C_UnwrapKey because the data key is a host value anyway
(the vault's AES-GCM runs in this process, as in any KMS envelope scheme); what the token keeps
from us is the *master* key, which never leaves it.

``Pkcs11Signer`` holds an ECDSA P-256 key pair in the token (the private half sensitive and
non-extractable): ``public_key()`` answers a ``cryptography`` public key, ``sign(data)`` a DER
ECDSA-with-SHA-256 signature. The digest is computed here and signed with CKM_ECDSA, since not
every token (SoftHSMv2 among them) offers CKM_ECDSA_SHA256; the token's raw r‖s becomes DER.

Configuration (the variables are named in every error):

- ``TESSERA_PKCS11_LIBRARY``   path of the PKCS#11 module (e.g. ``/usr/lib/softhsm/libsofthsm2.so``)
- ``TESSERA_PKCS11_TOKEN``     the token's label
- ``TESSERA_PKCS11_PIN`` or ``TESSERA_PKCS11_PIN_FILE``  the user PIN (a file: first line)
- ``TESSERA_PKCS11_KEY_LABEL`` the master key's label (default ``tessera-vault-master``)

A rewrap's target (``manage.py vault_rewrap``) reads the same names with ``TESSERA_VAULT_NEW_``
in front (``TESSERA_VAULT_NEW_PKCS11_KEY_LABEL`` …); library, token and PIN default to the
current ones, so moving to a new key in the same token only needs the new label.

Threads: PKCS#11 logs a user in per application, not per session, so this module keeps one
logged-in session per (library, token) and process, shared by every key on that token and
serialised by a lock. A forked child (Celery's prefork pool) re-initialises the library and logs
in again on first use. Nothing here logs, returns or raises key material or the PIN.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from keys.errors import VaultConfigurationError, VaultError

PREFIX = "TESSERA_PKCS11_"
NEW_PREFIX = "TESSERA_VAULT_NEW_PKCS11_"
DEFAULT_KEY_LABEL = "tessera-vault-master"
DEFAULT_CA_KEY_LABEL = "tessera-ca-signing"
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_ID_BYTES = 16  # CKA_ID given to keys this module creates: random, so a re-created key gets a new key_id

T = TypeVar("T")


def _pkcs11() -> Any:
    """python-pkcs11, imported late: the local vault must not need it."""
    try:
        import pkcs11
    except ImportError:  # pragma: no cover - pinned in requirements.txt
        raise VaultConfigurationError(
            "TESSERA_VAULT_BACKEND=pkcs11 needs the python-pkcs11 package (pip install -r requirements.txt)"
        ) from None
    return pkcs11


# --- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Pkcs11Config:
    """Where the token is and how to log in; ``prefix`` names the variables for error messages."""

    library: str
    token: str
    pin: str = field(repr=False)
    key_label: str
    prefix: str = PREFIX

    def var(self, name: str) -> str:
        return self.prefix + name

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        prefix: str = PREFIX,
        fallback_prefix: str | None = None,
        default_key_label: str = DEFAULT_KEY_LABEL,
    ) -> Pkcs11Config:
        """Read ``<prefix>LIBRARY``, ``TOKEN``, ``PIN``/``PIN_FILE``, ``KEY_LABEL``.

        With ``fallback_prefix``, library, token and PIN not set under ``prefix`` come from there
        (a new key in the same token); the key label never falls back.
        """
        env = os.environ if environ is None else environ

        def get(name: str, *, fallback: bool = True) -> tuple[str, str]:
            value = env.get(prefix + name, "").strip()
            if value or not fallback or fallback_prefix is None:
                return value, prefix + name
            return env.get(fallback_prefix + name, "").strip(), fallback_prefix + name

        library, library_var = get("LIBRARY")
        if not library:
            raise VaultConfigurationError(
                f"the PKCS#11 vault needs {prefix}LIBRARY, the path of the token's PKCS#11 module "
                "(SoftHSMv2: /usr/lib/softhsm/libsofthsm2.so)"
            )
        token, _ = get("TOKEN")
        if not token:
            raise VaultConfigurationError(f"the PKCS#11 vault needs {prefix}TOKEN, the label of the token")
        pin = _read_pin(env, prefix) if (env.get(prefix + "PIN") or env.get(prefix + "PIN_FILE")) else None
        if pin is None and fallback_prefix is not None:
            pin = _read_pin(env, fallback_prefix)
        if pin is None:
            raise VaultConfigurationError(
                f"the PKCS#11 vault needs the token's user PIN: set {prefix}PIN_FILE (a file holding it, "
                f"mode 0600) or {prefix}PIN"
            )
        key_label = env.get(prefix + "KEY_LABEL", "").strip() or default_key_label
        if not Path(library).is_file():
            raise VaultConfigurationError(
                f"{library_var}={library} does not exist; install the token's PKCS#11 module "
                "(SoftHSMv2: apt-get install softhsm2) or correct the path"
            )
        return cls(library=library, token=token, pin=pin, key_label=key_label, prefix=prefix)


def _read_pin(env: Mapping[str, str], prefix: str) -> str | None:
    pin = env.get(prefix + "PIN", "")
    if pin.strip():
        return pin.strip()
    path = env.get(prefix + "PIN_FILE", "").strip()
    if not path:
        return None
    try:
        mode = os.stat(path).st_mode
        if mode & 0o077:
            raise VaultConfigurationError(
                f"{prefix}PIN_FILE {path} is readable by other users (mode {mode & 0o777:03o}); run `chmod 600 {path}`"
            )
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except VaultConfigurationError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise VaultConfigurationError(
            f"cannot read {prefix}PIN_FILE {path} ({type(exc).__name__}); check it exists and is readable"
        ) from None
    if not lines or not lines[0].strip():
        raise VaultConfigurationError(f"{prefix}PIN_FILE {path} is empty; its first line is the user PIN")
    return lines[0].strip()


# --- libraries and sessions, one per (library, token) and process -----------------------------

_registry_lock = threading.Lock()
_library_lock = threading.Lock()
_libraries: dict[str, tuple[Any, int]] = {}  # path -> (lib, pid that initialised it)
_tokens: dict[tuple[str, str], _TokenSession] = {}


def _library(config: Pkcs11Config) -> Any:
    """The loaded module, initialised in this process (a forked child re-initialises it once)."""
    pkcs11 = _pkcs11()
    with _library_lock:
        entry = _libraries.get(config.library)
        if entry is not None:
            lib, pid = entry
            if pid != os.getpid():
                # the parent's library state is not ours (PKCS#11 v2.40 §6.7.7)
                lib.reinitialize()
                _libraries[config.library] = (lib, os.getpid())
            return lib
        try:
            lib = pkcs11.lib(config.library)
        except pkcs11.PKCS11Error as exc:
            # the loader's message names the file and the OS reason; no secret can be in it
            raise VaultConfigurationError(
                f"{config.var('LIBRARY')}={config.library} cannot be loaded as a PKCS#11 module: {exc}"
            ) from None
        _libraries[config.library] = (lib, os.getpid())
        return lib


class _TokenSession:
    """One logged-in session on one token, used under a lock; re-opened after a fork or a drop."""

    def __init__(self, config: Pkcs11Config) -> None:
        self.library = config.library
        self.token_label = config.token
        self._pin = config.pin
        self.lock = threading.RLock()
        self._session: Any = None
        self._pid = 0
        self.generation = 0
        self.serial = ""
        self._open(config)

    def _open(self, config: Pkcs11Config) -> None:
        pkcs11 = _pkcs11()
        lib = _library(config)
        if self._session is not None and self._pid == os.getpid():
            with contextlib.suppress(pkcs11.PKCS11Error):  # a dead session may not close
                self._session.close()
            self._session = None
        try:
            token = lib.get_token(token_label=config.token)
        except pkcs11.NoSuchToken:
            labels = sorted({t.label for t in lib.get_tokens() if t.label})
            raise VaultConfigurationError(
                f"{config.var('TOKEN')}={config.token!r}: no such token in {config.library} "
                f"(tokens present: {', '.join(map(repr, labels)) or 'none'})"
            ) from None
        except pkcs11.MultipleTokensReturned:
            raise VaultConfigurationError(
                f"{config.var('TOKEN')}={config.token!r} matches several tokens; give each token a unique label"
            ) from None
        try:
            session = token.open(rw=True, user_pin=config.pin)
        except (pkcs11.PinIncorrect, pkcs11.PinInvalid, pkcs11.PinLenRange):
            raise VaultConfigurationError(
                f"the token {config.token!r} refused the user PIN: correct {config.var('PIN')} or {config.var('PIN_FILE')}"
            ) from None
        except pkcs11.PinLocked:
            raise VaultConfigurationError(
                f"the token {config.token!r} has locked its user PIN (too many wrong tries); its security "
                f"officer must reset it, then set {config.var('PIN')} or {config.var('PIN_FILE')}"
            ) from None
        except pkcs11.UserAlreadyLoggedIn:
            session = token.open(rw=True)
        except pkcs11.PKCS11Error as exc:
            raise VaultConfigurationError(
                f"cannot open a session on the token {config.token!r} ({type(exc).__name__})"
            ) from None
        self._session = session
        self.generation += 1  # object handles found on an older session are void
        self._pid = os.getpid()
        self.serial = str(
            token.serial.decode("ascii", "replace") if isinstance(token.serial, bytes) else token.serial
        )

    def check_pin(self, config: Pkcs11Config) -> None:
        # The token verified self._pin; another configuration naming the same token must agree.
        if not hmac.compare_digest(config.pin.encode(), self._pin.encode()):
            raise VaultConfigurationError(
                f"the token {config.token!r} refused the user PIN: correct {config.var('PIN')} or {config.var('PIN_FILE')}"
            )

    def run(self, config: Pkcs11Config, operation: Callable[[Any], T]) -> T:
        """``operation(session)`` under the lock; after a fork or a lost session, reconnect once."""
        pkcs11 = _pkcs11()
        lost = (
            pkcs11.SessionHandleInvalid,
            pkcs11.SessionClosed,
            pkcs11.DeviceRemoved,
            pkcs11.TokenNotPresent,
            pkcs11.UserNotLoggedIn,
            pkcs11.ObjectHandleInvalid,
            pkcs11.KeyHandleInvalid,
        )
        with self.lock:
            if self._pid != os.getpid():
                self._open(config)  # a forked child: log in again (``_library`` re-initialises)
            try:
                return operation(self._session)
            except lost:
                self._open(config)
                return operation(self._session)


def _token_session(config: Pkcs11Config) -> _TokenSession:
    with _registry_lock:
        key = (config.library, config.token)
        ts = _tokens.get(key)
        if ts is None:
            ts = _TokenSession(config)
            _tokens[key] = ts
        else:
            ts.check_pin(config)
        return ts


def _forget_after_fork() -> None:
    # Locks held by another thread at fork time would never be released in the child.
    global _registry_lock, _library_lock
    _registry_lock = threading.Lock()
    _library_lock = threading.Lock()
    for ts in _tokens.values():
        ts.lock = threading.RLock()


os.register_at_fork(after_in_child=_forget_after_fork)


def _find(session: Any, *, object_class: Any, label: str, key_type: Any = None) -> Any:
    pkcs11 = _pkcs11()
    template: dict[Any, Any] = {pkcs11.Attribute.CLASS: object_class, pkcs11.Attribute.LABEL: label}
    if key_type is not None:
        template[pkcs11.Attribute.KEY_TYPE] = key_type
    found = list(session.get_objects(template))
    if len(found) > 1:
        raise VaultConfigurationError(
            f"the token holds {len(found)} objects labelled {label!r}; labels must be unique"
        )
    return found[0] if found else None


def _key_id(kind: str, serial: str, label: str, cka_id: bytes) -> str:
    """A public, stable name: the token, the label and the object's CKA_ID, hashed (≤ 64 chars)."""
    material = "\x00".join([kind, serial, label]).encode() + b"\x00" + cka_id
    digest = hashlib.sha256(b"tessera-pkcs11-key-id\x00" + material).hexdigest()
    return f"pkcs11:{digest[:16]}"


# --- the master key ----------------------------------------------------------------------------


class Pkcs11MasterKey:
    """A vault master key that never leaves the token: AES-256-GCM inside it."""

    def __init__(self, config: Pkcs11Config) -> None:
        pkcs11 = _pkcs11()
        self._config = config
        self._ts = _token_session(config)
        self._handle: tuple[int, Any] | None = None
        A = pkcs11.Attribute

        def describe(session: Any) -> tuple[bytes, bool, bool, int]:
            key = _find(session, object_class=pkcs11.ObjectClass.SECRET_KEY, label=config.key_label)
            if key is None:
                raise VaultConfigurationError(
                    f"the token {config.token!r} holds no secret key labelled {config.key_label!r} "
                    f"({config.var('KEY_LABEL')}); create it with `manage.py vault_pkcs11_init --master-key`"
                )
            return key[A.ID] or b"", bool(key[A.SENSITIVE]), bool(key[A.EXTRACTABLE]), int(key[A.VALUE_LEN])

        cka_id, sensitive, extractable, length = self._ts.run(config, describe)
        if length != 32 or not sensitive or extractable:
            raise VaultConfigurationError(
                f"the key {config.key_label!r} ({config.var('KEY_LABEL')}) must be a sensitive, non-extractable "
                "AES-256 key; create one with `manage.py vault_pkcs11_init --master-key` under a new label"
            )
        self._key_id = _key_id("aes-master", self._ts.serial, config.key_label, cka_id)

    @property
    def key_id(self) -> str:
        return self._key_id

    def _key(self, session: Any) -> Any:
        """The key object, found once per session (called under the token's lock)."""
        pkcs11 = _pkcs11()
        if self._handle is not None and self._handle[0] == self._ts.generation:
            return self._handle[1]
        key = _find(session, object_class=pkcs11.ObjectClass.SECRET_KEY, label=self._config.key_label)
        if key is None:
            raise VaultError("The vault's master key is no longer in the token.")
        self._handle = (self._ts.generation, key)
        return key

    def wrap(self, data_key: bytes, *, aad: bytes) -> bytes:
        pkcs11 = _pkcs11()
        nonce = os.urandom(NONCE_BYTES)
        params = pkcs11.GCMParams(nonce, bytes(aad), TAG_BYTES * 8)

        def op(session: Any) -> bytes:
            return self._key(session).encrypt(
                bytes(data_key), mechanism=pkcs11.Mechanism.AES_GCM, mechanism_param=params
            )

        try:
            return nonce + self._ts.run(self._config, op)
        except pkcs11.PKCS11Error as exc:
            raise VaultError(f"The token could not wrap a data key ({type(exc).__name__}).") from None

    def unwrap(self, wrapped: bytes, *, aad: bytes) -> bytes:
        pkcs11 = _pkcs11()
        wrapped = bytes(wrapped)
        if len(wrapped) < NONCE_BYTES + TAG_BYTES:
            raise VaultError("The organisation's data key cannot be unwrapped by this master key.")
        params = pkcs11.GCMParams(wrapped[:NONCE_BYTES], bytes(aad), TAG_BYTES * 8)

        def op(session: Any) -> bytes:
            return self._key(session).decrypt(
                wrapped[NONCE_BYTES:], mechanism=pkcs11.Mechanism.AES_GCM, mechanism_param=params
            )

        try:
            return bytes(self._ts.run(self._config, op))
        except pkcs11.PKCS11Error:
            # a wrong tag, another key, a wrong AAD: SoftHSMv2 says CKR_ENCRYPTED_DATA_INVALID or
            # CKR_GENERAL_ERROR, others differ; all mean the same here
            raise VaultError("The organisation's data key cannot be unwrapped by this master key.") from None

    def __repr__(self) -> str:
        return f"Pkcs11MasterKey({self._key_id})"


def pkcs11_backend() -> Pkcs11MasterKey:
    """``TESSERA_VAULT_BACKEND=pkcs11``: the master key from ``TESSERA_PKCS11_*``."""
    return Pkcs11MasterKey(Pkcs11Config.from_env())


def new_pkcs11_backend() -> Pkcs11MasterKey:
    """A rewrap's target: ``TESSERA_VAULT_NEW_PKCS11_*``, library/token/PIN defaulting to the current."""
    return Pkcs11MasterKey(Pkcs11Config.from_env(prefix=NEW_PREFIX, fallback_prefix=PREFIX))


# --- the CA's signing key ----------------------------------------------------------------------


def _point_from_ec_point(value: bytes) -> bytes:
    """CKA_EC_POINT is a DER OCTET STRING around the X9.62 point (some tokens omit the wrapper)."""
    if len(value) == 65 and value[0] == 0x04:
        return value
    if len(value) == 67 and value[0] == 0x04 and value[1] == 65:
        return value[2:]
    raise VaultConfigurationError("the token's EC public key is not an uncompressed P-256 point")


class Pkcs11Signer:
    """An ECDSA P-256 signer whose private key stays in the token (for ``keys.signing``)."""

    def __init__(self, config: Pkcs11Config, label: str) -> None:
        pkcs11 = _pkcs11()
        self._config = config
        self._label = label
        self._ts = _token_session(config)
        self._handle: tuple[int, Any] | None = None
        A = pkcs11.Attribute

        def describe(session: Any) -> tuple[bytes, bytes]:
            private = _find(
                session, object_class=pkcs11.ObjectClass.PRIVATE_KEY, label=label, key_type=pkcs11.KeyType.EC
            )
            public = _find(
                session, object_class=pkcs11.ObjectClass.PUBLIC_KEY, label=label, key_type=pkcs11.KeyType.EC
            )
            if private is None or public is None:
                raise VaultConfigurationError(
                    f"the token {config.token!r} holds no EC key pair labelled {label!r}; create it with "
                    f"`manage.py vault_pkcs11_init --ca-key {label}`"
                )
            if private[A.EXTRACTABLE] or not private[A.SENSITIVE]:
                raise VaultConfigurationError(f"the private key {label!r} is extractable; create a new one")
            return bytes(public[A.EC_POINT]), private[A.ID] or b""

        ec_point, cka_id = self._ts.run(config, describe)
        try:
            self._public = ec.EllipticCurvePublicKey.from_encoded_point(
                ec.SECP256R1(), _point_from_ec_point(ec_point)
            )
        except ValueError:
            raise VaultConfigurationError(f"the key pair {label!r} is not on P-256") from None
        self.key_id = _key_id("ec-signer", self._ts.serial, label, cka_id)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    def sign(self, data: bytes) -> bytes:
        """DER ECDSA-with-SHA-256 over ``data``, computed by the token."""
        pkcs11 = _pkcs11()
        digest = hashes.Hash(hashes.SHA256())
        digest.update(bytes(data))
        h = digest.finalize()

        def op(session: Any) -> bytes:
            if self._handle is not None and self._handle[0] == self._ts.generation:
                private = self._handle[1]
            else:
                private = _find(
                    session,
                    object_class=pkcs11.ObjectClass.PRIVATE_KEY,
                    label=self._label,
                    key_type=pkcs11.KeyType.EC,
                )
                if private is None:
                    raise VaultError("The signing key is no longer in the token.")
                self._handle = (self._ts.generation, private)
            return bytes(private.sign(h, mechanism=pkcs11.Mechanism.ECDSA))

        try:
            raw = self._ts.run(self._config, op)
        except pkcs11.PKCS11Error as exc:
            raise VaultError(f"The token could not sign ({type(exc).__name__}).") from None
        if len(raw) != 64:
            raise VaultError("The token's ECDSA signature is not 64 bytes (r‖s on P-256).")
        return encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))

    def __repr__(self) -> str:
        return f"Pkcs11Signer({self.key_id})"


def pkcs11_signer(
    label: str = DEFAULT_CA_KEY_LABEL, environ: Mapping[str, str] | None = None
) -> Pkcs11Signer:
    """The CA's signer from ``TESSERA_PKCS11_*`` and a key pair label."""
    return Pkcs11Signer(Pkcs11Config.from_env(environ), label)


# --- creating keys (manage.py vault_pkcs11_init) -----------------------------------------------


def create_master_key(config: Pkcs11Config) -> str:
    """Generate the AES-256 master key in the token; refuse if the label is taken. Returns its key_id."""
    pkcs11 = _pkcs11()
    A = pkcs11.Attribute
    ts = _token_session(config)

    def op(session: Any) -> bytes:
        if _find(session, object_class=pkcs11.ObjectClass.SECRET_KEY, label=config.key_label) is not None:
            raise VaultConfigurationError(
                f"the token {config.token!r} already holds a key labelled {config.key_label!r}; keys are never "
                f"overwritten — choose another {config.var('KEY_LABEL')}"
            )
        cka_id = os.urandom(KEY_ID_BYTES)
        session.generate_key(
            pkcs11.KeyType.AES,
            256,
            label=config.key_label,
            id=cka_id,
            store=True,
            template={
                A.TOKEN: True,
                A.PRIVATE: True,
                A.SENSITIVE: True,
                A.EXTRACTABLE: False,
                A.ENCRYPT: True,
                A.DECRYPT: True,
                A.WRAP: False,
                A.UNWRAP: False,
                A.SIGN: False,
                A.VERIFY: False,
                A.DERIVE: False,
                A.MODIFIABLE: False,
            },
        )
        return cka_id

    try:
        ts.run(config, op)
    except pkcs11.PKCS11Error as exc:
        raise VaultConfigurationError(
            f"the token could not create the master key ({type(exc).__name__})"
        ) from None
    return Pkcs11MasterKey(config).key_id


def create_signing_key(config: Pkcs11Config, label: str) -> Pkcs11Signer:
    """Generate an ECDSA P-256 key pair in the token (private key non-extractable)."""
    pkcs11 = _pkcs11()
    from pkcs11.util.ec import encode_named_curve_parameters

    A = pkcs11.Attribute
    ts = _token_session(config)

    def op(session: Any) -> None:
        for cls in (pkcs11.ObjectClass.PRIVATE_KEY, pkcs11.ObjectClass.PUBLIC_KEY):
            if _find(session, object_class=cls, label=label) is not None:
                raise VaultConfigurationError(
                    f"the token {config.token!r} already holds a key labelled {label!r}; keys are never overwritten"
                )
        params = session.create_domain_parameters(
            pkcs11.KeyType.EC, {A.EC_PARAMS: encode_named_curve_parameters("1.2.840.10045.3.1.7")}, local=True
        )
        cka_id = os.urandom(KEY_ID_BYTES)
        params.generate_keypair(
            store=True,
            label=label,
            id=cka_id,
            public_template={A.TOKEN: True, A.VERIFY: True},
            private_template={
                A.TOKEN: True,
                A.PRIVATE: True,
                A.SENSITIVE: True,
                A.EXTRACTABLE: False,
                A.SIGN: True,
                A.DERIVE: False,
                A.MODIFIABLE: False,
            },
        )

    try:
        ts.run(config, op)
    except pkcs11.PKCS11Error as exc:
        raise VaultConfigurationError(
            f"the token could not create the key pair ({type(exc).__name__})"
        ) from None
    return Pkcs11Signer(config, label)


__all__ = [
    "Pkcs11Config",
    "Pkcs11MasterKey",
    "Pkcs11Signer",
    "create_master_key",
    "create_signing_key",
    "new_pkcs11_backend",
    "pkcs11_backend",
    "pkcs11_signer",
]
