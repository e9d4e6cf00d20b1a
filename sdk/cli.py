"""``tessera-provider`` (also ``python -m sdk``): a provider's own tooling for Tessera.

Commands (each prints one JSON object on success)::

    init --store DIR [--pkcs11 LIBRARY --token LABEL] [--no-passphrase]
    config [--url URL] [--org SLUG] [--check]
    certificate request [--cn NAME]
    ca pin (--root FILE | --fetch [--ca ID] [--fingerprint SHA256])
    se verify --device ID [--se ID] [--sd AID]
    keys load --device ID --sd AID [--kvn N] [--key-length 16|24|32] [--chain-format gp|x509] [--online]
    keys rotate --device ID --sd AID [--kvn N] [--key-length 16|24|32] [--online]
    keys list
    script run --device ID --sd AID --apdu HEX [--apdu HEX ...] [--kvn N]
    personalize --device ID --sd AID --app AID --dgi HEX=HEX [--dgi ...] [--kvn N]
    receipt verify --se-id HEX --sd AID --kvn N --receipt HEX
    master-key new --se-serial HEX --sd AID [--key-length 16|24|32] [--keyset-se-id HEX --kvn N]
    session-key --se-serial HEX --sd AID --service NAME --epoch N|today

The store is ``--store DIR`` or ``TESSERA_PROVIDER_STORE``; its passphrase
``TESSERA_PROVIDER_PASSPHRASE``; a PKCS#11 store's PIN ``TESSERA_PROVIDER_PKCS11_PIN``. The server is
``TESSERA_URL``, the organisation ``TESSERA_ORG`` (both may be saved in the store by ``config``),
the API token ``TESSERA_TOKEN`` (never saved, never printed).

Exit status: 0 success; 2 bad input, configuration or key store; 3 something did not verify (chain,
fingerprint, receipt, R-MAC); 4 the server refused or is unreachable; 5 the job failed; 1 an
internal error. Failures print one line on stderr (``tessera-provider: <code>: <message>``), never a
traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from sdk import provider
from sdk.client import ApiClient, ServerConfig
from sdk.errors import EXIT_INTERNAL, EXIT_OK, EXIT_USAGE, SdkError, UsageError
from sdk.store import PASSPHRASE_ENV, KeyStore

__all__ = ["main"]

STORE_ENV = "TESSERA_PROVIDER_STORE"
PROG = "tessera-provider"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message, code="usage")


def _int(text: str) -> int:
    """A number in decimal or hex (``0x30`` or ``30h``)."""
    t = text.strip().lower()
    try:
        if t.startswith("0x"):
            return int(t, 16)
        if t.endswith("h"):
            return int(t[:-1], 16)
        return int(t, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _kvn(text: str) -> int:
    """A KVN: hex as printed by the tool (``30``), or ``0x30``."""
    t = text.strip().lower().removeprefix("0x")
    try:
        value = int(t, 16)
    except ValueError:
        raise argparse.ArgumentTypeError(f"KVN must be hex (01..7F), got {text!r}") from None
    if not 1 <= value <= 0x7F:
        raise argparse.ArgumentTypeError(f"KVN must be 01..7F, got {text!r}")
    return value


def _dgi(text: str) -> tuple[int, bytes]:
    tag, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--dgi takes TAG=VALUE in hex, got {text!r}")
    try:
        t = provider.parse_hex(tag, "DGI tag", min_len=2, max_len=2)
        v = provider.parse_hex(value, "DGI value", min_len=0, max_len=236) if value else b""
    except UsageError as e:
        raise argparse.ArgumentTypeError(e.message) from None
    return int.from_bytes(t, "big"), v


def _parser() -> argparse.ArgumentParser:
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument(
        "--store", default=os.environ.get(STORE_ENV), help=f"key store directory (or {STORE_ENV})"
    )
    wait = argparse.ArgumentParser(add_help=False)
    wait.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for a job (default 300)")

    p = _Parser(prog=PROG, description="A provider's key store and tools for Tessera's public API.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("init", parents=[store], help="create the key store and the OCE key")
    s.add_argument("--pkcs11", metavar="LIBRARY", help="PKCS#11 module: keep the keys in a token")
    s.add_argument("--token", help="the token's label (with --pkcs11)")
    s.add_argument(
        "--no-passphrase", action="store_true", help=f"file store without {PASSPHRASE_ENV} (permissions only)"
    )
    s.set_defaults(func=cmd_init)

    s = sub.add_parser("config", parents=[store], help="show (and save) the server URL and organisation")
    s.add_argument("--url")
    s.add_argument("--org")
    s.add_argument("--check", action="store_true", help="call the server with the token")
    s.set_defaults(func=cmd_config)

    cert = sub.add_parser("certificate", help="the OCE certificate").add_subparsers(
        dest="sub", required=True, parser_class=_Parser
    )
    s = cert.add_parser("request", parents=[store], help="request the OCE certificate from the CA")
    s.add_argument("--cn", default="", help="common name to ask for (the CA decides)")
    s.set_defaults(func=cmd_certificate_request)

    ca = sub.add_parser("ca", help="the CA root").add_subparsers(
        dest="sub", required=True, parser_class=_Parser
    )
    s = ca.add_parser("pin", parents=[store], help="pin the CA root")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--root", type=Path, help="the root certificate file (DER or PEM)")
    g.add_argument("--fetch", action="store_true", help="fetch from the server; pins only with --fingerprint")
    s.add_argument("--ca", help="which CA (id) when the server publishes several")
    s.add_argument("--fingerprint", help="SHA-256 of the root, confirmed out of band")
    s.set_defaults(func=cmd_ca_pin)

    se = sub.add_parser("se", help="secure elements").add_subparsers(
        dest="sub", required=True, parser_class=_Parser
    )
    s = se.add_parser("verify", parents=[store], help="verify an SE's CASD certificate to the pinned root")
    s.add_argument("--device", required=True)
    s.add_argument("--se", help="the secure element id, if the device has several")
    s.add_argument("--sd", help="an SD AID, to pick the SE holding it")
    s.set_defaults(func=cmd_se_verify)

    keys = sub.add_parser("keys", help="SCP03 key sets").add_subparsers(
        dest="sub", required=True, parser_class=_Parser
    )
    for name, rotate in (("load", False), ("rotate", True)):
        s = keys.add_parser(
            name,
            parents=[store, wait],
            help=("load" if not rotate else "rotate") + " a key set confidentially",
        )
        s.add_argument("--device", required=True)
        s.add_argument("--sd", required=True)
        s.add_argument("--se")
        s.add_argument("--kvn", type=_kvn)
        s.add_argument("--key-length", type=int, choices=(16, 24, 32), default=None)
        s.add_argument("--chain-format", choices=("gp", "x509"), default="gp")
        s.add_argument(
            "--online",
            action="store_true",
            help="the device is online: open SCP11a with its CASD and deliver the keys in that session",
        )
        s.set_defaults(func=cmd_keys_load, rotate=rotate)
    s = keys.add_parser("list", parents=[store], help="the key sets in the store (KCVs, never keys)")
    s.set_defaults(func=cmd_keys_list)

    script = sub.add_parser("script", help="SCP03 scripts").add_subparsers(
        dest="sub", required=True, parser_class=_Parser
    )
    s = script.add_parser("run", parents=[store, wait], help="run APDUs in an SCP03 session to the SD")
    s.add_argument("--device", required=True)
    s.add_argument("--sd", required=True)
    s.add_argument("--apdu", action="append", required=True)
    s.add_argument("--kvn", type=_kvn)
    s.set_defaults(func=cmd_script_run)

    s = sub.add_parser(
        "personalize", parents=[store, wait], help="INSTALL [for personalization] + STORE DATA"
    )
    s.add_argument("--device", required=True)
    s.add_argument("--sd", required=True)
    s.add_argument("--app", required=True)
    s.add_argument("--dgi", action="append", type=_dgi, required=True)
    s.add_argument("--kvn", type=_kvn)
    s.set_defaults(func=cmd_personalize)

    receipt = sub.add_parser("receipt", help="receipts").add_subparsers(
        dest="sub", required=True, parser_class=_Parser
    )
    s = receipt.add_parser("verify", parents=[store], help="check a receipt against the store")
    s.add_argument("--se-id", required=True, help="the SE identifier (hex, as `se verify` prints it)")
    s.add_argument("--sd", required=True)
    s.add_argument("--kvn", type=_kvn, required=True)
    s.add_argument("--receipt", required=True)
    s.set_defaults(func=cmd_receipt_verify)

    master = sub.add_parser("master-key", help="service master keys (docs/session-keys.md)").add_subparsers(
        dest="sub", required=True, parser_class=_Parser
    )
    s = master.add_parser("new", parents=[store], help="generate and store an SD's service master key")
    s.add_argument("--se-serial", required=True, help="the SE's CPLC IC serial number (hex)")
    s.add_argument("--sd", required=True)
    s.add_argument("--key-length", type=int, choices=(16, 24, 32), default=16)
    s.add_argument("--keyset-se-id", help="with --kvn: answer the PUT KEY APDU under this key set's DEK")
    s.add_argument("--kvn", type=_kvn)
    s.set_defaults(func=cmd_master_key_new)
    s = sub.add_parser(
        "session-key", parents=[store], help="derive a session key locally from the stored master key"
    )
    s.add_argument("--se-serial", required=True, help="the SE's CPLC IC serial number (hex)")
    s.add_argument("--sd", required=True)
    s.add_argument("--service", required=True)
    s.add_argument("--epoch", required=True, help="an integer, or 'today' (days since 1970-01-01 UTC)")
    s.set_defaults(func=cmd_session_key)
    return p


# --- plumbing ----------------------------------------------------------------------------------


def _store_path(args: argparse.Namespace) -> str:
    if not args.store:
        raise UsageError(f"no key store: give --store DIR or set {STORE_ENV}", code="no_store")
    return str(args.store)


def _open(args: argparse.Namespace) -> KeyStore:
    return KeyStore.open(_store_path(args))


def _client(store: KeyStore) -> ApiClient:
    return ApiClient(ServerConfig.resolve(stored=store.config()))


def _with_client(
    args: argparse.Namespace, fn: Callable[[KeyStore, ApiClient], dict[str, Any]]
) -> dict[str, Any]:
    store = _open(args)
    with _client(store) as client:
        return fn(store, client)


# --- commands ----------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> dict[str, Any]:
    path = _store_path(args)
    if args.pkcs11 or args.token:
        if not (args.pkcs11 and args.token):
            raise UsageError("--pkcs11 LIBRARY and --token LABEL go together", code="usage")
        store = KeyStore.create(path, passphrase=None, pkcs11={"library": args.pkcs11, "token": args.token})
    else:
        passphrase = os.environ.get(PASSPHRASE_ENV) or None
        if passphrase is None and not args.no_passphrase:
            raise UsageError(
                f"set {PASSPHRASE_ENV} to encrypt the store (or pass --no-passphrase to rely on file permissions)",
                code="passphrase_missing",
            )
        if passphrase is not None and args.no_passphrase:
            raise UsageError(f"--no-passphrase with {PASSPHRASE_ENV} set: choose one", code="usage")
        store = KeyStore.create(path, passphrase=passphrase)
    public = store.oce_public_key()
    return {
        "store": str(Path(path).resolve()),
        "backend": store.backend,
        "encrypted": bool(store.meta.get("encrypted")),
        "oce_public_key": provider._point(public).hex().upper(),
        "oce_fingerprint_sha256": provider.fingerprint(provider._spki(public)),
    }


def cmd_config(args: argparse.Namespace) -> dict[str, Any]:
    store = _open(args)
    if args.url or args.org:
        if args.url and not args.url.startswith(("http://", "https://")):
            raise UsageError("--url must start with http:// or https://", code="bad_server")
        store.save_config(url=(args.url or "").rstrip("/"), org=args.org or "")
    cfg = ServerConfig.resolve(stored=store.config())
    out: dict[str, Any] = {"url": cfg.url, "org": cfg.org, "token": "set" if cfg.token else "missing"}
    if args.check:
        with ApiClient(cfg) as client:
            org = client.organisation()
        out["organisation"] = {k: org.get(k) for k in ("slug", "name", "roles") if k in org}
        out["reachable"] = True
    return out


def cmd_certificate_request(args: argparse.Namespace) -> dict[str, Any]:
    return _with_client(args, lambda s, c: provider.certificate_request(s, c, common_name=args.cn))


def cmd_ca_pin(args: argparse.Namespace) -> dict[str, Any]:
    store = _open(args)
    if args.root is not None:
        if args.ca:
            raise UsageError("--ca goes with --fetch", code="usage")
        try:
            der = args.root.read_bytes()
        except OSError as e:
            raise UsageError(f"cannot read {args.root}: {e.strerror}", code="bad_root") from None
        return provider.pin_root(store, der, expected_fingerprint=args.fingerprint)
    with _client(store) as client:
        roots = provider.fetch_roots(client)
    if args.ca:
        roots = [r for r in roots if str(r["id"]) == args.ca]
    if len(roots) != 1:
        listed = [{k: v for k, v in r.items() if k != "der"} for r in roots]
        raise UsageError(
            f"{len(roots)} CA roots match; name one with --ca: {json.dumps(listed)}", code="which_ca"
        )
    root = roots[0]
    if not args.fingerprint:
        return {
            "pinned": False,
            "ca": root["id"],
            "name": root["name"],
            "fingerprint_sha256": root["fingerprint_sha256"],
            "next": "confirm this fingerprint out of band, then run again with --fingerprint",
        }
    out = provider.pin_root(store, root["der"], expected_fingerprint=args.fingerprint)
    return {**out, "ca": root["id"], "name": root["name"]}


def cmd_se_verify(args: argparse.Namespace) -> dict[str, Any]:
    sd = provider.parse_aid(args.sd, "--sd") if args.sd else None
    return _with_client(args, lambda s, c: provider.verify_se(s, c, args.device, sd=sd, se=args.se).to_json())


def cmd_keys_load(args: argparse.Namespace) -> dict[str, Any]:
    sd = provider.parse_aid(args.sd, "--sd")
    load = provider.load_keys_online if args.online else provider.load_keys
    return _with_client(
        args,
        lambda s, c: load(
            s,
            c,
            device_id=args.device,
            sd=sd,
            kvn=args.kvn,
            key_length=args.key_length or 16,
            rotate=args.rotate,
            se=args.se,
            chain_format=args.chain_format,
            timeout=args.timeout,
        ),
    )


def cmd_keys_list(args: argparse.Namespace) -> dict[str, Any]:
    store = _open(args)
    return {"key_sets": [r.public() for r in store.key_sets()]}


def cmd_script_run(args: argparse.Namespace) -> dict[str, Any]:
    sd = provider.parse_aid(args.sd, "--sd")
    apdus = [provider.parse_apdu(a) for a in args.apdu]
    return _with_client(
        args,
        lambda s, c: provider.run_script(
            s, c, device_id=args.device, sd=sd, apdus=apdus, kvn=args.kvn, timeout=args.timeout
        ),
    )


def cmd_personalize(args: argparse.Namespace) -> dict[str, Any]:
    sd = provider.parse_aid(args.sd, "--sd")
    app = provider.parse_aid(args.app, "--app")
    return _with_client(
        args,
        lambda s, c: provider.personalize(
            s, c, device_id=args.device, sd=sd, app=app, dgis=args.dgi, kvn=args.kvn, timeout=args.timeout
        ),
    )


def cmd_receipt_verify(args: argparse.Namespace) -> dict[str, Any]:
    se_id = provider.parse_hex(args.se_id, "--se-id", max_len=64).hex().upper()
    sd = provider.parse_aid(args.sd, "--sd").hex().upper()
    receipt = provider.parse_hex(args.receipt, "--receipt", min_len=16, max_len=18)
    return provider.verify_receipt(_open(args), se_id=se_id, sd=sd, kvn=args.kvn, receipt=receipt)


def cmd_master_key_new(args: argparse.Namespace) -> dict[str, Any]:
    from sdk import sessionkeys

    return sessionkeys.master_new(
        _open(args),
        se_serial=provider.parse_hex(args.se_serial, "--se-serial", max_len=16),
        sd=provider.parse_aid(args.sd, "--sd"),
        key_length=args.key_length,
        keyset_se_id=args.keyset_se_id,
        kvn=args.kvn,
    )


def cmd_session_key(args: argparse.Namespace) -> dict[str, Any]:
    from sdk import sessionkeys

    epoch: int | str = args.epoch
    if epoch != "today":
        try:
            epoch = _int(args.epoch)
        except argparse.ArgumentTypeError as e:
            raise UsageError(f"--epoch: {e}", code="bad_epoch") from None
    return sessionkeys.session_key(
        _open(args),
        se_serial=provider.parse_hex(args.se_serial, "--se-serial", max_len=16),
        sd=provider.parse_aid(args.sd, "--sd"),
        service=args.service,
        epoch=epoch,
    )


# --- main --------------------------------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        out = args.func(args)
    except SdkError as e:
        print(f"{PROG}: {e.code}: {_one_line(e.message)}", file=sys.stderr)
        return e.exit_status
    except SystemExit as e:  # --help
        return int(e.code or 0)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:  # noqa: BLE001 - the contract is one line and no traceback
        print(f"{PROG}: internal_error: {type(e).__name__}: {_one_line(str(e))[:300]}", file=sys.stderr)
        return EXIT_INTERNAL
    print(json.dumps(out, indent=2, sort_keys=True, default=str))
    return EXIT_OK
