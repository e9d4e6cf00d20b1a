"""The agent's configuration: one TOML file, loaded into a frozen :class:`AgentConfig`.

Example (``python -m agent init`` writes one)::

    server_url = "https://portal.example.org"
    serial = "GW-0001"
    identity_key = "agent.identity.pem"        # relative paths are relative to this file
    backend = "soft:se.card"                   # soft:STATE_PATH | pcsc:READER_NAME
    journal = "agent.journal.sqlite"
    log_level = "INFO"                         # DEBUG | INFO | WARNING | ERROR
    ca_file = "/etc/tessera/ca.pem"            # optional: trust anchors for the portal's TLS

    [poll]
    min_s = 5.0             # the server's poll_after is clamped to [min_s, max_s]
    max_s = 3600.0
    backoff_base_s = 2.0    # after a failed exchange: full jitter in [0, min(cap, base·2^n)]
    backoff_cap_s = 600.0
    wait_s = 0.0            # long poll: let the portal hold an idle exchange up to this long for
                            # work (0 = plain polling; must stay below timeouts.read_s; at most 25)

    [timeouts]
    connect_s = 10.0
    read_s = 30.0

    [localapi]                                 # optional: session keys for on-device applications
    socket = "/run/tessera/agent.sock"         # a Unix socket, created with mode 0660
    group = "tessera-apps"                     # optional: the socket's group (default: the agent's)

    [[localapi.apps]]                          # one per local application, told apart by its uid
    name = "meter"                             # (SO_PEERCRED); it may ask for these services of
    uid = 1001                                 # this SD, nothing else (docs/session-keys.md §5)
    sd = "A000000151535001"
    services = ["meter.reading"]

    [token]                                    # optional: a PKCS#11 token (OP-TEE's TA, docs/tee-bridge.md)
    module = "/usr/lib/libckteec.so.0"         # the PKCS#11 module (SoftHSM in tests)
    label = "tessera"                          # the token's label (never a slot number)
    pin_file = "/etc/tessera/token.pin"        # the user PIN, first line; mode 0600 or stricter
    # login = "tee-identity"                   # instead of pin_file: OP-TEE's TEE-identity login
    oce_root = "agent.ca-root.der"             # optional: the CA root pinned at enrolment (`init
                                               # --ca-root`, `pin-ca-root`); the agent then checks
                                               # confidential envelopes' OCE signatures itself

With ``[token]``, the device identity key lives in the token (``identity_key`` must then be left
out), keys received from Tessera and the session keys derived from them stay in it, the soft SE's
state key comes from it (``backend = "soft:…"``), and ``backend = "pkcs11:LABEL"`` (the same label)
makes the token itself the device's key store instead of an SE. ``run`` probes the token's
mechanisms first and exits (code 3) naming any that is missing.

:func:`load_config` refuses every bad value with a :class:`ConfigError` naming the file and the
key: a missing or unparsable file, an unknown key, a wrong type, a URL that is not http(s), an
identity key file that is missing, unreadable, not an ECDSA P-256 private key, or readable by
anyone but its owner (mode looser than 0600), a PIN file readable beyond its owner.
"""

from __future__ import annotations

import json
import math
import os
import stat
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agent.errors import ConfigError
from agent.protocol import MAX_WAIT
from gp.errors import EncodeError
from gp.sessionkeys import check_service

__all__ = [
    "AgentConfig",
    "LocalApiApp",
    "LocalApiSettings",
    "PollSettings",
    "TokenSettings",
    "check_serial",
    "check_server_url",
    "Timeouts",
    "load_config",
    "load_identity",
    "load_identity_key",
    "write_config",
]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
BACKEND_KINDS = ("soft", "pcsc", "pkcs11")
TOKEN_LOGINS = ("pin", "tee-identity")


@dataclass(frozen=True, slots=True)
class PollSettings:
    min_s: float = 5.0
    max_s: float = 3600.0
    backoff_base_s: float = 2.0
    backoff_cap_s: float = 600.0
    wait_s: float = 0.0

    def clamp(self, delay: float) -> float:
        return min(max(delay, self.min_s), self.max_s)

    def after_long_poll(self, delay: float) -> float:
        """The delay after an empty answer to a long poll: the portal already held the exchange,
        so its ``poll_after`` (0 when it held it to the end) is honoured below ``min_s``."""
        return min(max(delay, 0.05), self.max_s)


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect_s: float = 10.0
    read_s: float = 30.0


@dataclass(frozen=True, slots=True)
class LocalApiApp:
    """One local application of the local API: who (uid) may ask for which SD's services."""

    name: str
    uid: int
    sd: str  # AID, upper-case hex
    services: frozenset[str]


@dataclass(frozen=True, slots=True)
class LocalApiSettings:
    socket: Path
    group: str | None = None
    apps: tuple[LocalApiApp, ...] = ()

    def app_for(self, uid: int) -> LocalApiApp | None:
        return next((a for a in self.apps if a.uid == uid), None)


@dataclass(frozen=True, slots=True)
class TokenSettings:
    """``[token]``: a PKCS#11 token found by its label; PIN from a file or OP-TEE's TEE identity."""

    module: Path
    label: str
    pin_file: Path | None = None
    login: str = "pin"  # "pin" (pin_file) | "tee-identity"
    # the CA root pinned at enrolment (DER), against which the agent itself verifies a
    # confidential envelope's OCE signature (agent.ocepin); None: the portal's check only
    oce_root: Path | None = None

    def to_toml_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"module": str(self.module), "label": self.label}
        if self.login == "tee-identity":
            out["login"] = self.login
        else:
            out["pin_file"] = str(self.pin_file)
        if self.oce_root is not None:
            out["oce_root"] = str(self.oce_root)
        return out


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """Everything the agent needs to run; paths are absolute once loaded."""

    server_url: str
    serial: str
    identity_key: Path | None  # None: the identity key is in the [token]
    backend: str
    journal: Path
    log_level: str = "INFO"
    ca_file: Path | None = None
    poll: PollSettings = field(default_factory=PollSettings)
    timeouts: Timeouts = field(default_factory=Timeouts)
    path: Path | None = None  # the file it was loaded from (not written)
    localapi: LocalApiSettings | None = None  # not written by write_config (init never sets it)
    token: TokenSettings | None = None

    @property
    def backend_kind(self) -> str:
        return self.backend.split(":", 1)[0]

    def to_toml_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"server_url": self.server_url, "serial": self.serial}
        if self.identity_key is not None:
            out["identity_key"] = str(self.identity_key)
        out |= {
            "backend": self.backend,
            "journal": str(self.journal),
            "log_level": self.log_level,
        }
        if self.ca_file is not None:
            out["ca_file"] = str(self.ca_file)
        out["poll"] = {
            "min_s": self.poll.min_s,
            "max_s": self.poll.max_s,
            "backoff_base_s": self.poll.backoff_base_s,
            "backoff_cap_s": self.poll.backoff_cap_s,
            "wait_s": self.poll.wait_s,
        }
        out["timeouts"] = {"connect_s": self.timeouts.connect_s, "read_s": self.timeouts.read_s}
        if self.token is not None:
            out["token"] = self.token.to_toml_dict()
        return out


_TOP = {
    "server_url",
    "serial",
    "identity_key",
    "backend",
    "journal",
    "log_level",
    "ca_file",
    "poll",
    "timeouts",
    "localapi",
    "token",
}
_REQUIRED = ("server_url", "serial", "backend", "journal")
_TOKEN = {"module", "label", "pin_file", "login", "oce_root"}
_POLL = {"min_s", "max_s", "backoff_base_s", "backoff_cap_s"}
_TIMEOUTS = {"connect_s", "read_s"}


class _Reader:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.base = path.parent

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.path}: {key}: {message}")

    def string(self, table: dict[str, Any], key: str, where: str = "") -> str:
        name = f"{where}.{key}" if where else key
        value = table[key]
        if not isinstance(value, str):
            raise self.fail(name, f"must be a string, got {type(value).__name__}")
        if not value.strip():
            raise self.fail(name, "must not be empty")
        return value

    def number(self, table: dict[str, Any], key: str, where: str, *, lo: float, hi: float) -> float:
        name = f"{where}.{key}"
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(name, f"must be a number of seconds, got {type(value).__name__}")
        if not (math.isfinite(value) and lo <= value <= hi):
            raise self.fail(name, f"must be between {lo:g} and {hi:g} seconds, got {value}")
        return float(value)

    def path_value(self, table: dict[str, Any], key: str) -> Path:
        return (self.base / os.path.expanduser(self.string(table, key))).resolve()

    def unknown(self, table: dict[str, Any], allowed: set[str], where: str = "") -> None:
        for key in table:
            if key not in allowed:
                name = f"{where}.{key}" if where else key
                raise self.fail(name, f"unknown key (allowed: {', '.join(sorted(allowed))})")

    def table(self, raw: dict[str, Any], key: str) -> dict[str, Any]:
        value = raw.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a table ([{key}]), got {type(value).__name__}")
        return value


def load_identity_key(path: Path, *, what: str = "identity_key") -> ec.EllipticCurvePrivateKey:
    """Load the device identity key: a PEM ECDSA P-256 private key readable by its owner only."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"{what}: {path} does not exist (run `python -m agent init`)") from None
    except OSError as e:
        raise ConfigError(f"{what}: {path} cannot be read: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{what}: {path} is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"{what}: {path} has mode {mode:04o}, readable beyond its owner; run `chmod 600 {path}`"
        )
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{what}: {path} cannot be read: {e.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"{what}: {path} is not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ConfigError(f"{what}: {path} is not an ECDSA P-256 key")
    return key


def check_server_url(url: str) -> str:
    """The portal base URL without a trailing slash; ConfigError("server_url: …") when unusable."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        raise ConfigError(f"server_url: not a URL: {url!r}") from None
    if parts.scheme not in ("https", "http"):
        raise ConfigError(
            f"server_url: must start with https:// (or http:// for a local portal), got {url!r}"
        )
    if not host:
        raise ConfigError(f"server_url: has no host: {url!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError("server_url: must not carry a query, fragment or credentials")
    return url.rstrip("/")


def check_serial(serial: str) -> str:
    if not serial.strip() or len(serial) > 64 or not serial.isprintable():
        raise ConfigError("serial: must be 1..64 printable characters")
    return serial


def _check_url(reader: _Reader, url: str) -> str:
    try:
        return check_server_url(url)
    except ConfigError as e:
        raise ConfigError(f"{reader.path}: {e}") from None


def _check_backend(reader: _Reader, spec: str) -> str:
    kind, sep, arg = spec.partition(":")
    if not sep or kind not in BACKEND_KINDS or not arg:
        raise reader.fail(
            "backend", f"must be soft:STATE_PATH, pcsc:READER_NAME or pkcs11:TOKEN_LABEL, got {spec!r}"
        )
    if kind == "soft":
        return f"soft:{(reader.base / os.path.expanduser(arg)).resolve()}"
    return spec


def _check_token(r: _Reader, table: dict[str, Any]) -> TokenSettings:
    """``[token]``: module path, label, and exactly one of pin_file / login = "tee-identity"."""
    r.unknown(table, _TOKEN, "token")
    for key in ("module", "label"):
        if key not in table:
            raise r.fail(f"token.{key}", "missing")
    module = r.path_value(table, "module")
    if not module.is_file():
        raise r.fail("token.module", f"{module} does not exist")
    label = r.string(table, "label", "token")
    if len(label.encode()) > 32:
        raise r.fail("token.label", "a PKCS#11 token label is at most 32 bytes")
    login = r.string(table, "login", "token") if "login" in table else "pin"
    if login not in TOKEN_LOGINS:
        raise r.fail("token.login", f"must be one of {', '.join(TOKEN_LOGINS)}")
    oce_root = None
    if "oce_root" in table:  # read when a confidential envelope arrives (agent.ocepin), not here
        oce_root = r.path_value(table, "oce_root")
        if not os.access(oce_root, os.R_OK):
            raise r.fail(
                "token.oce_root", f"{oce_root} is missing or unreadable (pin it with `agent pin-ca-root`)"
            )
    if login == "tee-identity":
        if "pin_file" in table:
            raise r.fail("token.pin_file", 'not with login = "tee-identity" (the TEE identity is the PIN)')
        return TokenSettings(module, label, None, login, oce_root)
    if "pin_file" not in table:
        raise r.fail("token.pin_file", 'missing (or set login = "tee-identity")')
    pin_file = r.path_value(table, "pin_file")
    from agent.pkcs11.token import read_pin_file

    try:
        read_pin_file(pin_file)
    except ConfigError as e:
        raise ConfigError(f"{r.path}: {e}") from None
    return TokenSettings(module, label, pin_file, login, oce_root)


_LOCALAPI = {"socket", "group", "apps"}
_LOCALAPI_APP = {"name", "uid", "sd", "services"}


def _check_localapi(r: _Reader, table: dict[str, Any]) -> LocalApiSettings:
    """``[localapi]``: the socket path, its group, and the applications with their grants."""
    r.unknown(table, _LOCALAPI, "localapi")
    if "socket" not in table:
        raise r.fail("localapi.socket", "missing")
    sock = r.path_value(table, "socket")
    if not sock.parent.is_dir():
        raise r.fail("localapi.socket", f"directory {sock.parent} does not exist")
    if len(os.fsencode(sock)) > 100:
        raise r.fail("localapi.socket", "path too long for a Unix socket (at most 100 bytes)")
    group = r.string(table, "group", "localapi") if "group" in table else None
    raw_apps = table.get("apps", [])
    if not isinstance(raw_apps, list):
        raise r.fail("localapi.apps", "must be an array of tables ([[localapi.apps]])")
    apps: list[LocalApiApp] = []
    for i, app in enumerate(raw_apps):
        where = f"localapi.apps[{i}]"
        if not isinstance(app, dict):
            raise r.fail(where, "must be a table")
        r.unknown(app, _LOCALAPI_APP, where)
        for key in _LOCALAPI_APP:
            if key not in app:
                raise r.fail(f"{where}.{key}", "missing")
        name = r.string(app, "name", where)
        uid = app["uid"]
        if isinstance(uid, bool) or not isinstance(uid, int) or not 0 <= uid < 2**32:
            raise r.fail(f"{where}.uid", "must be a numeric user id")
        if any(a.uid == uid for a in apps):
            raise r.fail(f"{where}.uid", f"uid {uid} is already another application's")
        sd = r.string(app, "sd", where).upper()
        try:
            if not 5 <= len(bytes.fromhex(sd)) <= 16:
                raise ValueError
        except ValueError:
            raise r.fail(f"{where}.sd", "must be an AID: 5 to 16 bytes in hex") from None
        services = app["services"]
        if not isinstance(services, list) or not services:
            raise r.fail(f"{where}.services", "must be a non-empty array of service names")
        for service in services:
            try:
                check_service(service)
            except EncodeError as e:
                raise r.fail(f"{where}.services", f"{service!r}: {e}") from None
        apps.append(LocalApiApp(name, uid, sd, frozenset(services)))
    return LocalApiSettings(sock, group, tuple(apps))


def load_config(path: str | os.PathLike[str]) -> AgentConfig:
    """Read and check the TOML configuration at ``path`` (see the module docstring)."""
    file = Path(path).expanduser().resolve()
    try:
        raw_bytes = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{file}: configuration file not found (create it with `python -m agent init`)"
        ) from None
    except OSError as e:
        raise ConfigError(f"{file}: cannot read the configuration file: {e.strerror}") from None
    try:
        raw = tomllib.loads(raw_bytes.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{file}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{file}: invalid TOML: {e}") from None
    r = _Reader(file)
    r.unknown(raw, _TOP)
    for key in _REQUIRED:
        if key not in raw:
            raise r.fail(key, "missing")
    server_url = _check_url(r, r.string(raw, "server_url"))
    serial = r.string(raw, "serial")
    try:
        check_serial(serial)
    except ConfigError as e:
        raise ConfigError(f"{file}: {e}") from None
    log_level = r.string(raw, "log_level").upper() if "log_level" in raw else "INFO"
    if log_level not in LOG_LEVELS:
        raise r.fail("log_level", f"must be one of {', '.join(LOG_LEVELS)}")
    backend = _check_backend(r, r.string(raw, "backend"))
    journal = r.path_value(raw, "journal")
    if not journal.parent.is_dir():
        raise r.fail("journal", f"directory {journal.parent} does not exist")
    ca_file = None
    if "ca_file" in raw:
        ca_file = r.path_value(raw, "ca_file")
        if not os.access(ca_file, os.R_OK):
            raise r.fail("ca_file", f"{ca_file} is missing or unreadable")

    poll_table = r.table(raw, "poll")
    r.unknown(poll_table, _POLL | {"wait_s"}, "poll")
    defaults = PollSettings()
    poll_values = {
        key: r.number(poll_table, key, "poll", lo=0.01, hi=86400.0)
        if key in poll_table
        else getattr(defaults, key)
        for key in _POLL
    }
    if "wait_s" in poll_table:
        poll_values["wait_s"] = r.number(poll_table, "wait_s", "poll", lo=0.0, hi=MAX_WAIT)
    poll = PollSettings(**poll_values)
    if poll.min_s > poll.max_s:
        raise r.fail("poll.min_s", f"({poll.min_s:g}) must not exceed poll.max_s ({poll.max_s:g})")
    timeouts_table = r.table(raw, "timeouts")
    r.unknown(timeouts_table, _TIMEOUTS, "timeouts")
    t_defaults = Timeouts()
    timeouts = Timeouts(
        **{
            key: r.number(timeouts_table, key, "timeouts", lo=0.1, hi=3600.0)
            if key in timeouts_table
            else getattr(t_defaults, key)
            for key in _TIMEOUTS
        }
    )
    if poll.wait_s and poll.wait_s + 5 > timeouts.read_s:
        raise r.fail(
            "poll.wait_s", f"({poll.wait_s:g}) must stay 5 s below timeouts.read_s ({timeouts.read_s:g})"
        )
    localapi = _check_localapi(r, r.table(raw, "localapi")) if "localapi" in raw else None
    token = _check_token(r, r.table(raw, "token")) if "token" in raw else None
    if backend.startswith("pkcs11:"):
        if token is None:
            raise r.fail("backend", "pkcs11:LABEL needs a [token] table")
        if backend != f"pkcs11:{token.label}":
            raise r.fail("backend", f"must name the [token]'s label: pkcs11:{token.label}")
    identity_key = None
    if token is not None:
        if "identity_key" in raw:
            raise r.fail("identity_key", "remove it: with [token] the identity key lives in the token")
    else:
        if "identity_key" not in raw:
            raise r.fail("identity_key", "missing")
        identity_key = r.path_value(raw, "identity_key")
        try:
            load_identity_key(identity_key)
        except ConfigError as e:
            raise ConfigError(f"{file}: {e}") from None
    return AgentConfig(
        server_url=server_url,
        serial=serial,
        identity_key=identity_key,
        backend=backend,
        journal=journal,
        log_level=log_level,
        ca_file=ca_file,
        poll=poll,
        timeouts=timeouts,
        path=file,
        localapi=localapi,
        token=token,
    )


def load_identity(config: AgentConfig) -> Any:
    """The device identity that signs requests: the PEM key of ``identity_key``, or — with
    ``[token]`` — the token's key as an :class:`agent.httpsig.Signer` (the token is opened and
    probed once per process: :func:`agent.pkcs11.runtime.token_for`)."""
    if config.identity_key is not None:
        return load_identity_key(config.identity_key)
    from agent.pkcs11.runtime import token_for

    return token_for(config).identity_signer()


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(float(value)) if isinstance(value, float) else str(value)
    return json.dumps(str(value))  # a JSON string (ASCII, escaped) is a TOML basic string


def write_config(path: str | os.PathLike[str], config: AgentConfig) -> Path:
    """Write ``config`` as TOML to ``path`` atomically (temp file, fsync, rename); return the path."""
    file = Path(path)
    lines: list[str] = ["# Tessera device agent (python -m agent run --config THIS_FILE)"]
    tables: list[str] = []
    for key, value in replace(config, path=None).to_toml_dict().items():
        if isinstance(value, dict):
            tables.append("")
            tables.append(f"[{key}]")
            tables.extend(f"{k} = {_toml_value(v)}" for k, v in value.items())
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    text = "\n".join(lines + tables) + "\n"
    tmp = file.with_name(file.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, file)
    return file
