"""The agent's PKCS#11 token: OP-TEE's PKCS#11 TA on a gateway (``libckteec.so.0``), SoftHSMv2 in tests.

One :class:`Token` per process holds one logged-in read-write session (PKCS#11 logs in per
application) behind a lock, so the runner, the local API and the soft SE share it. Every call goes
through the OP-TEE profile (:mod:`agent.pkcs11.profile`) before it reaches the token, and every
template is passed *exactly* (python-pkcs11's default attributes are switched off), so what the
profile checked is what the token receives.

Objects (labels; docs/tee-bridge.md §2):

==========================  =================================================================
``tessera/identity``        device identity, EC P-256; private: SIGN, SENSITIVE, not EXTRACTABLE
``tessera/receive``         key reception, EC P-256; private: DERIVE only, SENSITIVE, not EXTRACTABLE
``tessera/state``           soft SE state key source: GENERIC_SECRET 32 B, SIGN (HMAC-SHA256) only
``tessera/sd/<AID>/<KVN>``  keys received from Tessera: AES, SIGN (CMAC) only, never extractable
==========================  =================================================================

Nothing here logs, returns or raises key material or the PIN.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import stat
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from agent.errors import BackendError, ConfigError
from agent.pkcs11 import profile as p
from gp import tokenwrap
from gp.sessionkeys import LABEL as SESSION_LABEL
from gp.sessionkeys import MASTER_KEY_KVN, SESSION_KEY_LENGTH, kdf_context

__all__ = [
    "IDENTITY_LABEL",
    "RECEIVE_LABEL",
    "STATE_LABEL",
    "ReceivedKey",
    "Token",
    "TokenError",
    "TokenProbeError",
    "TokenSigner",
    "finalize_libraries",
    "open_token",
    "read_pin_file",
]

IDENTITY_LABEL = "tessera/identity"
RECEIVE_LABEL = "tessera/receive"
STATE_LABEL = "tessera/state"
SD_PREFIX = "tessera/sd/"
STATE_CONTEXT = b"tessera-softcard-state/v1"
LOGIN_PIN = "pin"
LOGIN_TEE_IDENTITY = "tee-identity"


class TokenError(BackendError):
    """The token refused or failed an operation (the message names it; never a key)."""


class TokenProbeError(TokenError):
    """The token lacks a mechanism the agent needs."""


def _pkcs11() -> Any:
    if "pkcs11" not in sys.modules:
        _defer_util_modules()
    try:
        import pkcs11
    except ImportError:  # pragma: no cover - a dependency of the agent
        raise ConfigError("token: needs the python-pkcs11 package (pip install python-pkcs11)") from None
    util = sys.modules.get("pkcs11.util")
    for name in _DEFERRED:
        module = sys.modules.get(f"pkcs11.util.{name}")
        if util is not None and module is not None and not hasattr(util, name):
            setattr(util, name, module)
    return pkcs11


# python-pkcs11's package imports its key-encoding helpers (pkcs11.util.dh, dsa, ec, rsa, x509) and
# with them asn1crypto: ~3.5 MiB of an idle gateway agent's memory for functions the agent never
# calls (it reads EC points and writes templates itself). Each helper module is registered as a
# placeholder that executes the real module the first time anything in it is used — any caller
# still gets the genuine functions. Nothing is deferred when the layout is not the expected one.
_DEFERRED = ("dh", "dsa", "ec", "rsa", "x509")


def _defer_util_modules() -> None:
    import importlib.machinery
    import importlib.util
    import types

    top = importlib.util.find_spec("pkcs11")  # finds the package without executing it
    if top is None or not top.submodule_search_locations:
        return
    util_path = [os.path.join(location, "util") for location in top.submodule_search_locations]
    for name in _DEFERRED:
        full = f"pkcs11.util.{name}"
        spec = importlib.machinery.PathFinder.find_spec(full, util_path)
        if spec is None or spec.loader is None or full in sys.modules:
            continue
        module = importlib.util.module_from_spec(spec)

        def load(attr: str, module: types.ModuleType = module, spec: Any = spec) -> Any:
            del module.__dict__["__getattr__"]
            spec.loader.exec_module(module)
            return getattr(module, attr)

        module.__getattr__ = load  # type: ignore[method-assign]  # PEP 562: missing names only
        sys.modules[full] = module


def read_pin_file(path: Path) -> str:
    """The user PIN: first line of ``path``, a regular file nobody but its owner may read."""
    try:
        st = path.stat()
    except OSError as e:
        raise ConfigError(f"token.pin_file: {path} cannot be read: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"token.pin_file: {path} is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"token.pin_file: {path} has mode {mode:04o}, readable beyond its owner; run `chmod 600 {path}`"
        )
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"token.pin_file: {path} cannot be read ({type(e).__name__})") from None
    pin = lines[0].strip() if lines else ""
    if not pin:
        raise ConfigError(f"token.pin_file: {path} is empty")
    return pin


_LIBS: dict[str, Any] = {}
_LIBS_LOCK = threading.Lock()


def _library(module: str) -> Any:
    pkcs11 = _pkcs11()
    with _LIBS_LOCK:
        lib = _LIBS.get(module)
        if lib is None:
            if not os.path.isfile(module):
                raise ConfigError(f"token.module: {module} does not exist")
            try:
                lib = pkcs11.lib(module)
            except (RuntimeError, OSError, pkcs11.PKCS11Error) as e:
                raise ConfigError(f"token.module: {module} cannot be loaded ({type(e).__name__})") from None
            _LIBS[module] = lib
        return lib


def finalize_libraries() -> None:
    """C_Finalize every module this process loaded (after closing its tokens): the next
    :func:`open_token` initialises afresh (SoftHSM then re-reads ``SOFTHSM2_CONF``)."""
    with _LIBS_LOCK:
        for lib in _LIBS.values():
            with contextlib.suppress(Exception):
                lib.finalize()
        _LIBS.clear()


def _exact_mapper() -> Any:
    """An attribute mapper that adds nothing: the templates we write are the templates sent."""
    from pkcs11.attributes import AttributeMapper

    class _Exact(AttributeMapper):
        def public_key_template(self, **_: Any) -> dict[Any, Any]:
            return {}

        def private_key_template(self, **_: Any) -> dict[Any, Any]:
            return {}

        def secret_key_template(self, **_: Any) -> dict[Any, Any]:
            return {}

    return _Exact()


def _point(raw: bytes) -> bytes:
    """CKA_EC_POINT as the raw 65-byte point (tokens answer it DER-wrapped in an OCTET STRING)."""
    if len(raw) == 67 and raw[:2] == b"\x04\x41":
        raw = raw[2:]
    return tokenwrap.point_bytes(raw)


@dataclass(frozen=True, slots=True)
class ReceivedKey:
    label: str
    length: int


class TokenSigner:
    """The device identity in the token, as :func:`agent.httpsig.sign_request` takes it."""

    def __init__(self, token: Token, public_key: ec.EllipticCurvePublicKey) -> None:
        self._token = token
        self._public = public_key

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    def sign_raw(self, message: bytes) -> bytes:
        """ECDSA P-256 over SHA-256(message) as r‖s: SHA-256 here, raw CKM_ECDSA in the token."""
        return self._token.sign_identity_digest(hashlib.sha256(message).digest())


class Token:
    """A logged-in session to one token, guarded by the OP-TEE profile (module docstring)."""

    kind = "pkcs11"

    def __init__(
        self, token: Any, session: Any, *, module: str, profile: p.OpteeProfile | None = None
    ) -> None:
        self._pkcs11 = _pkcs11()
        self._token = token
        self._session = session
        self.module = module
        self.label = str(token.label)
        self.profile = profile or p.OpteeProfile()
        self._lock = threading.RLock()
        self._cached: dict[str, Any] = {}  # identity private key handle, device id (cleared on replace)

    # -- plumbing -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _call(self, what: str) -> Iterator[None]:
        pkcs11 = self._pkcs11
        with self._lock:
            try:
                yield
            except (TokenError, ConfigError, tokenwrap.EnvelopeError):
                raise
            except pkcs11.PKCS11Error as e:
                raise TokenError(f"token {self.label!r}: {what} failed ({type(e).__name__})") from None

    def close(self) -> None:
        with self._lock, contextlib.suppress(Exception):
            self._session.close()

    def _find(self, template: dict[Any, Any]) -> list[Any]:
        with self._call("C_FindObjects"):
            return list(self._session.get_objects(template))

    def _one(self, template: dict[Any, Any]) -> Any | None:
        found = self._find(template)
        if len(found) > 1:
            raise TokenError(f"token {self.label!r}: several objects match one label; remove the duplicates")
        return found[0] if found else None

    def _destroy(self, obj: Any) -> None:
        with self._call("C_DestroyObject"):
            obj.destroy()

    def _derive(self, base: Any, mechanism: Any, param: Any, template: dict[Any, Any]) -> Any:
        A = self._pkcs11.Attribute
        with self._call("C_DeriveKey"):
            base_encrypt = None
            if int(mechanism) != p.CKM_ECDH1_DERIVE:
                base_encrypt = bool(base[A.ENCRYPT])
            self.profile.derive(int(mechanism), param, template, base_encrypt)
            return base.derive_key(
                template[A.KEY_TYPE],
                template[A.VALUE_LEN] * 8,
                mechanism=mechanism,
                mechanism_param=param,
                template=template,
            )

    def _sign(self, key: Any, mechanism: Any, data: bytes) -> bytes:
        with self._call("C_Sign"):
            self.profile.sign(int(mechanism), data)
            return bytes(key.sign(data, mechanism=mechanism))

    def _copy(self, obj: Any, template: dict[Any, Any]) -> Any:
        with self._call("C_CopyObject"):
            self.profile.copy(template)
            return obj.copy(template)

    def _generate_secret(self, mechanism: Any, template: dict[Any, Any]) -> Any:
        A = self._pkcs11.Attribute
        with self._call("C_GenerateKey"):
            self.profile.generate(int(mechanism), template)
            return self._session.generate_key(
                template[A.KEY_TYPE], template[A.VALUE_LEN] * 8, mechanism=mechanism, template=template
            )

    def _generate_ec(self, label: str, *, sign: bool) -> tuple[Any, Any]:
        pk = self._pkcs11
        A, M = pk.Attribute, pk.Mechanism
        public = {
            A.CLASS: pk.ObjectClass.PUBLIC_KEY,
            A.KEY_TYPE: pk.KeyType.EC,
            A.EC_PARAMS: p.P256_PARAMS,
            A.TOKEN: True,
            A.PRIVATE: False,
            A.VERIFY: sign,
            A.LABEL: label,
        }
        private = {
            A.CLASS: pk.ObjectClass.PRIVATE_KEY,
            A.KEY_TYPE: pk.KeyType.EC,
            A.TOKEN: True,
            A.PRIVATE: True,
            A.SENSITIVE: True,
            A.EXTRACTABLE: False,
            A.SIGN: sign,
            A.DERIVE: not sign,
            A.DECRYPT: False,
            A.UNWRAP: False,
            A.LABEL: label,
        }
        with self._call("C_GenerateKeyPair"):
            self.profile.generate_pair(int(M.EC_KEY_PAIR_GEN), public, private)
            return self._session.generate_keypair(
                pk.KeyType.EC, mechanism=M.EC_KEY_PAIR_GEN, public_template=public, private_template=private
            )

    def _ec_pair(self, label: str) -> tuple[Any, Any] | None:
        pk = self._pkcs11
        A = pk.Attribute
        public = self._one({A.CLASS: pk.ObjectClass.PUBLIC_KEY, A.LABEL: label})
        private = self._one({A.CLASS: pk.ObjectClass.PRIVATE_KEY, A.LABEL: label})
        if public is None and private is None:
            return None
        if public is None or private is None:
            raise TokenError(f"token {self.label!r}: {label} is half there (public or private key missing)")
        return public, private

    def _public_point(self, public: Any) -> bytes:
        with self._call("C_GetAttributeValue"):
            raw = bytes(public[self._pkcs11.Attribute.EC_POINT])
        try:
            return _point(raw)
        except tokenwrap.EnvelopeError:
            raise TokenError(f"token {self.label!r}: an EC public key is not a P-256 point") from None

    # -- probe --------------------------------------------------------------------------------

    def mechanisms(self) -> set[int]:
        with self._call("C_GetMechanismList"):
            return {int(m) for m in self._token.slot.get_mechanisms()}

    def probe(self) -> None:
        """Refuse to run on a token lacking a mechanism the agent needs (:class:`TokenProbeError`)."""
        offered = self.mechanisms()
        missing: list[str] = []
        for mechanism, flag, purpose in p.REQUIRED_MECHANISMS:
            ok = mechanism in offered
            if ok:
                with self._call("C_GetMechanismInfo"):
                    info = self._token.slot.get_mechanism_info(self._pkcs11.Mechanism(mechanism))
                ok = bool(int(info.flags) & flag)
            if not ok:
                version = p.MINIMUM_OPTEE.get(mechanism)
                need = (
                    f"needs optee_os ≥ {version} for {p.NAMES[mechanism]}" if version else p.NAMES[mechanism]
                )
                missing.append(f"{need} ({purpose})")
        if missing:
            raise TokenProbeError(
                f"token {self.label!r} ({self.module}) lacks what the agent needs: " + "; ".join(missing)
            )

    # -- identity (request signatures) --------------------------------------------------------

    def create_identity(self, *, replace: bool = False) -> ec.EllipticCurvePublicKey:
        """Generate the device identity key pair in the token; refuses to replace one unless asked."""
        with self._lock:
            existing = self._ec_pair(IDENTITY_LABEL)
            if existing is not None:
                if not replace:
                    raise TokenError(f"token {self.label!r} already holds an identity key (use --force)")
                self._cached.clear()
                for obj in existing:
                    self._destroy(obj)
            public, _ = self._generate_ec(IDENTITY_LABEL, sign=True)
            return self._load_public(public)

    def _load_public(self, public: Any) -> ec.EllipticCurvePublicKey:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), self._public_point(public))

    def identity_public_key(self) -> ec.EllipticCurvePublicKey:
        pair = self._ec_pair(IDENTITY_LABEL)
        if pair is None:
            raise TokenError(f"token {self.label!r} holds no identity key (run `python -m agent init`)")
        return self._load_public(pair[0])

    def identity_signer(self) -> TokenSigner:
        return TokenSigner(self, self.identity_public_key())

    def sign_identity_digest(self, digest: bytes) -> bytes:
        with self._lock:
            private = self._cached.get("identity")
            try:
                if private is None:
                    raise TokenError("not looked up yet")
                signature = self._sign(private, self._pkcs11.Mechanism.ECDSA, digest)
            except TokenError:  # first use, or the key was replaced (init --force) behind our back
                self._cached.clear()
                pair = self._ec_pair(IDENTITY_LABEL)
                if pair is None:
                    raise TokenError(f"token {self.label!r} holds no identity key") from None
                private = self._cached["identity"] = pair[1]
                signature = self._sign(private, self._pkcs11.Mechanism.ECDSA, digest)
        if len(signature) != 64:
            raise TokenError(f"token {self.label!r}: ECDSA answered {len(signature)} bytes, not r‖s")
        return signature

    # -- key reception ------------------------------------------------------------------------

    def create_receive_key(self, *, replace: bool = False) -> bytes:
        """Generate the ECDH (derive-only) key pair; returns its 65-byte public point."""
        with self._lock:
            existing = self._ec_pair(RECEIVE_LABEL)
            if existing is not None:
                if not replace:
                    return self._public_point(existing[0])
                self._cached.clear()
                for obj in existing:
                    self._destroy(obj)
            public, _ = self._generate_ec(RECEIVE_LABEL, sign=False)
            return self._public_point(public)

    def receive_public_point(self) -> bytes:
        pair = self._ec_pair(RECEIVE_LABEL)
        if pair is None:
            raise TokenError(f"token {self.label!r} holds no receive key (run `python -m agent init`)")
        return self._public_point(pair[0])

    def device_id(self) -> bytes:
        """8 bytes naming this token to Tessera (the ``se_serial``): SHA-256 of the receive point."""
        with self._lock:
            if "device_id" not in self._cached:
                self._cached["device_id"] = hashlib.sha256(self.receive_public_point()).digest()[:8]
            return bytes(self._cached["device_id"])

    def identifiers(self) -> dict[str, str]:
        return {"se_serial": self.device_id().hex().upper(), "token_label": self.label}

    def _secret_template(
        self, label: str | None, length: int, *, key_type: Any, **flags: bool
    ) -> dict[Any, Any]:
        A = self._pkcs11.Attribute
        template: dict[Any, Any] = {
            A.CLASS: self._pkcs11.ObjectClass.SECRET_KEY,
            A.KEY_TYPE: key_type,
            A.VALUE_LEN: length,
            A.TOKEN: False,
            A.PRIVATE: True,
            A.SENSITIVE: True,
            A.EXTRACTABLE: False,
            A.ENCRYPT: False,
            A.DECRYPT: False,
            A.SIGN: False,
            A.VERIFY: False,
            A.WRAP: False,
            A.UNWRAP: False,
            A.DERIVE: False,
        }
        for name, value in flags.items():
            template[getattr(A, name.upper())] = value
        if label is not None:
            template[A.LABEL] = label
        return template

    def receive_key(self, envelope: tokenwrap.Envelope, *, replace: bool = False) -> ReceivedKey:
        """Derive the envelope's key into the token (module docs of :mod:`gp.tokenwrap`).

        The key becomes a token object labelled ``envelope.label`` only once its confirmation tag
        matched; otherwise :class:`~gp.tokenwrap.EnvelopeError` and no object is left, session or
        token. An existing key of that label is refused unless ``replace`` (then it is replaced
        only after the new one is confirmed).
        """
        pk = self._pkcs11
        A, M = pk.Attribute, pk.Mechanism
        label = envelope.label
        with self._lock:
            pair = self._ec_pair(RECEIVE_LABEL)
            if pair is None:
                raise TokenError(f"token {self.label!r} holds no receive key")
            previous = self._secret(label)
            if previous is not None and not replace:
                raise TokenError(f"token {self.label!r} already holds a key labelled {label}")
            q = self._public_point(pair[0])
            created: list[Any] = []
            try:
                chain = self._secret_template(None, 32, key_type=pk.KeyType.AES, derive=True)
                z = self._derive(pair[1], M.ECDH1_DERIVE, (pk.KDF.NULL, None, envelope.ephemeral), chain)
                created.append(z)
                kek = self._derive(
                    z, M.AES_ECB_ENCRYPT_DATA, tokenwrap.kek_input(envelope.ephemeral, q, label), chain
                )
                created.append(kek)
                target = self._secret_template(label, envelope.key_length, key_type=pk.KeyType.AES, sign=True)
                key = self._derive(kek, M.AES_ECB_ENCRYPT_DATA, envelope.wrapped, target)
                created.append(key)
                tag = self._sign(
                    key, M.AES_CMAC, tokenwrap.kc_message(envelope.ephemeral, q, label, envelope.wrapped)
                )
                if not hmac.compare_digest(tag, envelope.tag):
                    raise tokenwrap.EnvelopeError(
                        "key confirmation failed: the envelope was altered or is not for this device"
                    )
                if previous is not None:
                    self._destroy(previous)
                self._copy(key, {A.TOKEN: True})
            finally:
                for obj in reversed(created):
                    with contextlib.suppress(TokenError):
                        self._destroy(obj)
            return ReceivedKey(label, envelope.key_length)

    # -- received keys ------------------------------------------------------------------------

    def _secret(self, label: str) -> Any | None:
        pk = self._pkcs11
        A = pk.Attribute
        return self._one({A.CLASS: pk.ObjectClass.SECRET_KEY, A.LABEL: label, A.TOKEN: True})

    def secret_key(self, label: str) -> Any:
        """The token object (a handle, never its value) of a received key; TokenError if absent."""
        key = self._secret(label)
        if key is None:
            raise TokenError(f"token {self.label!r} holds no key labelled {label}")
        return key

    def has_key(self, label: str) -> bool:
        return self._secret(label) is not None

    def list_keys(self, prefix: str = SD_PREFIX) -> list[ReceivedKey]:
        pk = self._pkcs11
        A = pk.Attribute
        out = []
        for obj in self._find({A.CLASS: pk.ObjectClass.SECRET_KEY, A.TOKEN: True}):
            with self._call("C_GetAttributeValue"):
                label, length = str(obj[A.LABEL]), int(obj[A.VALUE_LEN])
            if label.startswith(prefix):
                out.append(ReceivedKey(label, length))
        return sorted(out, key=lambda k: k.label)

    def delete_key(self, label: str) -> bool:
        """Destroy the received key ``label``; False when there was none."""
        with self._lock:
            key = self._secret(label)
            if key is None:
                return False
            self._destroy(key)
            return True

    def cmac(self, label: str, data: bytes) -> bytes:
        """AES-CMAC of ``data`` under the received key ``label``, computed in the token."""
        return self._sign(self.secret_key(label), self._pkcs11.Mechanism.AES_CMAC, data)

    def derive_session_key(
        self, sd_aid: bytes, *, service: str, epoch: int, kvn: int = MASTER_KEY_KVN
    ) -> bytes:
        """docs/session-keys.md §2 in the token: one SP 800-108 counter-mode round = one C_Sign(CMAC).

        PRF input ``[1]₃₂ ‖ "tessera-session" ‖ 00 ‖ Context ‖ [128]₃₂`` with ``se_id`` = :meth:`device_id`;
        the master key is ``tessera/sd/<AID>/<KVN>``. The 16-byte result is the session key.
        """
        context = kdf_context(service=service, epoch=epoch, se_id=self.device_id())
        block = (
            (1).to_bytes(4, "big")
            + SESSION_LABEL
            + b"\x00"
            + context
            + (SESSION_KEY_LENGTH * 8).to_bytes(4, "big")
        )
        return self.cmac(tokenwrap.master_key_label(sd_aid, kvn), block)

    # -- the soft SE's state key --------------------------------------------------------------

    def state_key(self) -> bytes:
        """Key material for the soft SE's state file: HMAC-SHA256 in the token under ``tessera/state``.

        The HMAC key is created on first use (GENERIC_SECRET, 32 bytes, never extractable); without
        this token the soft SE's state cannot be decrypted.
        """
        pk = self._pkcs11
        with self._lock:
            key = self._secret(STATE_LABEL)
            if key is None:
                template = self._secret_template(
                    STATE_LABEL, 32, key_type=pk.KeyType.GENERIC_SECRET, sign=True, token=True
                )
                key = self._generate_secret(pk.Mechanism.GENERIC_SECRET_KEY_GEN, template)
            return self._sign(key, pk.Mechanism.SHA256_HMAC, STATE_CONTEXT)


def open_token(
    module: str | os.PathLike[str],
    label: str,
    *,
    pin: str | None = None,
    tee_identity: bool = False,
    profile: p.OpteeProfile | None = None,
) -> Token:
    """Log in to the token labelled ``label`` (never a slot number) of the PKCS#11 ``module``.

    ``pin`` (from :func:`read_pin_file`) or ``tee_identity`` (OP-TEE's TEE-identity login: an empty
    PIN on a token flagged CKF_PROTECTED_AUTHENTICATION_PATH).
    """
    pkcs11 = _pkcs11()
    module = str(module)
    lib = _library(module)
    if (pin is None) == (not tee_identity):
        raise ConfigError('token: give either a PIN (pin_file) or login = "tee-identity"')
    try:
        token = lib.get_token(token_label=label)
    except pkcs11.NoSuchToken:
        labels = []
        with contextlib.suppress(pkcs11.PKCS11Error):
            labels = [str(t.label) for t in lib.get_tokens()]
        raise ConfigError(
            f"token.label: no token labelled {label!r} in {module} (found: {', '.join(labels) or 'none'})"
        ) from None
    except pkcs11.MultipleTokensReturned:
        raise ConfigError(f"token.label: several tokens are labelled {label!r} in {module}") from None
    except pkcs11.PKCS11Error as e:
        raise TokenError(f"token {label!r}: cannot be listed ({type(e).__name__})") from None
    if tee_identity and not token.flags & pkcs11.TokenFlag.PROTECTED_AUTHENTICATION_PATH:
        raise ConfigError(
            f"token.login: token {label!r} has no protected authentication path, so no TEE-identity "
            "login (CFG_PKCS11_TA_AUTH_TEE_IDENTITY=y in optee_os); use pin_file"
        )
    try:
        session = token.open(
            rw=True,
            user_pin=pkcs11.PROTECTED_AUTH if tee_identity else pin,
            attribute_mapper=_exact_mapper(),
        )
    except pkcs11.PinIncorrect:
        raise ConfigError(f"token {label!r}: the PIN is incorrect") from None
    except pkcs11.PinLocked:
        raise ConfigError(f"token {label!r}: the user PIN is locked") from None
    except pkcs11.PKCS11Error as e:
        raise TokenError(f"token {label!r}: cannot log in ({type(e).__name__})") from None
    return Token(token, session, module=module, profile=profile)
