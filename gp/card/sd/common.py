"""Shared pieces of Security Domain command processing: status words, :class:`CardError`, the
per-channel :class:`ChannelContext`, and the checks every handler makes.

Status word policy where GP Card Spec v2.3.1 only says "reject" (§11.1.3, Table 11-10): the acting
entity lacks the privilege or authority → ``6982``; the card, the target or the sequence is in the
wrong state → ``6985``; malformed data → ``6A80``; unknown P1/P2 → ``6A86``; target absent →
``6A88``; memory exhausted → ``6A84``.  Transient channel state: GP CS v2.3.1 §7.3.2
(personalization routing), §11.6.2 (LOAD sequence), §11.4.2 (GET STATUS continuation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import algorithms

from gp.card.state import (
    CardState,
)
from gp.commands.status import StatusScope
from gp.commands.types import AID, CardLifeCycle, Privileges
from gp.errors import ParseError

SD_LOAD_FILE_AID = AID("A0000001515350")
SD_MODULE_AID = AID("A000000151535041")

SW_OK = 0x9000
SW_MORE = 0x6310
SW_MEMORY_FAILURE = 0x6581
SW_WRONG_LENGTH = 0x6700
SW_SECURITY = 0x6982
SW_CONDITIONS = 0x6985
SW_WRONG_DATA = 0x6A80
SW_NO_MEMORY = 0x6A84
SW_P1P2 = 0x6A86
SW_NOT_FOUND = 0x6A88
SW_INS = 0x6D00

_RESPONSE_BUDGET = 256 - 32  # room for an R-MAC and R-ENC padding in a short response
# Privileges only the ISD may grant (GP CS v2.3.1 §6.6.2: card-wide powers stay with the issuer).
_ISSUER_ONLY = (
    Privileges.AUTHORIZED_MANAGEMENT
    | Privileges.TOKEN_VERIFICATION
    | Privileges.GLOBAL_DELETE
    | Privileges.GLOBAL_LOCK
    | Privileges.GLOBAL_REGISTRY
    | Privileges.CARD_LOCK
    | Privileges.CARD_TERMINATE
    | Privileges.FINAL_APPLICATION
    | Privileges.RECEIPT_GENERATION
    | Privileges.CVM_MANAGEMENT
)


class CardError(Exception):
    """A command is refused with ``sw``; the card state is rolled back by the dispatcher."""

    def __init__(self, sw: int, reason: str = "") -> None:
        super().__init__(f"{sw:04X} {reason}")
        self.sw = sw
        self.reason = reason


@dataclass
class LoadInProgress:
    load_file_aid: AID
    sd_aid: AID
    digest: bytes
    size_hint: int
    next_block: int = 0
    buffer: bytearray = field(default_factory=bytearray)
    delegated: bool = False


@dataclass
class ChannelContext:
    """Transient per-channel state the SD commands use (cleared on reset, channel close, SELECT)."""

    load: LoadInProgress | None = None
    perso_target: AID | None = None
    store_next_block: int = 0
    status_pending: tuple[StatusScope, list[bytes]] | None = None
    decrypt: Callable[[bytes], bytes] | None = None  # sensitive-data decryption of the session
    authenticated: bool = False
    # A confidential key-loading package arriving over several STORE DATA blocks (gp.card.sd.keyload).
    key_package: bytearray | None = None
    # An SCP11a/c session opened with an OCE certificate chain: a provider, not the issuer. Only
    # INSTALL [for personalization] of an SSD, the key-set STORE DATA and GET STATUS run in it
    # (gp.card.sd.entry); ``session_dek`` is its S-DEK, for the key-set DGI (gp.keydelivery).
    oce_session: bool = False
    session_dek: bytes | None = field(default=None, repr=False)

    def clear(self) -> None:
        self.load = None
        self.perso_target = None
        self.store_next_block = 0
        self.status_pending = None
        self.key_package = None


def _parse_error_sw(e: ParseError) -> int:
    return SW_P1P2 if e.offset in (2, 3) else SW_WRONG_DATA


def _require_auth(ctx: ChannelContext) -> None:
    if not ctx.authenticated:
        raise CardError(SW_SECURITY, "no authenticated secure channel session")


def _require_operational(state: CardState) -> None:
    if state.life_cycle in (CardLifeCycle.CARD_LOCKED, CardLifeCycle.TERMINATED):
        raise CardError(SW_CONDITIONS, f"card is {state.life_cycle.name}")


def _cmac(key: bytes, message: bytes) -> bytes:
    c = cmac.CMAC(algorithms.AES(key))
    c.update(message)
    return c.finalize()


def _lv(b: bytes) -> bytes:
    return bytes([len(b)]) + b


def _check_memory(state: CardState, extra: int) -> None:
    if extra > state.memory_free():
        raise CardError(SW_NO_MEMORY, f"{extra} bytes needed, {state.memory_free()} free")
