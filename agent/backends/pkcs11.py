"""A PKCS#11 token as the device's key store (``backend = "pkcs11:LABEL"`` with a ``[token]`` table).

A TEE-backed gateway has no secure element to send APDUs to: its keys live in OP-TEE's PKCS#11 TA
(:mod:`agent.pkcs11`). This backend answers the runner's ``identifiers`` (``se_serial`` is the
token's device id, :meth:`agent.pkcs11.token.Token.device_id`) and the local API's session keys
(derived in the token from the SD's master key ``tessera/sd/<AID>/72``); APDU scripts do not apply
to it (``takes_apdus`` is False, so the runner rejects them rather than reporting a lost card).
"""

from __future__ import annotations

from agent.errors import BackendError
from agent.pkcs11.token import Token, TokenError
from gp import tokenwrap

__all__ = ["TokenBackend"]


class TokenBackend:
    kind = "pkcs11"
    takes_apdus = False

    def __init__(self, token: Token) -> None:
        self.token = token

    def transmit(self, apdu: bytes) -> bytes:
        raise BackendError("a PKCS#11 token takes no APDUs")

    def reset(self) -> None:
        """Nothing to reset: a token keeps no session state between operations."""

    def close(self) -> None:
        """The token stays open for the process (agent.pkcs11.runtime.close_tokens closes it)."""

    def identifiers(self) -> dict[str, str]:
        return self.token.identifiers()

    def current_kvn(self, sd: bytes) -> int | None:
        """The version of the SD's key in the token: after a rotation (receive new, delete old, one
        work item) there is one; between the two operations the newer (higher) one."""
        try:
            prefix = tokenwrap.master_key_label(sd, 0x01)[:-2]
        except tokenwrap.EnvelopeError:
            return None
        versions = []
        for key in self.token.list_keys(prefix):
            tail = key.label[len(prefix) :]
            if len(tail) == 2:
                try:
                    versions.append(int(tail, 16))
                except ValueError:
                    continue
        return max(versions) if versions else None

    def derive_session_key(self, *, sd: bytes, service: str, epoch: int) -> bytes:
        """The local API's session key, derived in the token (docs/session-keys.md §2)."""
        from agent.localapi import LocalApiError

        kvn = self.current_kvn(sd)
        if kvn is None:
            raise LocalApiError(
                404, "no_master_key", f"security domain {sd.hex().upper()} holds no service master key"
            )
        try:
            return self.token.derive_session_key(sd, service=service, epoch=epoch, kvn=kvn)
        except TokenError as e:
            raise LocalApiError(502, "card_error", str(e)) from None
