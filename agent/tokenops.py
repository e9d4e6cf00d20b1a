"""Token operations: the script format of a TEE-backed device (docs/tee-bridge.md §8).

A TEE has no card to send APDUs to; its security domains are label namespaces in the PKCS#11 token
(``tessera/sd/<AID>/<KVN>``, one AES key per key version). Tessera sends a work item of kind
``token_ops``: an ordered list of operations, each with the outcomes that let the item go on.

Each operation travels in the slot of a protocol :class:`~agent.protocol.Command`: its bytes are
the operation's canonical JSON (UTF-8, sorted keys) and its ``expect`` is ``["9000"]``. Its answer
is the result's canonical JSON followed by a two-byte status: ``90 00`` when the outcome is one the
operation expects, ``69 85`` otherwise (the item then ends ``failed``, as at an unexpected SW).
So the journal (written before each operation, its answer after), the exchange's bounds, the
``interrupted`` settlement after a crash and the portal's once-only recording apply unchanged —
the guarantees of an APDU script, with token operations inside.

Operations (every one is idempotent by outcome, so a retried item is safe):

==============  ====================================  ===========================================
``receive_key`` ``envelope`` (:mod:`gp.tokenwrap`),    ``received`` — derived into the token and
                ``replace`` (bool), ``kcv`` (the      confirmed; ``present`` — the same key is
                sender's declared check value),
                ``oce`` (a confidential envelope's    already there (its CMAC over the envelope's
                ``{certificates, signature}``)        confirmation message equals the tag);
                                                      ``conflict`` — another key holds the label;
                                                      ``rejected`` — the envelope failed;
                                                      ``kcv_mismatch`` — confirmed, but not the
                                                      declared key: destroyed again;
                                                      ``unauthenticated`` — its OCE signature does
                                                      not verify to the pinned CA root (the token
                                                      is not touched; :mod:`agent.ocepin`)
``delete_key``  ``label``                             ``deleted`` | ``absent``
``delete_sd``   ``aid``                               ``deleted`` (``count``) | ``absent``
``list``        ``prefix``                            ``listed``, ``keys``: [[label, length, kcv]]
==============  ====================================  ===========================================

``receive_key``, ``delete_key`` and ``list`` answer each key's check value ``kcv``: the first
three bytes of AES-CMAC_K(16 zero bytes), computed in the token (the key never leaves it; a
SIGN-only key cannot give the classic AES-ECB KCV). The portal records it as the key set's KCV.

No key material is ever in an operation's answer or in a log line (envelopes carry wrapped keys
only; log lines name operations, labels and outcomes).
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gp import tokenwrap

__all__ = [
    "KCV_BLOCK",
    "OPS",
    "SW_OK",
    "SW_UNEXPECTED",
    "OpResult",
    "TokenOpError",
    "decode_op",
    "decode_result",
    "encode_op",
    "envelope_signed_data",
    "encode_result",
    "execute",
    "kcv_of",
    "key_check_value",
    "sd_prefix",
    "sign_envelope",
]

SW_OK = b"\x90\x00"
SW_UNEXPECTED = b"\x69\x85"
KCV_BLOCK = bytes(16)
OPS = ("receive_key", "delete_key", "delete_sd", "list")
_OUTCOMES = {
    "receive_key": {"received", "present", "conflict", "rejected", "kcv_mismatch", "unauthenticated"},
    "delete_key": {"deleted", "absent"},
    "delete_sd": {"deleted", "absent"},
    "list": {"listed"},
}
_AID = re.compile(r"(?:[0-9A-F]{2}){5,16}")
ENVELOPE_SIG_CONTEXT = b"tessera-envelope-sig/v1"


class TokenOpError(ValueError):
    """A malformed token operation (never a token failure: those are :class:`TokenError`)."""


def sd_prefix(aid: str) -> str:
    """The label prefix of an SD's keys in the token: ``tessera/sd/<AID>/``."""
    if not isinstance(aid, str) or not _AID.fullmatch(aid):
        raise TokenOpError("aid must be 5-16 bytes of upper-case hex")
    return f"tessera/sd/{aid}/"


def envelope_signed_data(envelope: tokenwrap.Envelope, device_id: bytes) -> bytes:
    """What a provider's OCE key signs for a confidential envelope (docs/tee-bridge.md §8.3):
    ``"tessera-envelope-sig/v1" ‖ len(device id) ‖ device id ‖ canonical JSON of the envelope``."""
    if not 1 <= len(device_id) <= 16:
        raise TokenOpError("a device id is 1-16 bytes")
    return ENVELOPE_SIG_CONTEXT + bytes([len(device_id)]) + device_id + _canonical(envelope.to_json())


def sign_envelope(private_key: Any, envelope: tokenwrap.Envelope, device_id: bytes) -> str:
    """The provider's tooling: ECDSA P-256 / SHA-256 (DER, hex) of :func:`envelope_signed_data`."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    return (
        private_key.sign(envelope_signed_data(envelope, device_id), ec.ECDSA(hashes.SHA256())).hex().upper()
    )


def kcv_of(cmac_zero: bytes) -> str:
    return cmac_zero[:3].hex().upper()


def key_check_value(key: bytes) -> str:
    """The KCV of a key the token holds, computed in software (the portal's and the provider's side):
    the first 3 bytes of AES-CMAC_K(16 zero bytes), 6 upper-case hex digits."""
    from cryptography.hazmat.primitives import cmac
    from cryptography.hazmat.primitives.ciphers import algorithms

    c = cmac.CMAC(algorithms.AES(key))
    c.update(KCV_BLOCK)
    return kcv_of(c.finalize())


def _canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def encode_op(op: str, *, expect: list[str], **args: Any) -> bytes:
    """The bytes of one operation (checked: :func:`decode_op` accepts them)."""
    data = _canonical({"op": op, "expect": list(expect), **args})
    decode_op(data)
    return data


def decode_op(data: bytes) -> dict[str, Any]:
    """Parse and check one operation; :class:`TokenOpError` names what is wrong."""
    try:
        obj = json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise TokenOpError("an operation is UTF-8 JSON") from None
    if not isinstance(obj, dict):
        raise TokenOpError("an operation is a JSON object")
    op = obj.get("op")
    if op not in OPS:
        raise TokenOpError(f"unknown operation {str(op)[:32]!r}")
    expect = obj.get("expect")
    if not isinstance(expect, list) or not expect or not set(expect) <= _OUTCOMES[op]:
        raise TokenOpError(f"{op}: expect must list outcomes among {', '.join(sorted(_OUTCOMES[op]))}")
    allowed = {
        "receive_key": {"envelope", "replace", "kcv", "oce"},
        "delete_key": {"label"},
        "delete_sd": {"aid"},
        "list": {"prefix"},
    }[op]
    extra = set(obj) - allowed - {"op", "expect"}
    if extra:
        raise TokenOpError(f"{op}: unknown field {sorted(extra)[0][:32]!r}")
    if op == "receive_key":
        try:
            obj["envelope"] = tokenwrap.Envelope.from_json(obj.get("envelope"))
        except tokenwrap.EnvelopeError as e:
            raise TokenOpError(f"receive_key: {e}") from None
        if not obj["envelope"].label.startswith("tessera/sd/"):
            raise TokenOpError("receive_key: the label must be an SD key's (tessera/sd/...)")
        if not isinstance(obj.get("replace", False), bool):
            raise TokenOpError("receive_key: replace must be a boolean")
        kcv = obj.get("kcv")
        if kcv is not None and (not isinstance(kcv, str) or not re.fullmatch(r"[0-9A-F]{6}", kcv)):
            raise TokenOpError("receive_key: kcv must be 6 upper-case hex digits")
        if "oce" in obj:
            _check_oce(obj["oce"])
    elif op == "delete_key":
        try:
            tokenwrap.check_label(obj.get("label"))
        except tokenwrap.EnvelopeError as e:
            raise TokenOpError(f"delete_key: {e}") from None
        if not obj["label"].startswith("tessera/sd/"):
            raise TokenOpError("delete_key: only SD keys (tessera/sd/...) are deleted by Tessera")
    elif op == "delete_sd":
        sd_prefix(obj.get("aid"))
    else:
        prefix = obj.get("prefix")
        if not isinstance(prefix, str) or not prefix.startswith("tessera/sd/") or len(prefix) > 64:
            raise TokenOpError("list: prefix must start with tessera/sd/")
    return obj


_HEX = re.compile(r"(?:[0-9A-F]{2})+")


def _check_oce(oce: object) -> None:
    """``{"certificates": [1-4 hex, leaf last], "signature": hex}`` (bounds as the portal's)."""
    if not isinstance(oce, dict) or set(oce) != {"certificates", "signature"}:
        raise TokenOpError("receive_key: oce must be {certificates, signature}")
    certificates, signature = oce["certificates"], oce["signature"]
    if (
        not isinstance(certificates, list)
        or not 1 <= len(certificates) <= 4
        or not all(isinstance(c, str) and len(c) <= 4096 and _HEX.fullmatch(c) for c in certificates)
    ):
        raise TokenOpError("receive_key: oce.certificates must be 1-4 certificates in upper-case hex")
    if not isinstance(signature, str) or len(signature) > 160 or not _HEX.fullmatch(signature):
        raise TokenOpError("receive_key: oce.signature must be upper-case hex")


@dataclass(frozen=True, slots=True)
class OpResult:
    outcome: str
    ok: bool
    data: dict[str, Any]

    def encode(self) -> bytes:
        return encode_result(self.outcome, self.ok, **self.data)


def encode_result(outcome: str, ok: bool, **data: Any) -> bytes:
    return _canonical({"outcome": outcome, **data}) + (SW_OK if ok else SW_UNEXPECTED)


def decode_result(rapdu: bytes) -> tuple[dict[str, Any], bool]:
    """An operation's answer → (its JSON, whether the outcome was expected). ValueError if unreadable."""
    if len(rapdu) < 4 or rapdu[-2:] not in (SW_OK, SW_UNEXPECTED):
        raise ValueError("not a token operation's answer")
    obj = json.loads(bytes(rapdu[:-2]).decode("utf-8"))
    if not isinstance(obj, dict) or not isinstance(obj.get("outcome"), str):
        raise ValueError("not a token operation's answer")
    return obj, rapdu[-2:] == SW_OK


def execute(token: Any, data: bytes, *, oce_root: Callable[[], Any] | None = None) -> OpResult:
    """Run one operation on ``token`` (an :class:`agent.pkcs11.token.Token`).

    ``oce_root`` gives the CA root pinned at enrolment (an :class:`agent.ocepin.PinnedRoot`, or
    None when none is pinned); it is called only for an envelope that carries an OCE signature,
    which must then verify to that root before the token sees the envelope (else the outcome is
    ``unauthenticated``). Without a pinned root such an envelope is received as before (the portal
    checked it; ``doctor`` warns).

    :class:`TokenOpError` for a malformed operation; the token's own failures
    (:class:`~agent.pkcs11.token.TokenError`) propagate: the runner reports the item interrupted.
    A pinned root that cannot be read raises :class:`~agent.errors.ConfigError`.
    """
    op = decode_op(data)
    name, expect = op["op"], set(op["expect"])
    out: dict[str, Any]
    if name == "receive_key" and "oce" in op and oce_root is not None:
        root = oce_root()
        if root is not None:
            from agent.ocepin import OceUnverified, verify_envelope

            try:
                verify_envelope(root, op["envelope"], token.device_id(), op["oce"])
            except OceUnverified as e:
                out = {"label": op["envelope"].label, "detail": str(e)[:200]}
                return OpResult("unauthenticated", "unauthenticated" in expect, out)
    if name == "receive_key":
        outcome, out = _receive(token, op["envelope"], replace=op.get("replace", False), kcv=op.get("kcv"))
    elif name == "delete_key":
        label = op["label"]
        outcome, out = ("deleted" if token.delete_key(label) else "absent"), {"label": label}
    elif name == "delete_sd":
        keys = token.list_keys(sd_prefix(op["aid"]))
        for key in keys:
            token.delete_key(key.label)
        outcome, out = ("deleted" if keys else "absent"), {"aid": op["aid"], "count": len(keys)}
    else:
        keys = token.list_keys(op["prefix"])
        listed = [[k.label, k.length, kcv_of(token.cmac(k.label, KCV_BLOCK))] for k in keys]
        outcome, out = "listed", {"keys": listed}
    return OpResult(outcome, outcome in expect, out)


def _receive(
    token: Any, envelope: tokenwrap.Envelope, *, replace: bool, kcv: str | None
) -> tuple[str, dict[str, Any]]:
    label = envelope.label
    out: dict[str, Any] = {"label": label}
    if token.has_key(label):
        q = token.receive_public_point()
        message = tokenwrap.kc_message(envelope.ephemeral, q, label, envelope.wrapped)
        if hmac.compare_digest(token.cmac(label, message), envelope.tag):
            out["kcv"] = kcv_of(token.cmac(label, KCV_BLOCK))
            return "present", out
        if not replace:
            return "conflict", out
    try:
        token.receive_key(envelope, replace=replace)
    except tokenwrap.EnvelopeError as e:
        return "rejected", {**out, "detail": str(e)[:200]}
    out["kcv"] = kcv_of(token.cmac(label, KCV_BLOCK))
    if kcv is not None and out["kcv"] != kcv:
        token.delete_key(label)  # not the key the sender declared: the token keeps no such key
        return "kcv_mismatch", out
    return "received", out
