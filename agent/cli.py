"""``python -m agent``: provision, inspect and run the device agent.

Commands::

    python -m agent init --config PATH --server URL --serial SERIAL [--backend SPEC] [--force]
                         [--token-module SO --token-label LABEL (--token-pin-file F | --token-login tee-identity)
                          [--ca-root FILE|URL [--ca-root-sha256 HEX]]]
    python -m agent pin-ca-root --config PATH --ca-root FILE|URL [--ca-root-sha256 HEX]
    python -m agent run --config PATH [--once]
    python -m agent show-config --config PATH
    python -m agent doctor --config PATH [--max-skew SECONDS] [--json]

``init`` creates, beside the configuration file ``NAME.toml``:

- ``NAME.identity.pem`` — the device identity key (ECDSA P-256, PKCS#8 PEM, mode 0600); its
  public half and key id are printed for registration in the portal;
- ``NAME.journal.sqlite`` (on first run) — the journal;
- with ``--backend soft:STATE_PATH`` (the default is ``soft:NAME.se`` beside the config): a fresh
  software secure element (ISD ``A000000151000000``, SCP03 i=70, fresh random AES-128 keys as key
  version 30) and ``STATE_PATH.isd-keys.json`` (mode 0600) holding those ISD keys. That file
  simulates the manufacturing hand-over: a real SE leaves the factory with ISD keys that only the
  SE issuer receives; here the issuer imports the file into Tessera's vault and then deletes it —
  the agent itself never reads it. With ``--import-key SEI.pem --sei SLUG`` it writes
  ``STATE_PATH.handover.json`` instead: the SE supplier's batch record, ISD keys wrapped to the SE
  issuer's import key (``docs/manufacturing-handover.md``), also printed as ``se.handover``.

With ``--token-module``/``--token-label`` (a PKCS#11 token: OP-TEE's TA, docs/tee-bridge.md) the
identity key is generated *in the token* (no ``NAME.identity.pem``), with the receive key for keys
from Tessera; the config gets a ``[token]`` table, a soft SE's state key comes from the token, and
``--backend pkcs11:LABEL`` makes the token itself the key store. The output adds
``receive_public_key`` (hex, uncompressed P-256 point). ``--ca-root`` pins the Controlling
Authority's root (``NAME.ca-root.der``, ``[token] oce_root``; a URL needs ``--ca-root-sha256``):
the agent then verifies a confidential envelope's OCE signature itself (:mod:`agent.ocepin`);
``pin-ca-root`` does the same for an agent already enrolled.

It refuses to overwrite any of these files unless ``--force`` is given, and prints one JSON
object: ``{serial, key_id, identity_public_key, se: {serial, cplc, isd_aid, kvn, i_param,
sequence_counter}, isd_keys_file, config}`` (``se`` has only ``serial`` and ``cplc`` for PC/SC).

Exit codes:

== ==========================================================================
0  success (``run``: stopped by SIGTERM/SIGINT, or ``--once`` exchanged fine)
1  unexpected internal error
2  usage or configuration error (one line on stderr, no traceback)
3  secure element unavailable (backend error)
4  journal unusable (the agent stops rather than risk repeating a command)
5  ``run --once``: the exchange with the portal failed
6  ``doctor``: a check failed (:mod:`agent.doctor`; its report says what to fix)
== ==========================================================================
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agent.errors import AgentError, BackendError, ConfigError, JournalError, TransportError

__all__ = ["main"]

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_CONFIG = 2
EXIT_BACKEND = 3
EXIT_JOURNAL = 4
EXIT_TRANSPORT = 5

ISD_AID = bytes.fromhex("A000000151000000")
ISD_KVN = 0x30
ISD_I_PARAM = 0x70
ISD_SEQUENCE_COUNTER = 1


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2 (argparse's own code)
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m agent", description="Tessera device agent")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    init = sub.add_parser("init", help="create the identity key, a soft SE if asked, and the config")
    init.add_argument("--config", required=True, type=Path)
    init.add_argument("--server", required=True, help="portal base URL (https://…)")
    init.add_argument("--serial", required=True, help="the device serial registered in the portal")
    init.add_argument(
        "--backend", default=None, help="soft:STATE_PATH (default soft:NAME.se) or pcsc:READER_NAME"
    )
    init.add_argument("--force", action="store_true", help="overwrite existing files")
    init.add_argument(
        "--import-key",
        type=Path,
        default=None,
        help="soft SE only: the SE issuer's import public key (PEM); write the hand-over record with the "
        "ISD keys wrapped to it (docs/manufacturing-handover.md) instead of the clear-key file",
    )
    init.add_argument("--sei", default=None, help="with --import-key: the SE issuer's short name in Tessera")
    init.add_argument("--token-module", type=Path, default=None, help="PKCS#11 module of the token")
    init.add_argument("--token-label", default=None, help="the token's label (never a slot number)")
    init.add_argument("--token-pin-file", type=Path, default=None, help="the user PIN's file (mode 0600)")
    init.add_argument(
        "--token-login", choices=("pin", "tee-identity"), default="pin", help="tee-identity: OP-TEE's login"
    )
    init.add_argument(
        "--ca-root",
        default=None,
        help="with a token: the Controlling Authority's root certificate (file, DER or PEM, or the "
        "portal's URL /api/v1/ca/<id>/root/ with --ca-root-sha256) to pin: the agent then verifies "
        "confidential envelopes' OCE signatures itself",
    )
    init.add_argument(
        "--ca-root-sha256", default=None, help="the root's SHA-256 (of its DER), as the CA publishes it"
    )
    pin = sub.add_parser(
        "pin-ca-root", help="pin the CA root of an enrolled agent's token (see init --ca-root)"
    )
    pin.add_argument("--config", required=True, type=Path)
    pin.add_argument("--ca-root", required=True, help="file (DER or PEM) or https URL of the CA root")
    pin.add_argument("--ca-root-sha256", default=None, help="the root's SHA-256 (required with a URL)")
    run = sub.add_parser("run", help="poll the portal and run work")
    run.add_argument("--config", required=True, type=Path)
    run.add_argument("--once", action="store_true", help="one exchange cycle, then exit")
    show = sub.add_parser("show-config", help="print the loaded configuration as JSON")
    show.add_argument("--config", required=True, type=Path)
    doctor = sub.add_parser(
        "doctor", help="check config, clock, portal, signature and secure element; print what to fix"
    )
    doctor.add_argument("--config", required=True, type=Path)
    doctor.add_argument(
        "--max-skew", type=float, default=30.0, help="warn when the clock is further off (seconds)"
    )
    doctor.add_argument("--json", action="store_true", help="print the checks as JSON")
    return parser


def _write_private(path: Path, data: bytes, *, force: bool) -> None:
    """Create ``path`` with mode 0600 (refusing an existing file unless ``force``)."""
    if force:
        path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _init(args: argparse.Namespace) -> int:
    from agent.backends import parse_backend_spec
    from agent.config import AgentConfig, check_serial, check_server_url, load_config, write_config
    from agent.httpsig import key_id

    server_url = check_server_url(args.server)
    check_serial(args.serial)
    config_path = args.config.expanduser().resolve()
    if not config_path.parent.is_dir():
        raise ConfigError(f"--config: directory {config_path.parent} does not exist")
    stem = config_path.stem
    key_path = config_path.with_name(f"{stem}.identity.pem")
    journal_path = config_path.with_name(f"{stem}.journal.sqlite")
    spec = args.backend or f"soft:{config_path.with_name(stem + '.se')}"
    kind, arg = parse_backend_spec(spec)
    token_settings = _token_settings(args)
    if kind == "pkcs11" and (token_settings is None or token_settings.label != arg):
        raise ConfigError(f"--backend {spec}: give --token-module and --token-label {arg}")
    root = None
    root_path = config_path.with_name(f"{stem}.ca-root.der")
    if args.ca_root is not None:
        if token_settings is None:
            raise ConfigError("--ca-root: goes with a token (--token-module, --token-label)")
        from agent.ocepin import fetch_root

        root = fetch_root(args.ca_root, expected_sha256=args.ca_root_sha256)
        token_settings = replace(token_settings, oce_root=root_path)
    elif args.ca_root_sha256 is not None:
        raise ConfigError("--ca-root-sha256: goes with --ca-root")
    state_path = Path(arg).expanduser().resolve() if kind == "soft" else None
    isd_keys_path = state_path.with_name(state_path.name + ".isd-keys.json") if state_path else None
    import_key = _import_key(args, state_path)
    if import_key is not None and state_path is not None:
        isd_keys_path = state_path.with_name(state_path.name + ".handover.json")

    targets = (
        [config_path]
        + ([root_path] if root is not None else [])
        + ([key_path] if token_settings is None else [])
        + ([state_path, isd_keys_path] if state_path and isd_keys_path else [])
    )
    existing = [str(p) for p in targets if p.exists()]
    if existing and not args.force:
        raise ConfigError(f"refusing to overwrite {', '.join(existing)} (use --force)")

    # The candidate config is validated (URL, serial) before anything is written.
    candidate = AgentConfig(
        server_url=server_url,
        serial=args.serial,
        identity_key=key_path if token_settings is None else None,
        backend=f"soft:{state_path}" if state_path else spec,
        journal=journal_path,
        token=token_settings,
    )

    token = None
    pem = b""
    receive_point = None
    if token_settings is None:
        identity = ec.generate_private_key(ec.SECP256R1())
        pem = identity.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        public = identity.public_key()
    else:
        from agent.pkcs11.runtime import open_settings

        token = open_settings(token_settings)
        public = token.create_identity(replace=args.force)
        receive_point = token.create_receive_key()
    se: dict[str, Any] | None
    if state_path is not None and isd_keys_path is not None:
        se = _create_soft_card(
            state_path,
            isd_keys_path,
            force=args.force,
            import_key=import_key,
            sei=args.sei,
            state_key=token.state_key() if token is not None else None,
        )
    else:
        from agent.backends import open_backend

        backend = open_backend(spec, token=token)
        try:
            se = backend.identifiers()
            se = {"serial": se["se_serial"], **({"cplc": se["cplc"]} if "cplc" in se else {})}
        finally:
            backend.close()
    if root is not None:
        from agent.ocepin import write_root

        write_root(root_path, root)
    tmp_config = config_path.with_name(config_path.name + ".new")
    write_config(tmp_config, candidate)
    if token_settings is None:
        _write_private(key_path, pem, force=args.force)
    try:
        load_config(tmp_config)  # the same checks `run` will apply
    except ConfigError:
        tmp_config.unlink(missing_ok=True)
        raise
    os.replace(tmp_config, config_path)
    out = {
        "serial": args.serial,
        "key_id": key_id(public),
        "identity_public_key": public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii"),
        "se": se,
        "isd_keys_file": str(isd_keys_path) if isd_keys_path else None,
        "config": str(config_path),
    }
    if receive_point is not None:
        out["receive_public_key"] = receive_point.hex().upper()
    if root is not None:
        out["ca_root"] = {"file": str(root_path), "sha256": root.sha256, "subject": root.subject}
    print(json.dumps(out, indent=2))
    return EXIT_OK


def _with_token_key(text: str, key: str, value: str) -> str:
    """The config's text with ``key = value`` set in its ``[token]`` table, everything else (other
    tables, comments) as it was."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "[token]")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
    entry = f"{key} = {value}"
    for i in range(start + 1, end):
        if lines[i].split("=", 1)[0].strip() == key:
            lines[i] = entry
            break
    else:
        lines.insert(start + 1, entry)
    return "\n".join(lines) + "\n"


def _pin_ca_root(args: argparse.Namespace) -> int:
    """Pin the CA root for an agent already enrolled: write ``NAME.ca-root.der`` beside the config
    and name it in ``[token] oce_root`` (the identity and receive keys are left as they are)."""
    from agent.config import load_config
    from agent.ocepin import fetch_root, write_root

    config_path = args.config.expanduser().resolve()
    config = load_config(config_path)
    if config.token is None:
        raise ConfigError(f"{config_path}: no [token]: only a token receives confidential envelopes")
    root = fetch_root(args.ca_root, expected_sha256=args.ca_root_sha256, ca_file=config.ca_file)
    root_path = config_path.with_name(f"{config_path.stem}.ca-root.der")
    write_root(root_path, root)
    original = config_path.read_text(encoding="utf-8")
    tmp = config_path.with_name(config_path.name + ".new")
    tmp.write_text(_with_token_key(original, "oce_root", json.dumps(str(root_path))), encoding="utf-8")
    try:
        load_config(tmp)  # the checks `run` applies
    except ConfigError:
        tmp.unlink(missing_ok=True)
        raise
    os.chmod(tmp, os.stat(config_path).st_mode & 0o777)
    os.replace(tmp, config_path)
    print(
        json.dumps(
            {"ca_root": {"file": str(root_path), "sha256": root.sha256, "subject": root.subject}}, indent=2
        )
    )
    return EXIT_OK


def _token_settings(args: argparse.Namespace) -> Any:
    """The ``[token]`` table from ``--token-*``, or None when no token is asked for."""
    from agent.config import TokenSettings

    if args.token_module is None and args.token_label is None:
        if args.token_pin_file is not None or args.token_login != "pin":
            raise ConfigError("--token-pin-file/--token-login go with --token-module and --token-label")
        return None
    if args.token_module is None or not args.token_label:
        raise ConfigError("--token-module and --token-label go together")
    module = args.token_module.expanduser().resolve()
    if args.token_login == "tee-identity":
        if args.token_pin_file is not None:
            raise ConfigError("--token-pin-file: not with --token-login tee-identity")
        return TokenSettings(module, args.token_label, None, "tee-identity")
    if args.token_pin_file is None:
        raise ConfigError("--token-pin-file is required (or --token-login tee-identity)")
    return TokenSettings(module, args.token_label, args.token_pin_file.expanduser().resolve(), "pin")


def _import_key(args: argparse.Namespace, state_path: Path | None) -> Any:
    """The SE issuer's import public key named by ``--import-key`` (with ``--sei``), or None."""
    if args.import_key is None:
        if args.sei:
            raise ConfigError("--sei goes with --import-key")
        return None
    from gp.card.manufacture import HandoverFormatError, load_import_public_key

    if state_path is None:
        raise ConfigError("--import-key: only a soft SE's keys are known to this command")
    if not args.sei:
        raise ConfigError("--import-key needs --sei, the SE issuer's short name the keys are wrapped for")
    try:
        return load_import_public_key(args.import_key.expanduser().read_bytes())
    except OSError as e:
        raise ConfigError(f"--import-key: cannot read {args.import_key} ({e.strerror})") from None
    except HandoverFormatError as e:
        raise ConfigError(f"--import-key: {e}") from None


def _create_soft_card(
    state_path: Path,
    isd_keys_path: Path,
    *,
    force: bool,
    import_key: Any = None,
    sei: str | None = None,
    state_key: bytes | None = None,
) -> dict[str, Any]:
    from agent.backends.soft import SoftBackend
    from gp.card import SoftCard
    from gp.scp03 import StaticKeys

    keys = StaticKeys(os.urandom(16), os.urandom(16), os.urandom(16))
    if force:
        for stale in (state_path, state_path.with_name(state_path.name + ".secret")):
            stale.unlink(missing_ok=True)
    created = SoftCard.create(
        str(state_path),
        isd_aid=ISD_AID,
        keys=keys,
        key_version=ISD_KVN,
        i_param=ISD_I_PARAM,
        sequence_counter=ISD_SEQUENCE_COUNTER,
        state_key=state_key,
    )
    from cryptography.hazmat.primitives import serialization as _ser

    casd_point = created.casd_public_key().public_bytes(
        _ser.Encoding.X962, _ser.PublicFormat.UncompressedPoint
    )  # the CASD's public key (generated in the card), for the CA to certify
    created.close()
    if import_key is not None:
        from gp.card.manufacture import batch_record

        card = SoftCard.open(str(state_path), state_key=state_key)
        record = batch_record(card, import_public_key=import_key, sei=str(sei))
        card.close()
        # The hand-over record: the ISD keys wrapped to the SE issuer's import key, no clear key.
        _write_private(isd_keys_path, (json.dumps(record, indent=2) + "\n").encode(), force=force)
    backend = SoftBackend(str(state_path), state_key=state_key)
    ids = backend.identifiers()
    backend.close()
    se = {
        "serial": ids["se_serial"],
        "cplc": ids["cplc"],
        "isd_aid": ISD_AID.hex().upper(),
        "kvn": ISD_KVN,
        "i_param": ISD_I_PARAM,
        "sequence_counter": ISD_SEQUENCE_COUNTER,
        "casd_public_key": casd_point.hex().upper(),
    }
    hand_over = {
        "purpose": "manufacturing hand-over of the ISD keys to the SE issuer; import, then delete this file",
        "se_serial": ids["se_serial"],
        "isd_aid": se["isd_aid"],
        "kvn": ISD_KVN,
        "i_param": ISD_I_PARAM,
        "sequence_counter": ISD_SEQUENCE_COUNTER,
        "key_type": "AES-128",
        "enc": keys.enc.hex().upper(),
        "mac": keys.mac.hex().upper(),
        "dek": keys.dek.hex().upper(),
    }
    if import_key is None:
        _write_private(isd_keys_path, (json.dumps(hand_over, indent=2) + "\n").encode(), force=force)
    else:
        se["handover"] = record
    return se


def _show(args: argparse.Namespace) -> int:
    from agent.config import load_config

    config = load_config(args.config)
    out = config.to_toml_dict()
    out["path"] = str(config.path)
    print(json.dumps(out, indent=2))
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from agent.config import load_config, load_identity
    from agent.instance import journal_lock

    config = load_config(args.config)
    logging.basicConfig(
        level=getattr(logging, config.log_level),
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
        stream=sys.stderr,
    )
    key = load_identity(config)  # a PEM file's key, or the [token]'s (opened and probed here)
    instance = journal_lock(config.journal)  # one agent per journal (agent.instance)
    try:
        return _run_locked(args, config, key)
    finally:
        instance.close()


def _run_locked(args: argparse.Namespace, config: Any, key: Any) -> int:
    from agent.backends import open_configured_backend
    from agent.cardaccess import CardAccess
    from agent.journal import Journal
    from agent.runner import Runner, install_signal_handlers
    from agent.transport import HttpTransport

    journal = Journal(config.journal)
    if config.token is not None and config.token.oce_root is None:
        logging.getLogger("agent").warning(
            "event=oce_unpinned no CA root pinned ([token] oce_root): confidential envelopes' OCE "
            "signatures are checked by the portal only; pin one with `python -m agent pin-ca-root`"
        )
    # The runner and the local API share the card through one lock (agent.cardaccess.CardAccess).
    backend = CardAccess(open_configured_backend(config))
    transport = HttpTransport(config, key)
    runner = Runner(config, transport, backend, journal)
    localapi: Any = None
    try:
        if config.localapi is not None and not args.once:
            from agent.localapi import LocalApiServer  # its HTTP server modules only when configured

            localapi = LocalApiServer(config.localapi, backend).start()
        if args.once:
            runner.resume()
            try:
                delay = runner.run_once()
            except TransportError as e:
                print(f"agent: exchange failed: {e}", file=sys.stderr)
                return EXIT_TRANSPORT
            logging.getLogger("agent").info("event=once_done next_poll_s=%g", delay)
            return EXIT_OK
        stop = threading.Event()
        install_signal_handlers(stop)
        runner.run_forever(stop)
        return EXIT_OK
    finally:
        if localapi is not None:
            localapi.close()
        transport.close()
        backend.close()
        journal.close()


def _doctor(args: argparse.Namespace) -> int:
    from agent.doctor import run as doctor_run

    if not 1.0 <= args.max_skew <= 3600.0:
        raise ConfigError("--max-skew: must be between 1 and 3600 seconds")
    return doctor_run(args.config, max_skew=args.max_skew, as_json=args.json)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handlers = {
        "init": _init,
        "run": _run,
        "show-config": _show,
        "doctor": _doctor,
        "pin-ca-root": _pin_ca_root,
    }
    try:
        return handlers[args.command](args)
    except ConfigError as e:
        print(f"agent: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except BackendError as e:
        print(f"agent: secure element unavailable: {e}", file=sys.stderr)
        return EXIT_BACKEND
    except JournalError as e:
        print(f"agent: journal: {e}", file=sys.stderr)
        return EXIT_JOURNAL
    except AgentError as e:
        print(f"agent: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_INTERNAL
