"""``python -m agent doctor``: check a gateway's agent set-up and say what to fix.

The checks, in order; each prints one line ``[ OK ]``, ``[WARN]``, ``[FAIL]`` or ``[SKIP]`` with
what it found, and for WARN / FAIL an indented ``fix:`` line. The exit status is 0 unless a check
FAILed (then :data:`EXIT_DOCTOR_FAILED`); the configuration failing stops the rest (they need it).

``config``
    The file loads with the checks ``run`` applies (:func:`agent.config.load_config`: TOML, keys,
    URL, the identity key's type and its mode 0600), and beyond them: the configuration is not
    writable by group or others (whoever may write it may point the agent at another server); the
    soft SE's state files are readable by their owner only; the SE-issuer hand-over file written by
    ``init`` (ISD keys) has been deleted; the journal's directory is writable.
``reachability``
    ``GET <server_url>/agent/v1/exchange`` through the agent's own TLS settings (``ca_file``,
    timeouts, no redirects): a Tessera portal answers ``405 method_not_allowed`` in its JSON error
    form; a refused connection, an untrusted certificate, a timeout, a redirect or another server
    each FAIL with the matching fix.
``clock``
    The same answer's ``Date`` header against the local clock (bounded by the request's start and
    end, so the figure is a lower bound of the skew). Signatures carry ``created`` and the portal
    refuses one beyond its limit (300 s by default): over ``--max-skew`` (30 s) is a WARN.
``signature``
    A signed ``POST /agent/v1/exchange`` exactly as the agent signs (RFC 9421, fresh nonce), whose
    body is a valid protocol-1 envelope with one extra member ``doctor``. The portal verifies the
    signature and the device (known key, active) *before* it reads the body (jobs/agent_views.py),
    so a ``400 malformed_request`` naming ``doctor`` proves the signature was accepted — and being
    malformed, the request dispatches no work, acknowledges nothing and changes nothing. A ``401``
    FAILs with the portal's reason (``unknown_key``: the device is not enrolled with this key;
    ``device_suspended``; ``stale``: the clock; …).
``token`` (with a ``[token]`` table)
    The PKCS#11 token opens with its PIN file (or OP-TEE's TEE-identity login), passes the start-up
    probe of ``run`` (every mechanism the agent needs, e.g. "needs optee_os ≥ 3.17 for
    ECDH1_DERIVE") and holds the identity and receive keys ``init`` generated in it.
``oce_root`` (with a ``[token]`` table)
    The CA root pinned at enrolment (``init --ca-root`` / ``pin-ca-root``) parses as a CA
    certificate: its subject and SHA-256 are shown. None pinned is a WARN: confidential envelopes'
    OCE signatures are then checked by the portal only (:mod:`agent.ocepin`).
``backend``
    Opens the configured backend and reads its identifiers (SE serial, CPLC; a token's device id).
    A running agent holds a card (a second process would break its secure channel session, and a
    soft card's counters must have one writer), so for ``soft`` and ``pcsc``, when ``agent run``
    holds the journal lock (:mod:`agent.instance`), the card is not touched: SKIP, naming the
    agent's pid. A token serves many sessions at once and is always probed.

Nothing here logs or prints key material: the report names files, key ids and identifiers only.
"""

from __future__ import annotations

import email.utils
import json
import os
import ssl
import stat
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from agent import __version__
from agent.config import AgentConfig, load_config, load_identity
from agent.errors import AgentError, ConfigError, TransportError, TransportTimeout
from agent.httpsig import key_id, sign_request
from agent.instance import AgentRunning, probe_lock
from agent.protocol import EXCHANGE_PATH, PROTOCOL_VERSION, encode
from agent.transport import HttpResponse, PortalConnection

__all__ = ["DEFAULT_MAX_SKEW", "EXIT_DOCTOR_FAILED", "Check", "diagnose", "run"]

OK, WARN, FAIL, SKIP = "OK", "WARN", "FAIL", "SKIP"
EXIT_DOCTOR_FAILED = 6
DEFAULT_MAX_SKEW = 30.0
PROBE_MEMBER = "doctor"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: str
    message: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "message": self.message, "fix": self.fix}


@dataclass
class _Probe:
    """What the reachability request learnt, for the clock check."""

    date: float | None = None
    sent: float = 0.0
    received: float = 0.0
    reached: bool = False


# -- config ------------------------------------------------------------------------------------


def _mode(path: Path) -> int | None:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None


def check_config(path: Path) -> tuple[Check, list[Check], AgentConfig | None]:
    """The configuration check: (its result, extra warnings, the config or None)."""
    try:
        config = load_config(path)
    except ConfigError as e:
        return (
            Check("config", FAIL, str(e), "correct the file (docs/agent-install.md lists every key)"),
            [],
            None,
        )
    warnings: list[Check] = []
    assert config.path is not None
    mode = _mode(config.path)
    if mode is not None and mode & 0o022:
        warnings.append(
            Check(
                "config",
                WARN,
                f"{config.path} has mode {mode:04o}: writable beyond its owner, who may point the agent "
                "at another server",
                f"chmod go-w {config.path} (root-owned 0644 is right: the agent only reads it)",
            )
        )
    for label, secret in _secret_files(config):
        m = _mode(secret)
        if m is not None and m & 0o077:
            warnings.append(
                Check(
                    "config",
                    WARN,
                    f"{label} {secret} has mode {m:04o}: readable beyond its owner",
                    f"chmod 600 {secret}",
                )
            )
    for leftover in _handover_files(config):
        warnings.append(
            Check(
                "config",
                WARN,
                f"{leftover} still exists: it carries the SE's ISD keys for the SE issuer",
                f"once the SE issuer has imported it into Tessera, delete it: shred -u {leftover}",
            )
        )
    journal_dir = config.journal.parent
    if not os.access(journal_dir, os.W_OK | os.X_OK):
        return (
            Check(
                "config",
                FAIL,
                f"journal directory {journal_dir} is not writable by this user (uid {os.geteuid()})",
                "run the doctor as the agent's user (sudo -u tessera-agent …), or give that user the "
                "directory (systemd's StateDirectory= does)",
            ),
            warnings,
            config,
        )
    identity = f"identity key id {_file_key_id(config)}" if config.identity_key else "identity key in [token]"
    summary = (
        f"{config.path}: serial {config.serial}, backend {config.backend_kind}, server {config.server_url}, "
        f"{identity}"
    )
    return Check("config", OK, summary), warnings, config


def _file_key_id(config: AgentConfig) -> str:
    assert config.identity_key is not None
    return key_id(load_identity(config).public_key())


def _secret_files(config: AgentConfig) -> Iterator[tuple[str, Path]]:
    if config.backend_kind == "soft":
        state = Path(config.backend.split(":", 1)[1])
        yield "soft SE state", state
        yield "soft SE state secret", state.with_name(state.name + ".secret")
    if config.token is not None and config.token.pin_file is not None:
        yield "token PIN file", config.token.pin_file


def _handover_files(config: AgentConfig) -> Iterator[Path]:
    if config.backend_kind != "soft":
        return
    state = Path(config.backend.split(":", 1)[1])
    for suffix in (".isd-keys.json", ".handover.json"):
        candidate = state.with_name(state.name + suffix)
        if candidate.exists():
            yield candidate


# -- the portal --------------------------------------------------------------------------------


def _client(config: AgentConfig) -> PortalConnection:
    """The agent's own connection to the portal (TLS settings, timeouts, no redirects)."""
    return PortalConnection(
        config.server_url,
        connect_timeout=config.timeouts.connect_s,
        read_timeout=config.timeouts.read_s,
        ca_file=config.ca_file,
        user_agent=f"tessera-agent/{__version__} (doctor)",
    )


def _network_failure(config: AgentConfig, exc: Exception) -> Check:
    url = config.server_url
    root = exc.__cause__ or exc
    text = f"{type(root).__name__}: {root}"
    if isinstance(exc, TransportTimeout):
        return Check(
            "reachability",
            FAIL,
            f"{url}: no answer in time ({type(root).__name__})",
            "check the network path to the portal (firewall, proxy); raise [timeouts] if the link is slow",
        )
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return Check(
                "reachability",
                FAIL,
                f"{url}: the portal's TLS certificate is not trusted ({cause.verify_message})",
                "set ca_file to the CA that issued the portal's certificate (or install it system-wide)",
            )
        if isinstance(cause, ssl.SSLError):
            return Check(
                "reachability",
                FAIL,
                f"{url}: TLS handshake failed ({cause})",
                "check that server_url's port speaks HTTPS (http:// is for a portal on the same host)",
            )
        cause = cause.__cause__ or cause.__context__
    return Check(
        "reachability",
        FAIL,
        f"{url}: cannot connect ({text})",
        "check server_url (host, port), DNS and that the portal is running and reachable from here",
    )


def _error_code(response: HttpResponse) -> tuple[str, str]:
    try:
        error = json.loads(response.body.decode("utf-8")).get("error", {})
        return str(error.get("code", "")), str(error.get("message", ""))
    except (ValueError, AttributeError):
        return "", ""


def check_reachability(config: AgentConfig, client: PortalConnection, probe: _Probe) -> Check:
    url = config.server_url + EXCHANGE_PATH
    probe.sent = time.time()
    try:
        response = client.request("GET", client.path(EXCHANGE_PATH), headers={"Accept": "application/json"})
    except TransportError as e:
        return _network_failure(config, e)
    probe.received = time.time()
    probe.reached = True
    date = response.header("date")
    if date:
        try:
            probe.date = email.utils.parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError):
            probe.date = None
    status = response.status
    if 300 <= status < 400:
        where = response.header("location") or "?"
        return Check(
            "reachability",
            FAIL,
            f"{url}: the server redirects ({status}) to {where}; the agent does not follow redirects "
            "(a signature covers one path)",
            "set server_url to the portal's final base URL (often https:// instead of http://)",
        )
    code, _ = _error_code(response)
    if status == 405 and code == "method_not_allowed":
        tls = "TLS" if url.startswith("https://") else "plain HTTP"
        return Check("reachability", OK, f"{url}: a Tessera portal answers ({tls})")
    return Check(
        "reachability",
        FAIL,
        f"{url}: HTTP {status}{' ' + code if code else ''} — not a Tessera portal's agent endpoint",
        "set server_url to the portal's base URL (the agent appends /agent/v1/exchange); check a "
        "reverse proxy forwards /agent/",
    )


def check_clock(probe: _Probe, max_skew: float) -> Check:
    if not probe.reached:
        return Check("clock", SKIP, "the portal was not reached: its clock is unknown")
    if probe.date is None:
        return Check(
            "clock",
            WARN,
            "the portal's answer carried no usable Date header: the clock was not compared",
            "make sure this gateway syncs its clock (timedatectl set-ntp true, or chrony)",
        )
    # Date has a one-second resolution: the server's time when it answered was in [date, date + 1).
    ahead = probe.date - probe.received  # > 0: the portal is ahead of this clock
    behind = probe.sent - (probe.date + 1.0)  # > 0: the portal is behind
    skew = ahead if ahead > 0 else (-behind if behind > 0 else 0.0)
    if abs(skew) <= max_skew:
        return Check("clock", OK, f"local clock within {max(abs(skew), 1.0):.0f} s of the portal's")
    direction = "behind" if skew > 0 else "ahead of"
    return Check(
        "clock",
        WARN,
        f"local clock is {abs(skew):.0f} s {direction} the portal's (warning above {max_skew:g} s); "
        "request signatures carry their creation time and the portal refuses them beyond its limit "
        "(300 s by default)",
        "sync the clock: timedatectl set-ntp true (systemd-timesyncd) or install chrony",
    )


_REFUSALS = {
    "unknown_key": (
        "no device in the portal has this identity key",
        "enrol the device with the public key `agent init` printed (its key id is shown above), or "
        "re-run init if the key file was replaced",
    ),
    "device_suspended": ("the portal has suspended this device", "ask the device's owner to reactivate it"),
    "stale": (
        "the portal refused the signature's creation time: the clocks disagree",
        "sync this gateway's clock (timedatectl set-ntp true, or chrony)",
    ),
    "bad_signature": (
        "the signature does not verify with the key the portal holds for this key id",
        "the identity key file is damaged or not the enrolled one: restore it or re-enrol",
    ),
    "replayed": (
        "the portal saw this request's nonce before",
        "run the doctor again; if it persists, the gateway's random generator is broken",
    ),
}


def probe_body() -> bytes:
    """The signature probe's body: protocol 1 plus a member the portal refuses *after* verifying."""
    return encode(
        {
            "protocol": PROTOCOL_VERSION,
            "agent": {},
            "results": [],
            "health": {},
            PROBE_MEMBER: "signature check; not an exchange",
        }
    )


def check_signature(
    config: AgentConfig,
    client: PortalConnection,
    *,
    clock: Callable[[], float] = time.time,
) -> Check:
    try:
        key = load_identity(config)
    except AgentError as e:
        return Check("signature", FAIL, f"the identity key cannot sign: {e}", "see the token check above")
    path = client.path(EXCHANGE_PATH)
    body = probe_body()
    headers = sign_request(private_key=key, method="POST", path=path, body=body, created=int(clock()))
    headers["Content-Type"] = "application/json"
    headers["Accept"] = "application/json"
    try:
        response = client.request("POST", path, body=body, headers=headers)
    except TransportError as e:
        failure = _network_failure(config, e)
        return Check("signature", FAIL, failure.message, failure.fix)
    code, message = _error_code(response)
    status = response.status
    if status == 400 and code == "malformed_request" and message.startswith(PROBE_MEMBER + ":"):
        return Check(
            "signature",
            OK,
            f"the portal verified this device's request signature (key id {key_id(key.public_key())}); "
            "the probe carried no exchange",
        )
    if status == 401:
        what, fix = _REFUSALS.get(code, (f"the portal refused the signature ({code or 'no reason'})", ""))
        return Check(
            "signature",
            FAIL,
            f"{what} [{code}]" + (f": {message}" if message and code not in _REFUSALS else ""),
            fix or "compare the agent's version with the portal's (docs/agent-protocol.md)",
        )
    return Check(
        "signature",
        FAIL,
        f"unexpected answer to the signed probe: HTTP {status}{' ' + code if code else ''}",
        "check server_url points at the portal itself (not a proxy rewriting requests or bodies)",
    )


# -- the token and the secure element -----------------------------------------------------------


def check_token(config: AgentConfig) -> Check:
    """``[token]``: it opens with its PIN (or TEE identity), offers every mechanism the agent needs
    (the start-up probe of ``run``) and holds the identity and receive keys ``init`` made."""
    assert config.token is not None
    from agent.pkcs11.profile import REQUIRED_MECHANISMS
    from agent.pkcs11.runtime import open_settings

    label = config.token.label
    try:
        token = open_settings(config.token)  # probes the mechanisms
        kid = key_id(token.identity_public_key())
        token.receive_public_point()
    except AgentError as e:
        return Check(
            "token",
            FAIL,
            f"{e} (module {config.token.module})",
            "check [token] module, label and PIN (or login), and that the agent's user may use the TEE "
            "(/dev/tee0, tee-supplicant running); docs/agent-install.md",
        )
    return Check(
        "token",
        OK,
        f"token {label!r}: the {len(REQUIRED_MECHANISMS)} mechanisms the agent needs are offered; "
        f"identity key id {kid}; receive key present",
    )


def check_backend(config: AgentConfig) -> Check:
    from agent.backends import open_configured_backend

    if config.backend_kind not in ("soft", "pcsc"):  # a token takes many sessions at once
        return _probe_backend(config, open_configured_backend)
    try:
        lock = probe_lock(config.journal)
    except AgentRunning as e:
        return Check(
            "backend",
            SKIP,
            f"{config.backend_kind}: not probed — the running agent holds it ({e}); its log shows the "
            "identifiers it reads at start",
        )
    except OSError as e:
        return Check(
            "backend",
            WARN,
            f"cannot tell whether the agent is running ({config.journal}: {e.strerror}): not probed",
            "run the doctor as the agent's user",
        )
    try:
        return _probe_backend(config, open_configured_backend)
    finally:
        if lock is not None:
            lock.close()


def _probe_backend(config: AgentConfig, opener: Callable[[AgentConfig], Any]) -> Check:
    try:
        backend = opener(config)
    except AgentError as e:
        return Check("backend", FAIL, f"{config.backend_kind}: {e}", _backend_fix(config))
    try:
        ids = backend.identifiers()
    except AgentError as e:
        return Check("backend", FAIL, f"{config.backend_kind}: {e}", _backend_fix(config))
    finally:
        backend.close()
    what = "key store" if config.backend_kind == "pkcs11" else "secure element"
    return Check("backend", OK, f"{config.backend_kind}: {what} {ids.get('se_serial', '?')} answers")


def _backend_fix(config: AgentConfig) -> str:
    kind = config.backend_kind
    if kind == "pcsc":
        return (
            "check pcscd runs (systemctl status pcscd.socket), the reader name (pcsc_scan) and that the "
            "agent's user may use pcscd (polkit rule; docs/agent-install.md)"
        )
    if kind == "soft":
        hint = "; its state key lives in the [token]: see the token check" if config.token else ""
        return f"check the state file named by backend exists and belongs to the agent's user{hint}"
    return "check the token's module path, label and PIN file (docs/agent-install.md)"


# -- all of it ---------------------------------------------------------------------------------


def diagnose(config_path: Path, *, max_skew: float = DEFAULT_MAX_SKEW) -> list[Check]:
    """Run every check (module docstring); the configuration failing stops the others."""
    first, warnings, config = check_config(config_path)
    checks = [first, *warnings]
    if config is None or first.status == FAIL:
        return checks
    try:
        return _diagnose(config, checks, max_skew)
    finally:
        if config.token is not None:
            from agent.pkcs11.runtime import close_tokens

            close_tokens()


def check_oce_root(config: AgentConfig) -> Check:
    """``[token] oce_root``: the CA root pinned at enrolment, against which the agent verifies a
    confidential envelope's OCE signature itself. Not pinned: WARN (the portal's check only)."""
    assert config.token is not None
    path = config.token.oce_root
    if path is None:
        return Check(
            "oce_root",
            WARN,
            "no CA root pinned: a confidential envelope's OCE signature is checked by the portal only, "
            "so a compromised portal could relay a key from a sender the CA never certified",
            "pin the Controlling Authority's root: python -m agent pin-ca-root --config CONFIG --ca-root "
            "ROOT.der (or the portal's https://…/api/v1/ca/<id>/root/ with --ca-root-sha256 FINGERPRINT)",
        )
    from agent.ocepin import load_root

    try:
        root = load_root(path)
    except ConfigError as e:
        return Check("oce_root", FAIL, str(e), "pin the CA root again: python -m agent pin-ca-root")
    return Check("oce_root", OK, f"CA root pinned: {root.subject}, SHA-256 {root.sha256}")


def _diagnose(config: AgentConfig, checks: list[Check], max_skew: float) -> list[Check]:
    if config.token is not None:
        checks.append(check_token(config))
        checks.append(check_oce_root(config))
    probe = _Probe()
    with _client(config) as client:
        reach = check_reachability(config, client, probe)
        checks.append(reach)
        checks.append(check_clock(probe, max_skew))
        if reach.status == FAIL:
            checks.append(Check("signature", SKIP, "the portal was not reached"))
        else:
            checks.append(check_signature(config, client))
    checks.append(check_backend(config))
    return checks


def render(checks: list[Check], out: TextIO) -> None:
    width = max(len(c.name) for c in checks)
    for c in checks:
        label = {OK: "[ OK ]", WARN: "[WARN]", FAIL: "[FAIL]", SKIP: "[SKIP]"}[c.status]
        out.write(f"{label} {c.name.ljust(width)}  {c.message}\n")
        if c.fix and c.status in (WARN, FAIL):
            out.write(f"       {' ' * width}  fix: {c.fix}\n")
    fails = sum(c.status == FAIL for c in checks)
    warns = sum(c.status == WARN for c in checks)
    out.write(f"{fails} failed, {warns} warning{'s' if warns != 1 else ''}\n")


def run(config_path: Path, *, max_skew: float = DEFAULT_MAX_SKEW, as_json: bool = False) -> int:
    """``python -m agent doctor``: print the checks; 0, or :data:`EXIT_DOCTOR_FAILED` on a FAIL."""
    checks = diagnose(config_path, max_skew=max_skew)
    if as_json:
        sys.stdout.write(json.dumps([c.to_json() for c in checks], indent=2) + "\n")
    else:
        render(checks, sys.stdout)
    return EXIT_DOCTOR_FAILED if any(c.status == FAIL for c in checks) else 0
