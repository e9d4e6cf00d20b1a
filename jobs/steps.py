"""What each job kind does, step by step: which session, which payload, what it changes in the
database when the card confirms it, and how to tell from the card's registry that it already
happened (for reconciliation after an interrupted script; DESIGN §7 "exactly once").

A step runs in one SCP03 session on one security domain. Steps are pure descriptions; the engine
(``jobs.engine``) compiles, dispatches and interprets them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gp.commands import DGI, Privileges
from gp.scp03 import StaticKeys
from jobs.compiler import confidential as C
from jobs.compiler import payloads as P
from jobs.compiler.demo_app import DEMO_LOAD_FILE_AID, demo_load_file
from jobs.compiler.inventory import CardInventory, app_state, sd_present
from jobs.compiler.session import CompilerError, PayloadCommand

NEW_KEYS = "new"  # the session opens with the job's new keys instead of a stored key set
RELAY = "relay"  # no session of ours: the provider's own commands, relayed unchanged (run_script)


@dataclass
class StepSpec:
    name: str
    sd_aid: str
    keys_from: str  # "isd" | "sd" | NEW_KEYS | RELAY
    build: Callable[[StepContext], list[PayloadCommand]]
    done: Callable[[CardInventory, StepContext], bool] = field(default=lambda inv, ctx: False)


@dataclass
class StepContext:
    """What a payload builder may use: the job's parameters and the keys it needs."""

    params: dict[str, Any]
    isd_keys: StaticKeys | None = None
    sd_keys: StaticKeys | None = None
    sd_kvn: int | None = None
    new_keys: StaticKeys | None = None
    new_kvn: int | None = None
    package: bytes | None = None  # load_keys_confidential: the provider's package (opaque)


def new_static_keys(length: int) -> StaticKeys:
    return StaticKeys(enc=os.urandom(length), mac=os.urandom(length), dek=os.urandom(length))


def keys_to_json(keys: StaticKeys) -> bytes:
    return json.dumps({"enc": keys.enc.hex(), "mac": keys.mac.hex(), "dek": keys.dek.hex()}).encode()


def keys_from_json(blob: bytes) -> StaticKeys:
    data = json.loads(blob)
    return StaticKeys(
        enc=bytes.fromhex(data["enc"]), mac=bytes.fromhex(data["mac"]), dek=bytes.fromhex(data["dek"])
    )


def _b(hex_aid: str) -> bytes:
    return bytes.fromhex(hex_aid)


_PRIVILEGE_ALIASES = {"mandated_dap": "MANDATED_DAP_VERIFICATION"}


def privileges_from_names(names: list[str]) -> Privileges:
    """``["security_domain", "authorized_management"]`` → the GP privilege bits (GPCS §11.1.2)."""
    value = Privileges.NONE
    for name in names:
        value |= Privileges[_PRIVILEGE_ALIASES.get(name, name.upper())]
    return value


REPERSONALIZE = "repersonalize_sd"


def repersonalize_spec(params: dict[str, Any], isd_aid: str) -> StepSpec:
    """INSTALL [for personalization] + PUT KEY of a new SD that exists on the card without keys
    (an agent died between INSTALL [for install] and PUT KEY): the install step minus its first
    command, which already ran."""
    aid = params["aid"]

    def build(c: StepContext) -> list[PayloadCommand]:
        full = P.create_security_domain(
            isd_keys=c.isd_keys,
            ssd_aid=_b(aid),
            privileges=privileges_from_names(c.params["privileges"]),
            new_keys=c.new_keys,
            new_kvn=c.new_kvn,
        )
        return full[1:]  # full[0] is INSTALL [for install and make selectable]

    return StepSpec(REPERSONALIZE, isd_aid, "isd", build)


def plan_for(kind: str, params: dict[str, Any], isd_aid: str) -> list[StepSpec]:
    """The steps of a job of ``kind`` (ordered)."""
    if kind == "create_security_domain":
        aid = params["aid"]
        return [
            StepSpec(
                "install_sd",
                isd_aid,
                "isd",
                lambda c: P.create_security_domain(
                    isd_keys=c.isd_keys,
                    ssd_aid=_b(aid),
                    privileges=privileges_from_names(c.params["privileges"]),
                    new_keys=c.new_keys,
                    new_kvn=c.new_kvn,
                ),
                done=lambda inv, c: sd_present(inv, _b(aid)),
            ),
            StepSpec("verify_new_keys", aid, NEW_KEYS, lambda c: P.verify_keys(kvn=c.new_kvn)),
        ]
    if kind == "delete_security_domain":
        aid = params["aid"]
        return [
            StepSpec(
                "delete_sd",
                isd_aid,
                "isd",
                lambda c: P.delete_security_domain(aid=_b(aid), related=True),
                done=lambda inv, c: not sd_present(inv, _b(aid)),
            )
        ]
    if kind == "rotate_keys":
        sd = params["sd"]
        return [
            StepSpec(
                "put_new_keys",
                sd,
                "sd",
                lambda c: P.rotate_keys(
                    sd_keys=c.sd_keys, new_keys=c.new_keys, new_kvn=c.new_kvn, replace=False
                ),
            ),
            StepSpec(
                "verify_and_retire_old",
                sd,
                NEW_KEYS,
                lambda c: [*P.verify_keys(kvn=c.new_kvn), *P.delete_key_version(kvn=c.sd_kvn)],
            ),
        ]
    if kind == "install_application":
        sd = params["sd"]

        def install(c: StepContext) -> list[PayloadCommand]:
            cmds: list[PayloadCommand] = []
            if c.params.get("load"):
                cmds += P.load_file(
                    load_file_aid=bytes(DEMO_LOAD_FILE_AID), sd_aid=None, data=demo_load_file()
                )
            cmds += P.install_application(
                load_file_aid=_b(c.params["load_file_aid"]),
                module_aid=_b(c.params["module_aid"]),
                instance_aid=_b(c.params["instance_aid"]),
            )
            return cmds

        return [
            StepSpec(
                "install_app",
                sd,
                "sd",
                install,
                done=lambda inv, c: app_state(inv, _b(c.params["instance_aid"])) is not None,
            )
        ]
    if kind == "personalize_application":
        sd = params["sd"]
        return [
            StepSpec(
                "personalize_app",
                sd,
                "sd",
                lambda c: P.personalize_application(
                    instance_aid=_b(c.params["instance_aid"]),
                    dgis_or_tlvs=[
                        DGI(int(d["dgi"], 16), bytes.fromhex(d["value"])) for d in c.params["data"]
                    ],
                ),
            )
        ]
    if kind == "delete_application":
        sd = params["sd"]
        return [
            StepSpec(
                "delete_app",
                sd,
                "sd",
                lambda c: P.delete_application(aid=_b(c.params["instance_aid"])),
                done=lambda inv, c: app_state(inv, _b(c.params["instance_aid"])) is None,
            )
        ]
    if kind in ("lock", "unlock"):
        lock = kind == "lock"
        return [StepSpec(kind, isd_aid, "isd", lambda c: P.set_status(aid=_b(c.params["aid"]), lock=lock))]
    if kind == "read_status":
        return [StepSpec("read_status", params["sd"], "sd", lambda c: P.read_status())]
    if kind == "casd_personalize":
        return [
            StepSpec(
                "casd_personalize",
                isd_aid,
                "isd",
                lambda c: C.casd_personalize(
                    ca_point=_b(c.params["ca_point"]),
                    ca_identifier=_b(c.params["ca_identifier"]),
                    certificate=_b(c.params["certificate"]),
                    revoked=[_b(s) for s in c.params["revoked"]],
                ),
            )
        ]
    if kind == "load_keys_confidential":
        sd = params["sd"]

        def relay(c: StepContext) -> list[PayloadCommand]:
            if c.package is None:
                raise CompilerError("the job's key-loading package is no longer held")
            return C.relay_key_package(sd_aid=_b(sd), package=c.package)

        # No ``done``: whether the card took the package is visible only in its receipt; a retry
        # after an interruption is answered 6985 (replayed) and fails the job without any change.
        return [StepSpec("relay_key_package", isd_aid, "isd", relay)]
    if kind == "load_keys_scp11":
        # Two rounds of the provider's own SCP11a session on one card session (built by the engine
        # from the params, jobs.compiler.confidential): the opening after SELECT ISD, then — once
        # the provider has answered with its input — the key-set delivery with no SELECT before it.
        return [
            StepSpec("scp11_authenticate", isd_aid, RELAY, lambda c: []),
            StepSpec("scp11_deliver", isd_aid, RELAY, lambda c: []),
        ]
    if kind == "run_script":
        # Built by the engine from the params (jobs.compiler.confidential.relay_script).
        return [StepSpec("run_script", params["sd"], RELAY, lambda c: [])]
    raise ValueError(f"unknown job kind {kind}")
