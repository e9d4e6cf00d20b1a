"""The software Secure Element: a GlobalPlatform v2.3.1 card without a Java Card VM.

:class:`SoftCard` owns the persistent :class:`~gp.card.state.CardState` and a
:class:`~gp.card.dispatcher.Dispatcher` for the transient part.  ``transmit`` never raises:

1. The dispatcher processes the APDU (status words for every refusal, GP CS v2.3.1 Table 11-10).
2. A command answered with an error status word leaves the persistent state exactly as it was:
   the state is restored to the last committed one ("changes nothing").
3. A successful command that changed the state is committed: serialised, sealed and atomically
   written (:mod:`gp.card.storage`).  If that write fails the in-memory state is restored too and
   the card answers ``6581`` (memory failure), like a card whose NVM write failed.

Two ways to honour 2 and 3, chosen by instruction byte (sent in clear even under secure
messaging, Amd D §6.2.4):

- The card content management commands that edit the registry or key stores — INSTALL, LOAD,
  DELETE, PUT KEY, STORE DATA, SET STATUS (:data:`MUTATING_INS`) — run against a serialised
  snapshot: restored on error, compared and written on success.
- Every other command (SELECT, MANAGE CHANNEL, INITIALIZE UPDATE, EXTERNAL AUTHENTICATE, GET
  STATUS, GET DATA, anything refused) leaves the persistent state alone except through the
  dispatcher's undo journal: INITIALIZE UPDATE records the sequence counter it increments
  (Amd D §6.2.2.1).  An error replays the journal; a success with an empty journal neither
  serialises nor writes anything; a counter step is written only when it raised a reservation.

Sequence counter reservation (persisted cards).  Amd D §6.2.2.1 wants the counter to survive a
power loss: a pseudo-random card challenge must never repeat, so a counter value must never be
used twice.  Skipping values is allowed.  Instead of writing (and fsyncing) the whole state for
every INITIALIZE UPDATE, the card reserves a window of :data:`COUNTER_RESERVATION` values:

1. Each key set has a high-water mark ``reserved_until`` (:class:`~gp.card.state.KeySet`), written
   in the card file as "resume here".  An INITIALIZE UPDATE whose counter ``c`` is below it steps
   the counter in memory only: no write.
2. When ``c`` reaches it, the card first raises it to ``min(c + COUNTER_RESERVATION, 2^24)``,
   writes and fsyncs the state (:mod:`gp.card.storage`), and only then answers.  A failed write
   undoes the step and the card answers ``6581``, as for any failed write.
3. :meth:`SoftCard.open` resumes every key set at ``max(counter, reserved_until)`` of the file.
   After a crash (kill, power loss: no :meth:`SoftCard.close`) the counter therefore jumps to the
   reservation, skipping the unused values of the window (at most ``COUNTER_RESERVATION``) but
   never repeating one: every value used was below the ``reserved_until`` already on disk.
4. :meth:`SoftCard.close` — a clean shutdown — writes the exact counters and drops the
   reservations, so the next :meth:`open` continues with no gap.  ``close`` is idempotent, writes
   nothing when no reservation is outstanding, and leaves the object usable (the next
   INITIALIZE UPDATE reserves again, with one write).
5. Every full state write (card content management commands) records the live counters and the
   reservations, so it never moves a resume point backwards.

An in-memory card (``path`` None) has nothing to survive and does not reserve: its state, and
``state_dict()``, carry the exact counters only.  Off-card entities that precompute scripts
(:mod:`jobs.compiler`) see a jump after a crash as a sequence counter mismatch: the card refuses
EXTERNAL AUTHENTICATE, reports the counter it used, and the retry is computed with it.

The read-only answers GET STATUS and GET DATA (all but the sequence counter) are memoised in the
state (:attr:`CardState.responses`); the card content management handlers empty the memo around
every command (:func:`gp.card.sd.entry.process`), and a state restored from a snapshot starts with
an empty one.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric import ec

from gp.apdu import is_success_or_warning
from gp.card import storage
from gp.card.casd import DEFAULT_CASD_KVN, Casd, casd_public_key
from gp.card.dispatcher import Dispatcher
from gp.card.registry import RegistryView
from gp.card.sd import SD_LOAD_FILE_AID, SD_MODULE_AID
from gp.card.sd.entry import MUTATING_INS as _SD_MUTATING_INS
from gp.card.state import Application, CardState, Key, KeySet, KeyStore, LoadFile
from gp.commands.get_data import CPLC
from gp.commands.types import AID, CardLifeCycle, KeyType, LifeCycle, Privileges
from gp.errors import GPError
from gp.scp03 import StaticKeys

__all__ = ["ATR", "COUNTER_RESERVATION", "ISD_PRIVILEGES", "SoftCard"]

log = logging.getLogger(__name__)

# TS=3B, T0=8A (TD1, 10 historical bytes), TD1=80 (T=0, TD2), TD2=01 (T=1), "TESSERA-SE", TCK.
_ATR_BODY = bytes([0x8A, 0x80, 0x01]) + b"TESSERA-SE"


def _tck(body: bytes) -> int:
    x = 0
    for b in body:
        x ^= b
    return x


ATR = b"\x3b" + _ATR_BODY + bytes([_tck(_ATR_BODY)])

ISD_PRIVILEGES = (
    Privileges.SECURITY_DOMAIN
    | Privileges.CARD_LOCK
    | Privileges.CARD_TERMINATE
    | Privileges.CARD_RESET
    | Privileges.CVM_MANAGEMENT
    | Privileges.TRUSTED_PATH
    | Privileges.AUTHORIZED_MANAGEMENT
    | Privileges.TOKEN_VERIFICATION
    | Privileges.GLOBAL_DELETE
    | Privileges.GLOBAL_LOCK
    | Privileges.GLOBAL_REGISTRY
    | Privileges.FINAL_APPLICATION
    | Privileges.RECEIPT_GENERATION
)


# INSTALL, LOAD, DELETE, PUT KEY, STORE DATA, SET STATUS: the only commands whose handlers edit
# the registry or a key store (gp.card.sd); all others change at most a sequence counter, through
# the dispatcher's undo journal.
MUTATING_INS = _SD_MUTATING_INS

# Sequence counter values reserved per state write on a persisted card (module docstring): one
# write + fsync (about 2 ms) per this many INITIALIZE UPDATEs, and at most this many values skipped
# after a crash: 2^24 / 256 = 65536 crashes before the 3-byte counter runs out.
COUNTER_RESERVATION = 256


def _keysets(state: CardState) -> list[KeySet]:
    return [ks for app in state.applications.values() for ks in app.keys.sets.values()]


def _serialise(state: CardState) -> bytes:
    return json.dumps(state.to_dict(), sort_keys=True, separators=(",", ":")).encode()


class SoftCard:
    """A GlobalPlatform card in software; see the module docstring for the transaction model."""

    def __init__(self, state: CardState, *, path: str | None, state_key: bytes | None) -> None:
        self._path = path
        self._key = storage.resolve_state_key(path, state_key) if path is not None else None
        self._state = state
        # The serialised committed state, or None when it has to be recomputed (it goes stale when
        # a journaled change — a sequence counter step — is committed in memory only).
        self._committed: bytes | None = _serialise(state)
        self._dispatcher = Dispatcher(state, counter_reservation=COUNTER_RESERVATION if path else 0)

    # -- construction --

    @classmethod
    def create(
        cls,
        path: str | None,
        *,
        isd_aid: bytes,
        keys: StaticKeys,
        key_version: int,
        i_param: int = 0x70,
        sequence_counter: int = 1,
        state_key: bytes | None = None,
        serial: bytes | None = None,
        memory_capacity: int = 256 * 1024,
        casd_kvn: int = DEFAULT_CASD_KVN,
    ) -> SoftCard:
        """A fresh card in OP_READY with the SD load file pre-loaded and one SCP03 key set on the ISD.

        The card also generates its CASD key pair (P-256, :mod:`gp.card.casd`) here, inside the
        card; only the public key ever leaves it (:meth:`casd_public_key`).
        """
        if not 1 <= casd_kvn <= 0x7F:
            raise GPError(f"CASD key version {casd_kvn:#x} outside 01..7F")
        isd = AID(isd_aid)
        if not 1 <= key_version <= 0x7F and key_version != 0xFF:
            raise GPError(f"key version {key_version:#x} outside 01..7F (or FF)")
        serial = serial if serial is not None else os.urandom(4)
        if len(serial) != 4:
            raise GPError("the IC serial number is 4 bytes")
        cplc = CPLC(
            ic_fabricator=b"\x54\x53",  # "TS"
            ic_type=b"\x00\x01",
            os_identifier=b"\x54\x53",
            os_release_date=b"\x60\x01",
            os_release_level=b"\x02\x31",
            ic_serial_number=serial,
        )
        keyset = KeySet(
            key_version,
            {
                1: Key(1, KeyType.AES, keys.enc),
                2: Key(2, KeyType.AES, keys.mac),
                3: Key(3, KeyType.AES, keys.dek),
            },
            sequence_counter,
        )
        isd_app = Application(
            isd,
            SD_LOAD_FILE_AID,
            SD_MODULE_AID,
            ISD_PRIVILEGES,
            LifeCycle(0x0F),
            None,
            keys=KeyStore({key_version: keyset}),
        )
        state = CardState(
            isd,
            CardLifeCycle.OP_READY,
            i_param,
            cplc.encode(),
            iin=bytes.fromhex("42") + serial[:2],
            cin=serial + bytes(4),
            applications={isd: isd_app},
            load_files={SD_LOAD_FILE_AID: LoadFile(SD_LOAD_FILE_AID, isd, [SD_MODULE_AID], in_rom=True)},
            memory_capacity=memory_capacity,
            casd=Casd.generate(kvn=casd_kvn),
        )
        card = cls(state, path=path, state_key=state_key)
        if path is not None:
            storage.save(path, _serialise(card._state), card._key)  # type: ignore[arg-type]
        return card

    @classmethod
    def open(cls, path: str, *, state_key: bytes | None = None) -> SoftCard:
        """The card persisted in ``path``; every sequence counter resumes at its reservation.

        After a clean :meth:`close` that is the exact counter; after a crash it is the high-water
        mark the file holds, skipping the unused rest of the window (module docstring).
        """
        key = storage.resolve_state_key(path, state_key)
        payload = storage.load(path, key)
        try:
            state = CardState.from_dict(json.loads(payload))
        except (ValueError, KeyError, TypeError) as e:
            raise storage.StorageError(f"{path}: card state does not decode: {e}") from None
        for keyset in _keysets(state):
            keyset.sequence_counter = keyset.resume_point()
        return cls(state, path=path, state_key=state_key)

    def close(self) -> bool:
        """Clean shutdown: write the exact sequence counters, dropping the reservations.

        Then the next :meth:`open` continues at the exact counters, with no values skipped.
        Writes nothing when no reservation is outstanding (or the card is in memory).  Idempotent;
        the card stays usable (its next INITIALIZE UPDATE reserves again).  A failed write is
        logged and keeps the reservations, which is safe: the card then resumes as after a crash.
        Returns True when the file holds the exact counters.
        """
        if self._path is None:
            return True
        outstanding = [ks for ks in _keysets(self._state) if ks.reserved_until > ks.sequence_counter]
        if not outstanding:
            return True
        saved = [(ks, ks.reserved_until) for ks in outstanding]
        for ks in outstanding:
            ks.reserved_until = ks.sequence_counter
        if self._write(_serialise(self._state)):
            return True
        for ks, reserved in saved:
            ks.reserved_until = reserved
        return False

    def __enter__(self) -> SoftCard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the card interface --

    @property
    def atr(self) -> bytes:
        return ATR

    def transmit(self, apdu: bytes) -> bytes:
        """Process one command APDU; always returns a response ending with a status word."""
        raw = bytes(apdu)
        if len(raw) >= 4 and raw[1] in MUTATING_INS:
            return self._transmit_snapshot(raw)
        dispatcher = self._dispatcher
        journal = dispatcher.journal
        journal.clear()
        dispatcher.durable = False
        try:
            response = dispatcher.process(raw)
        except Exception:  # a bug must not kill the reader loop: answer like a card would
            log.exception("soft card: unexpected error processing an APDU")
            self._undo(journal)
            return b"\x6f\x00"
        if not journal:
            return response  # nothing persistent changed: nothing to restore, nothing to write
        sw = int.from_bytes(response[-2:], "big")
        if not is_success_or_warning(sw) and sw >> 8 != 0x61:
            self._undo(journal)
            return response
        if self._path is None or not dispatcher.durable:
            # A counter step inside its reservation (or on an in-memory card): kept in memory;
            # the committed snapshot is stale now, so a later rollback must not restore it.
            self._committed = None
            journal.clear()
            return response
        snapshot = _serialise(self._state)
        if self._write(snapshot):
            journal.clear()
            return response
        self._undo(journal)
        return b"\x65\x81"

    def _transmit_snapshot(self, raw: bytes) -> bytes:
        before = self._committed
        if before is None:
            before = self._committed = _serialise(self._state)
        try:
            response = self._dispatcher.process(raw)
        except Exception:  # a bug must not kill the reader loop: answer like a card would
            log.exception("soft card: unexpected error processing an APDU")
            self._rollback(before)
            return b"\x6f\x00"
        sw = int.from_bytes(response[-2:], "big")
        if not is_success_or_warning(sw) and sw >> 8 != 0x61:
            self._rollback(before)
            return response
        snapshot = _serialise(self._state)
        if snapshot == before:
            return response
        if self._path is not None and not self._write(snapshot):
            self._rollback(before)
            return b"\x65\x81"
        self._committed = snapshot
        return response

    def reset(self) -> None:
        """Warm reset / power cycle: closes channels and secure channel sessions."""
        self._dispatcher.reset()

    power_off = reset

    # -- helpers for tests and tools --

    @property
    def path(self) -> str | None:
        return self._path

    @property
    def registry(self) -> RegistryView:
        return RegistryView.of(self._state)

    @property
    def life_cycle(self) -> CardLifeCycle:
        return self._state.life_cycle

    def state_dict(self) -> dict[str, object]:
        """The persistent state as plain data (includes SCP03 key values: for tests only).

        The CASD private key is never exported, here neither: it is left out (a state rebuilt from
        this dict has no CASD; the key pair lives only in the card and its sealed file).
        """
        d = self._state.to_dict()
        if "casd" in d:
            d["casd"] = {k: v for k, v in d["casd"].items() if k != "sk"}  # type: ignore[union-attr]
        return d

    def casd_public_key(self) -> ec.EllipticCurvePublicKey:
        """PK.CASD.ECKA, generated inside this card at creation (GPError if the card has none)."""
        if self._state.casd is None:
            raise GPError("this card has no CASD (created before CASD support)")
        return casd_public_key(self._state)

    def casd_identifier(self) -> bytes:
        """The identity the CA binds to the CASD key: the card's CIN (GET DATA ``45``)."""
        return bytes(self._state.cin)

    def casd_key_reference(self) -> tuple[int, int]:
        """``(KVN, KID)`` of the SCP11a key reference of the CASD (KIDs 11/13/15 for a/b/c)."""
        if self._state.casd is None:
            raise GPError("this card has no CASD")
        return self._state.casd.kvn, 0x11

    def sequence_counter(self, sd_aid: bytes, kvn: int) -> int:
        """The counter the next INITIALIZE UPDATE with that key set uses."""
        return self._state.applications[AID(sd_aid)].keys.sets[kvn].sequence_counter

    def reserved_until(self, sd_aid: bytes, kvn: int) -> int:
        """The key set's counter reservation (0 or <= the counter: none outstanding)."""
        return self._state.applications[AID(sd_aid)].keys.sets[kvn].reserved_until

    # -- transactions --

    def _rollback(self, committed: bytes) -> None:
        if _serialise(self._state) != committed:
            self._state = CardState.from_dict(json.loads(committed))
            self._dispatcher.state = self._state

    def _undo(self, journal: list[Callable[[], None]]) -> None:
        while journal:
            journal.pop()()

    def _write(self, snapshot: bytes) -> bool:
        """Seal and write ``snapshot``; False (logged) when the write failed."""
        try:
            storage.save(self._path, snapshot, self._key)  # type: ignore[arg-type]
        except Exception:
            log.exception("soft card: state write failed; command undone")
            return False
        self._committed = snapshot
        return True
