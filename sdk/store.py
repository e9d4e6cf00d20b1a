"""The provider's key store: its OCE key, its certificate, the pinned CA root, its SCP03 key sets.

A store is a directory (mode 0700) of files (mode 0600), written atomically::

    store.json           what the store is: backend, KDF parameters, PKCS#11 labels, server config
    oce-key.pem          (file backend) the OCE private key, PKCS#8 PEM, encrypted with the passphrase
    oce-certificate.json the OCE certificate from the CA (DER, GP 7F21 form, chain) — public
    ca-root.der          the pinned CA root certificate — public
    counters.json        the last key-loading counter used per (SE, SD)
    keysets/<SE>-<SD>-<KVN>.json  one SCP03 key set: status, KCVs, counter, expected receipt, and the
                         keys sealed (AES-256-GCM) under the store's sealing key

Two backends:

- ``file``: the sealing key is derived from the passphrase (env ``TESSERA_PROVIDER_PASSPHRASE``)
  with scrypt and a per-store salt; the OCE key PEM is encrypted with the same passphrase. A store
  created with ``passphrase=None`` (``init --no-passphrase``) keeps the OCE PEM in the clear and
  seals key sets under a key stored beside them, i.e. relies on file permissions only; ``store.json``
  says so (``"encrypted": false``).
- ``pkcs11``: the OCE key pair is generated in the token (private half sensitive, not extractable;
  it signs inside the token) and the sealing key is an AES-256 secret key in the token, not
  extractable: key sets are sealed and unsealed by the token (CKM_AES_GCM). The SCP03 key bytes are
  drawn from the token's generator. They must exist in this process while a package is built or a
  session runs (gp.keyload and gp.scp03 compute with them), and nowhere else in the clear. PIN from
  ``TESSERA_PROVIDER_PKCS11_PIN`` or the first line of ``TESSERA_PROVIDER_PKCS11_PIN_FILE``.

Every failure is a :class:`~sdk.errors.StoreError` naming the file or setting, never a secret.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from sdk.errors import StoreError

__all__ = [
    "KEYSET_ACTIVE",
    "KEYSET_FAILED",
    "KEYSET_PENDING",
    "KeySetRecord",
    "KeyStore",
    "PASSPHRASE_ENV",
    "PIN_ENV",
    "PIN_FILE_ENV",
]

PASSPHRASE_ENV = "TESSERA_PROVIDER_PASSPHRASE"
PIN_ENV = "TESSERA_PROVIDER_PKCS11_PIN"
PIN_FILE_ENV = "TESSERA_PROVIDER_PKCS11_PIN_FILE"
STORE_FILE = "store.json"
OCE_KEY_FILE = "oce-key.pem"
CERTIFICATE_FILE = "oce-certificate.json"
ROOT_FILE = "ca-root.der"
COUNTERS_FILE = "counters.json"
KEYSETS_DIR = "keysets"
STORE_VERSION = 1
OCE_LABEL = "tessera-provider-oce"
SEAL_LABEL = "tessera-provider-seal"
KEYSET_PENDING = "pending"
KEYSET_ACTIVE = "active"
KEYSET_FAILED = "failed"
_NONCE = 12
_CHECK = b"tessera-provider-store-check"
_SCRYPT = {"n": 2**15, "r": 8, "p": 1}
_HEX = re.compile(r"^[0-9A-F]+$")


# --- files -------------------------------------------------------------------------------------


def _write(path: Path, data: bytes) -> None:
    """Atomically write ``data`` with mode 0600 (a temporary file in the same directory, renamed)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _read(path: Path, what: str) -> bytes:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise StoreError(f"{what} is missing: {path}", code="store_incomplete") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise StoreError(
            f"{path} is readable by others (mode {stat.S_IMODE(mode):o}); chmod 600 it",
            code="store_permissions",
        )
    try:
        return path.read_bytes()
    except OSError as e:
        raise StoreError(f"{what} cannot be read: {path} ({e.strerror})", code="store_unreadable") from None


def _read_json(path: Path, what: str) -> dict[str, Any]:
    raw = _read(path, what)
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise StoreError(f"{what} is corrupt (not JSON): {path}", code="store_corrupt") from None
    if not isinstance(value, dict):
        raise StoreError(f"{what} is corrupt (not a JSON object): {path}", code="store_corrupt")
    return value


def _dump(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: Any, what: str) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except ValueError:
        raise StoreError(f"{what} is corrupt (bad base64)", code="store_corrupt") from None


# --- PKCS#11 -----------------------------------------------------------------------------------


def _pkcs11() -> Any:
    try:
        import pkcs11
    except ImportError:  # pragma: no cover - pinned in requirements.txt
        raise StoreError("a PKCS#11 store needs the python-pkcs11 package", code="pkcs11_missing") from None
    return pkcs11


def _pin(environ: Mapping[str, str]) -> str:
    if environ.get(PIN_ENV):
        return environ[PIN_ENV]
    if environ.get(PIN_FILE_ENV):
        try:
            return Path(environ[PIN_FILE_ENV]).read_text().splitlines()[0].strip()
        except (OSError, IndexError):
            raise StoreError(f"{PIN_FILE_ENV} names no readable PIN file", code="pkcs11_pin") from None
    raise StoreError(
        f"the PKCS#11 store needs the token's user PIN in {PIN_ENV} or {PIN_FILE_ENV}", code="pkcs11_pin"
    )


class _Token:
    """One logged-in session on the store's token, for this (short-lived) process."""

    def __init__(self, library: str, token: str, pin: str) -> None:
        pkcs11 = _pkcs11()
        try:
            lib = pkcs11.lib(library)
        except pkcs11.PKCS11Error as e:
            raise StoreError(
                f"{library} cannot be loaded as a PKCS#11 module: {e}", code="pkcs11_library"
            ) from None
        try:
            tok = lib.get_token(token_label=token)
        except pkcs11.NoSuchToken:
            raise StoreError(f"no token labelled {token!r} in {library}", code="pkcs11_token") from None
        except pkcs11.MultipleTokensReturned:
            raise StoreError(f"several tokens are labelled {token!r}", code="pkcs11_token") from None
        try:
            self.session = tok.open(rw=True, user_pin=pin)
        except (pkcs11.PinIncorrect, pkcs11.PinInvalid, pkcs11.PinLenRange):
            raise StoreError(f"the token {token!r} refused the PIN ({PIN_ENV})", code="pkcs11_pin") from None
        except pkcs11.UserAlreadyLoggedIn:  # another store object of this process logged in
            self.session = tok.open(rw=True)
        except pkcs11.PKCS11Error as e:
            raise StoreError(
                f"cannot log in to the token {token!r} ({type(e).__name__})", code="pkcs11_token"
            ) from None
        self.pkcs11 = pkcs11
        self.token = token

    def find(self, object_class: Any, label: str) -> Any:
        found = list(
            self.session.get_objects(
                {self.pkcs11.Attribute.CLASS: object_class, self.pkcs11.Attribute.LABEL: label}
            )
        )
        if len(found) > 1:
            raise StoreError(f"the token holds several objects labelled {label!r}", code="pkcs11_labels")
        return found[0] if found else None

    def require(self, object_class: Any, label: str) -> Any:
        obj = self.find(object_class, label)
        if obj is None:
            raise StoreError(
                f"the token {self.token!r} holds no key labelled {label!r}: not this store's token, or the key "
                "was deleted",
                code="pkcs11_key_missing",
            )
        return obj


class Pkcs11OceKey(ec.EllipticCurvePrivateKey):
    """The OCE private key in a token, usable where ``cryptography`` expects a P-256 private key
    for signing (gp.keyload signs the package with it). It cannot be exported or used for ECDH."""

    def __init__(self, token: _Token, label: str) -> None:
        A = token.pkcs11.Attribute
        self._token = token
        self._label = label
        private = token.require(token.pkcs11.ObjectClass.PRIVATE_KEY, label)
        public = token.require(token.pkcs11.ObjectClass.PUBLIC_KEY, label)
        if private[A.EXTRACTABLE] or not private[A.SENSITIVE]:
            raise StoreError(
                f"the token's key {label!r} is extractable; this store refuses it", code="pkcs11_extractable"
            )
        point = bytes(public[A.EC_POINT])
        if len(point) == 67 and point[:2] == b"\x04\x41":
            point = point[2:]
        try:
            self._public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        except ValueError:
            raise StoreError(
                f"the token's key {label!r} is not a P-256 key", code="pkcs11_key_type"
            ) from None
        self._private = private

    @property
    def curve(self) -> ec.EllipticCurve:
        return ec.SECP256R1()

    @property
    def key_size(self) -> int:
        return 256

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    def sign(self, data: Any, signature_algorithm: Any) -> bytes:
        """DER ECDSA over ``data`` with SHA-256 (the hash here, CKM_ECDSA in the token)."""
        if not isinstance(signature_algorithm, ec.ECDSA) or not isinstance(
            signature_algorithm.algorithm, hashes.SHA256
        ):
            raise StoreError("the token key signs ECDSA with SHA-256 only", code="pkcs11_mechanism")
        h = hashes.Hash(hashes.SHA256())
        h.update(bytes(data))
        try:
            raw = bytes(self._private.sign(h.finalize(), mechanism=self._token.pkcs11.Mechanism.ECDSA))
        except self._token.pkcs11.PKCS11Error as e:
            raise StoreError(f"the token could not sign ({type(e).__name__})", code="pkcs11_sign") from None
        return encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))

    def exchange(self, algorithm: Any, peer_public_key: Any) -> bytes:
        raise StoreError("the OCE key in the token is for signing only", code="pkcs11_mechanism")

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        raise StoreError("the OCE private key never leaves the token", code="not_extractable")

    def private_bytes(self, *args: Any, **kwargs: Any) -> bytes:
        raise StoreError("the OCE private key never leaves the token", code="not_extractable")

    def __copy__(self) -> Pkcs11OceKey:
        return self

    def __deepcopy__(self, memo: Any) -> Pkcs11OceKey:
        return self

    def __repr__(self) -> str:
        return f"Pkcs11OceKey({self._label!r})"


# --- key sets ----------------------------------------------------------------------------------


@dataclass
class KeySetRecord:
    """One SCP03 key set in the store; ``sealed`` holds the keys, encrypted."""

    se_id: str  # hex, upper case: the CASD certificate's subject identifier
    sd: str  # hex AID
    kvn: int
    key_length: int
    kcvs: list[str]
    status: str
    device: str = ""
    counter: int = 0
    expected_receipt: str = ""
    job: str = ""
    error: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0
    scp03_counter: int | None = None  # the sequence counter the next INITIALIZE UPDATE uses, if known
    i_param: int | None = None
    sealed: str = ""

    @property
    def name(self) -> str:
        return keyset_name(self.se_id, self.sd, self.kvn)

    def public(self) -> dict[str, Any]:
        """Everything but the sealed keys (what the CLI prints)."""
        out = {k: v for k, v in self.__dict__.items() if k != "sealed"}
        out["kvn"] = f"{self.kvn:02X}"
        return out


def keyset_name(se_id: str, sd: str, kvn: int) -> str:
    return f"{se_id.upper()}-{sd.upper()}-{kvn:02X}"


def _record(raw: dict[str, Any], path: Path) -> KeySetRecord:
    try:
        rec = KeySetRecord(**raw)
    except TypeError:
        raise StoreError(
            f"key set file is corrupt (unexpected fields): {path}", code="store_corrupt"
        ) from None
    if not (
        isinstance(rec.kvn, int)
        and 1 <= rec.kvn <= 0x7F
        and rec.key_length in (16, 24, 32)
        and isinstance(rec.se_id, str)
        and _HEX.match(rec.se_id or "-")
        and isinstance(rec.sd, str)
        and _HEX.match(rec.sd or "-")
        and rec.status in (KEYSET_PENDING, KEYSET_ACTIVE, KEYSET_FAILED)
    ):
        raise StoreError(f"key set file is corrupt: {path}", code="store_corrupt")
    return rec


# --- the store ---------------------------------------------------------------------------------


class KeyStore:
    """A provider key store (module docstring). Open with :meth:`open`, create with :meth:`create`."""

    def __init__(self, path: Path, meta: dict[str, Any], environ: Mapping[str, str]) -> None:
        self.path = path
        self.meta = meta
        self._environ = environ
        self._seal_key: bytes | None = None
        self._token: _Token | None = None
        self._oce: ec.EllipticCurvePrivateKey | None = None

    # -- creating and opening --

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        passphrase: str | None,
        pkcs11: Mapping[str, str] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> KeyStore:
        """A new store with a fresh OCE key. ``pkcs11``: ``{"library", "token"}`` (the PIN from the
        environment); else a file store, encrypted with ``passphrase`` unless it is ``None``.
        Refuses a directory that already holds a store."""
        environ = os.environ if environ is None else environ
        root = Path(path)
        if (root / STORE_FILE).exists():
            raise StoreError(
                f"{root} already holds a key store; keys are never overwritten", code="store_exists"
            )
        if root.exists() and not root.is_dir():
            raise StoreError(f"{root} is not a directory", code="store_path")
        if passphrase is not None and len(passphrase) < 8:
            raise StoreError(
                f"the passphrase ({PASSPHRASE_ENV}) must have at least 8 characters", code="weak_passphrase"
            )
        try:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            root.chmod(0o700)
            (root / KEYSETS_DIR).mkdir(mode=0o700, exist_ok=True)
        except OSError as e:
            raise StoreError(
                f"cannot create the store directory {root} ({e.strerror})", code="store_path"
            ) from None
        meta: dict[str, Any] = {"version": STORE_VERSION, "created_at": time.time()}
        store = cls(root, meta, environ)
        if pkcs11 is not None:
            meta.update(
                backend="pkcs11",
                encrypted=True,
                pkcs11={
                    "library": pkcs11["library"],
                    "token": pkcs11["token"],
                    "oce_label": OCE_LABEL,
                    "seal_label": SEAL_LABEL,
                },
            )
            store._create_token_keys()
        else:
            meta.update(backend="file", encrypted=passphrase is not None)
            salt = os.urandom(16)
            meta["kdf"] = {"name": "scrypt", "salt": _b64(salt), **_SCRYPT}
            if passphrase is None:
                meta["seal_key"] = _b64(os.urandom(32))  # no passphrase: file permissions only
            key = ec.generate_private_key(ec.SECP256R1())
            enc: serialization.KeySerializationEncryption = (
                serialization.BestAvailableEncryption(passphrase.encode())
                if passphrase is not None
                else serialization.NoEncryption()
            )
            _write(
                root / OCE_KEY_FILE,
                key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc),
            )
            store._seal_key = store._derive(passphrase)
            store._oce = key
        meta["check"] = _b64(store.seal("store-check", _CHECK))
        _write(root / COUNTERS_FILE, _dump({}))
        _write(root / STORE_FILE, _dump(meta))
        return store

    @classmethod
    def open(cls, path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> KeyStore:
        """An existing store; checks its shape (secrets are unlocked on first use)."""
        environ = os.environ if environ is None else environ
        root = Path(path)
        if not (root / STORE_FILE).exists():
            raise StoreError(
                f"no key store at {root} (create one with `tessera-provider init --store {root}`)",
                code="no_store",
            )
        st = root.stat()
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise StoreError(
                f"the store directory {root} is accessible to others; chmod 700 it", code="store_permissions"
            )
        meta = _read_json(root / STORE_FILE, "the store description")
        if (
            meta.get("version") != STORE_VERSION
            or meta.get("backend") not in ("file", "pkcs11")
            or "check" not in meta
        ):
            raise StoreError(
                f"the store description is corrupt or of an unknown version: {root / STORE_FILE}",
                code="store_corrupt",
            )
        if meta["backend"] == "file" and not isinstance(meta.get("kdf"), dict):
            raise StoreError(
                f"the store description is corrupt (no KDF): {root / STORE_FILE}", code="store_corrupt"
            )
        if meta["backend"] == "pkcs11" and not isinstance(meta.get("pkcs11"), dict):
            raise StoreError(
                f"the store description is corrupt (no token): {root / STORE_FILE}", code="store_corrupt"
            )
        return cls(root, meta, environ)

    @property
    def backend(self) -> str:
        return str(self.meta["backend"])

    # -- secrets --

    def _passphrase(self) -> str | None:
        if not self.meta.get("encrypted"):
            return None
        value = self._environ.get(PASSPHRASE_ENV)
        if not value:
            raise StoreError(f"the key store is encrypted: set {PASSPHRASE_ENV}", code="passphrase_missing")
        return value

    def _derive(self, passphrase: str | None) -> bytes:
        if passphrase is None:
            return _unb64(self.meta.get("seal_key", ""), "the store's sealing key")
        kdf = self.meta["kdf"]
        try:
            return Scrypt(
                salt=_unb64(kdf["salt"], "the KDF salt"),
                length=32,
                n=int(kdf["n"]),
                r=int(kdf["r"]),
                p=int(kdf["p"]),
            ).derive(passphrase.encode())
        except (KeyError, ValueError, TypeError):
            raise StoreError("the store's KDF parameters are corrupt", code="store_corrupt") from None

    def token(self) -> _Token:
        if self._token is None:
            cfg = self.meta["pkcs11"]
            self._token = _Token(str(cfg.get("library", "")), str(cfg.get("token", "")), _pin(self._environ))
        return self._token

    def _create_token_keys(self) -> None:
        tok = self.token()
        pkcs11 = tok.pkcs11
        A = pkcs11.Attribute
        from pkcs11.util.ec import encode_named_curve_parameters

        cfg = self.meta["pkcs11"]
        for cls_ in (
            pkcs11.ObjectClass.PRIVATE_KEY,
            pkcs11.ObjectClass.PUBLIC_KEY,
            pkcs11.ObjectClass.SECRET_KEY,
        ):
            for label in (cfg["oce_label"], cfg["seal_label"]):
                if tok.find(cls_, label) is not None:
                    raise StoreError(
                        f"the token {tok.token!r} already holds a key labelled {label!r}; keys are never overwritten",
                        code="store_exists",
                    )
        try:
            params = tok.session.create_domain_parameters(
                pkcs11.KeyType.EC,
                {A.EC_PARAMS: encode_named_curve_parameters("1.2.840.10045.3.1.7")},
                local=True,
            )
            params.generate_keypair(
                store=True,
                label=cfg["oce_label"],
                public_template={A.TOKEN: True, A.VERIFY: True},
                private_template={
                    A.TOKEN: True,
                    A.PRIVATE: True,
                    A.SENSITIVE: True,
                    A.EXTRACTABLE: False,
                    A.SIGN: True,
                    A.DERIVE: False,
                },
            )
            tok.session.generate_key(
                pkcs11.KeyType.AES,
                256,
                label=cfg["seal_label"],
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
                },
            )
        except pkcs11.PKCS11Error as e:
            raise StoreError(
                f"the token could not create the store's keys ({type(e).__name__})", code="pkcs11_generate"
            ) from None

    def unlock(self) -> None:
        """Check the passphrase or PIN now (a wrong one is a clear error, not a corrupt-file one)."""
        blob = _unb64(self.meta["check"], "the store check value")
        if (
            self.unseal("store-check", blob, wrong="the passphrase is wrong or the store is corrupt")
            != _CHECK
        ):
            raise StoreError("the store check value is wrong", code="store_corrupt")

    def seal(self, purpose: str, data: bytes) -> bytes:
        """AES-256-GCM under the store's sealing key (in the token for PKCS#11), ``purpose`` as AAD."""
        nonce = os.urandom(_NONCE)
        aad = purpose.encode()
        if self.backend == "pkcs11":
            tok = self.token()
            key = tok.require(tok.pkcs11.ObjectClass.SECRET_KEY, self.meta["pkcs11"]["seal_label"])
            params = tok.pkcs11.GCMParams(nonce, aad, 128)
            try:
                return nonce + bytes(
                    key.encrypt(bytes(data), mechanism=tok.pkcs11.Mechanism.AES_GCM, mechanism_param=params)
                )
            except tok.pkcs11.PKCS11Error as e:
                raise StoreError(
                    f"the token could not seal ({type(e).__name__})", code="pkcs11_seal"
                ) from None
        if self._seal_key is None:
            self._seal_key = self._derive(self._passphrase())
        return nonce + AESGCM(self._seal_key).encrypt(nonce, bytes(data), aad)

    def unseal(self, purpose: str, blob: bytes, *, wrong: str = "") -> bytes:
        aad = purpose.encode()
        problem = wrong or f"sealed data ({purpose}) does not open: corrupt, or another store's"
        if len(blob) < _NONCE + 16:
            raise StoreError(problem, code="store_corrupt")
        if self.backend == "pkcs11":
            tok = self.token()
            key = tok.require(tok.pkcs11.ObjectClass.SECRET_KEY, self.meta["pkcs11"]["seal_label"])
            params = tok.pkcs11.GCMParams(blob[:_NONCE], aad, 128)
            try:
                return bytes(
                    key.decrypt(blob[_NONCE:], mechanism=tok.pkcs11.Mechanism.AES_GCM, mechanism_param=params)
                )
            except tok.pkcs11.PKCS11Error:
                raise StoreError(problem, code="store_corrupt") from None
        if self._seal_key is None:
            self._seal_key = self._derive(self._passphrase())
        try:
            return AESGCM(self._seal_key).decrypt(blob[:_NONCE], blob[_NONCE:], aad)
        except InvalidTag:
            raise StoreError(problem, code="wrong_passphrase" if wrong else "store_corrupt") from None

    def random_bytes(self, n: int) -> bytes:
        """Key material: from the token's generator for PKCS#11, else the OS's."""
        if self.backend == "pkcs11":
            tok = self.token()
            try:
                return bytes(tok.session.generate_random(n * 8))
            except tok.pkcs11.PKCS11Error as e:
                raise StoreError(
                    f"the token could not generate random bytes ({type(e).__name__})", code="pkcs11_random"
                ) from None
        return os.urandom(n)

    # -- the OCE key --

    def oce_key(self) -> ec.EllipticCurvePrivateKey:
        """The OCE private key (a token-backed stand-in for PKCS#11)."""
        if self._oce is not None:
            return self._oce
        if self.backend == "pkcs11":
            self._oce = Pkcs11OceKey(self.token(), self.meta["pkcs11"]["oce_label"])
            return self._oce
        self.unlock()
        pem = _read(self.path / OCE_KEY_FILE, "the OCE private key")
        passphrase = self._passphrase()
        try:
            key = serialization.load_pem_private_key(
                pem, password=passphrase.encode() if passphrase else None
            )
        except (ValueError, TypeError):
            raise StoreError(
                f"the OCE private key file is corrupt or not this store's: {self.path / OCE_KEY_FILE}",
                code="store_corrupt",
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
            raise StoreError("the OCE private key is not a P-256 key", code="store_corrupt")
        self._oce = key
        return key

    def oce_public_key(self) -> ec.EllipticCurvePublicKey:
        return self.oce_key().public_key()

    def sign(self, data: bytes) -> bytes:
        """DER ECDSA-with-SHA-256 by the OCE key."""
        return self.oce_key().sign(bytes(data), ec.ECDSA(hashes.SHA256()))

    def sign_raw(self, data: bytes) -> bytes:
        """``r || s`` (64 bytes) ECDSA-with-SHA-256 by the OCE key."""
        r, s = decode_dss_signature(self.sign(data))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    # -- public material --

    def save_certificate(self, detail: Mapping[str, Any]) -> None:
        _write(self.path / CERTIFICATE_FILE, _dump(dict(detail)))

    def certificate(self) -> dict[str, Any]:
        if not (self.path / CERTIFICATE_FILE).exists():
            raise StoreError(
                "the store holds no OCE certificate yet: run `tessera-provider certificate request`",
                code="no_certificate",
            )
        return _read_json(self.path / CERTIFICATE_FILE, "the OCE certificate")

    def pin_root(self, der: bytes) -> None:
        _write(self.path / ROOT_FILE, bytes(der))

    def pinned_root(self) -> bytes:
        if not (self.path / ROOT_FILE).exists():
            raise StoreError("no CA root is pinned: run `tessera-provider ca pin`", code="no_pinned_root")
        return _read(self.path / ROOT_FILE, "the pinned CA root")

    def save_config(self, **values: str) -> None:
        self.meta.setdefault("server", {}).update({k: v for k, v in values.items() if v})
        _write(self.path / STORE_FILE, _dump(self.meta))

    def config(self) -> dict[str, str]:
        server = self.meta.get("server", {})
        return {k: str(v) for k, v in server.items()} if isinstance(server, dict) else {}

    # -- counters --

    def next_counter(self, se_id: str, sd: str) -> int:
        """Reserve the next key-loading counter for (SE, SD): above every one used before, and at
        least the clock in milliseconds (so a lost store still does not reuse a counter)."""
        path = self.path / COUNTERS_FILE
        counters = _read_json(path, "the counter table") if path.exists() else {}
        key = f"{se_id.upper()}/{sd.upper()}"
        last = counters.get(key, 0)
        if not isinstance(last, int) or last < 0:
            raise StoreError(f"the counter table is corrupt: {path}", code="store_corrupt")
        value = max(last + 1, int(time.time() * 1000))
        counters[key] = value
        _write(path, _dump(counters))
        return value

    def last_counter(self, se_id: str, sd: str) -> int:
        path = self.path / COUNTERS_FILE
        counters = _read_json(path, "the counter table") if path.exists() else {}
        return int(counters.get(f"{se_id.upper()}/{sd.upper()}", 0))

    # -- key sets --

    def _keyset_path(self, name: str) -> Path:
        return self.path / KEYSETS_DIR / f"{name}.json"

    def new_key_set(
        self, *, se_id: str, sd: str, kvn: int, key_length: int, device: str = ""
    ) -> tuple[KeySetRecord, tuple[bytes, bytes, bytes]]:
        """Generate and store (sealed, status ``pending``) a fresh SCP03 key set; returns it and the keys."""
        from gp.scp03 import kcv

        if key_length not in (16, 24, 32):
            raise StoreError("key length must be 16, 24 or 32", code="bad_key_length")
        keys = tuple(self.random_bytes(key_length) for _ in range(3))
        now = time.time()
        rec = KeySetRecord(
            se_id=se_id.upper(),
            sd=sd.upper(),
            kvn=kvn,
            key_length=key_length,
            kcvs=[kcv(k).hex().upper() for k in keys],
            status=KEYSET_PENDING,
            device=device,
            created_at=now,
            updated_at=now,
        )
        rec.sealed = _b64(self.seal(f"keyset:{rec.name}", b"".join(keys)))
        existing = self._keyset_path(rec.name)
        if existing.exists():
            old = self.key_set(se_id, sd, kvn)
            if old.status == KEYSET_ACTIVE:
                # keep the replaced active set, renamed, until the card confirms the new one
                _write(existing.with_name(f"{rec.name}.replaced-{int(now)}.json"), _read(existing, "key set"))
        self.save_key_set(rec)
        return rec, (keys[0], keys[1], keys[2])

    def save_key_set(self, rec: KeySetRecord) -> None:
        rec.updated_at = time.time()
        _write(self._keyset_path(rec.name), _dump(rec.__dict__))

    def key_set(self, se_id: str, sd: str, kvn: int) -> KeySetRecord:
        path = self._keyset_path(keyset_name(se_id, sd, kvn))
        if not path.exists():
            raise StoreError(
                f"no key set {kvn:02X} for SE {se_id.upper()} and SD {sd.upper()} in the store",
                code="no_key_set",
            )
        return _record(_read_json(path, "a key set"), path)

    def key_sets(self) -> list[KeySetRecord]:
        out = []
        for path in sorted((self.path / KEYSETS_DIR).glob("*.json")):
            if ".replaced-" in path.name:
                continue
            out.append(_record(_read_json(path, "a key set"), path))
        return out

    def keys_of(self, rec: KeySetRecord) -> tuple[bytes, bytes, bytes]:
        """The clear keys of a key set (checked against the recorded KCVs)."""
        from gp.scp03 import kcv

        raw = self.unseal(f"keyset:{rec.name}", _unb64(rec.sealed, "a key set"))
        n = rec.key_length
        if len(raw) != 3 * n:
            raise StoreError(f"key set {rec.name} is corrupt (length)", code="store_corrupt")
        keys = (raw[:n], raw[n : 2 * n], raw[2 * n :])
        if [kcv(k).hex().upper() for k in keys] != [c.upper() for c in rec.kcvs]:
            raise StoreError(f"key set {rec.name} is corrupt (KCV mismatch)", code="store_corrupt")
        return keys
