"""The persistent state of the software Secure Element: the GlobalPlatform Registry and key stores.

- Registry data elements (GP CS v2.3.1 §6.5.1): AID, life cycle, privileges, associated Security
  Domain, load file / module of origin; card-wide data (§6.5.2): card life cycle, IIN, CIN, CPLC.
- Key store per Security Domain (§7.5, Table 11-16 key types): keys addressed by (KVN, KID) with a
  type and optional usage / access (§11.1.9, §11.1.10).  Any key type can be stored, so SCP11 keys
  (ECC ``B0``/``B1`` with an ``F0`` parameter reference) fit without a change of layout; SCP03 key
  sets are the keys of types ``88`` at KIDs 1, 2, 3 of one KVN (Amendment D v1.2 §6.1), each set
  with its own sequence counter (§6.2.2.1).

Everything here is plain data with ``to_dict`` / ``from_dict`` so the card can persist it and tests
can compare a re-opened card with the live one.  Transient state (logical channels, secure channel
sessions, a LOAD or STORE DATA in progress) lives in :mod:`gp.card.dispatcher`.

Two transient members are not data and never serialised or compared:

- :attr:`CardState.version` and :attr:`CardState.responses`: a memo of encoded read-only answers
  (GET STATUS records, GET DATA objects) that depend on nothing but the state.  Every command that
  may edit the registry or a key store calls :meth:`CardState.changed` before it runs (and after),
  which bumps ``version`` and empties the memo; a state rebuilt from a snapshot starts with an
  empty one.  Sequence counters are deliberately outside it: they move with every INITIALIZE
  UPDATE, and the one answer that shows them (GET DATA ``C1``) is never memoised.
- :attr:`KeySet.reserved_until`: the sequence counter high-water mark of a persisted card, see
  :class:`KeySet`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gp.card.casd import Casd
from gp.commands.types import AID, CardLifeCycle, KeyType, LifeCycle, Privileges
from gp.scp03 import StaticKeys

__all__ = ["Application", "CardState", "Key", "KeySet", "KeyStore", "LoadFile"]

SCP03_KIDS = (1, 2, 3)
TOKEN_KVN = 0x70  # Token Verification key (GP CS v2.3.1 §11.1.8 reserved KVNs)
RECEIPT_KVN = 0x71  # Receipt Generation key
MAX_KEY_SETS = 8
INITIAL_SEQUENCE_COUNTER = 1  # the value the first INITIALIZE UPDATE after a (re)load uses


def _hex(b: bytes | None) -> str | None:
    return None if b is None else b.hex()


def _unhex(s: str | None) -> bytes | None:
    return None if s is None else bytes.fromhex(s)


@dataclass
class Key:
    kid: int
    key_type: KeyType
    value: bytes
    usage: int | None = None
    access: int | None = None

    def __repr__(self) -> str:
        return f"Key(kid={self.kid}, {self.key_type.name}, {len(self.value)} bytes)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kid": self.kid,
            "type": int(self.key_type),
            "value": self.value.hex(),
            "usage": self.usage,
            "access": self.access,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Key:
        return cls(d["kid"], KeyType(d["type"]), bytes.fromhex(d["value"]), d.get("usage"), d.get("access"))


@dataclass
class KeySet:
    """One key set and its SCP03 sequence counter (Amd D v1.2 §6.2.2.1).

    ``sequence_counter`` is the value the next INITIALIZE UPDATE uses.  ``reserved_until`` is the
    counter reservation of a persisted card (:mod:`gp.card.softcard`): every value below it may be
    used without writing the card file, because the file already says "resume at
    ``reserved_until``".  It is serialised (``"reserved"``) only while a reservation is outstanding
    (``reserved_until > sequence_counter``), so in-memory cards and cleanly closed ones serialise
    exactly as before; :meth:`resume_point` is where a card re-opened from that data continues.
    """

    kvn: int
    keys: dict[int, Key] = field(default_factory=dict)
    sequence_counter: int = INITIAL_SEQUENCE_COUNTER
    reserved_until: int = 0

    # The StaticKeys last built and the (type, value) of the keys it was built from: INITIALIZE
    # UPDATE asks for them every session, and building one primes two cipher contexts.
    _scp03_cache: tuple[tuple[tuple[KeyType, bytes] | None, ...], StaticKeys | None] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def scp03(self) -> StaticKeys | None:
        parts = tuple(self.keys.get(kid) for kid in SCP03_KIDS)
        signature = tuple((k.key_type, k.value) if k is not None else None for k in parts)
        cached = self._scp03_cache
        if cached is not None and cached[0] == signature:
            return cached[1]
        keys = self._build_scp03(parts)
        self._scp03_cache = (signature, keys)
        return keys

    @staticmethod
    def _build_scp03(parts: tuple[Key | None, ...]) -> StaticKeys | None:
        if any(k is None or k.key_type is not KeyType.AES for k in parts):
            return None
        enc, mac, dek = (k.value for k in parts if k is not None)
        if not len(enc) == len(mac) == len(dek):
            return None
        return StaticKeys(enc, mac, dek)

    def resume_point(self) -> int:
        """The first counter value a card re-opened from this data may use: never one used before."""
        return max(self.sequence_counter, self.reserved_until)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "kvn": self.kvn,
            "counter": self.sequence_counter,
            "keys": [k.to_dict() for k in self.keys.values()],
        }
        if self.reserved_until > self.sequence_counter:
            d["reserved"] = self.reserved_until
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KeySet:
        keys = [Key.from_dict(k) for k in d["keys"]]
        return cls(d["kvn"], {k.kid: k for k in keys}, d["counter"], d.get("reserved", 0))


@dataclass
class KeyStore:
    sets: dict[int, KeySet] = field(default_factory=dict)

    def key(self, kvn: int, kid: int) -> Key | None:
        ks = self.sets.get(kvn)
        return ks.keys.get(kid) if ks else None

    def default_scp03_kvn(self) -> int | None:
        """INITIALIZE UPDATE with KVN 00: the first (lowest) complete SCP03 key set."""
        for kvn in sorted(self.sets):
            if self.sets[kvn].scp03() is not None:
                return kvn
        return None

    def to_dict(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self.sets.values()]

    @classmethod
    def from_dict(cls, d: list[dict[str, Any]]) -> KeyStore:
        sets = [KeySet.from_dict(s) for s in d]
        return cls({s.kvn: s for s in sets})


@dataclass
class LoadFile:
    """An Executable Load File: recorded by AID, hash and size; content kept, never executed."""

    aid: AID
    associated_sd: AID
    modules: list[AID]
    content: bytes = b""
    digest: bytes = b""
    version: bytes = b"\x01\x00"
    in_rom: bool = False

    @property
    def size(self) -> int:
        return len(self.content)

    def to_dict(self) -> dict[str, Any]:
        return {
            "aid": self.aid.hex(),
            "sd": self.associated_sd.hex(),
            "modules": [m.hex() for m in self.modules],
            "content": self.content.hex(),
            "digest": self.digest.hex(),
            "version": self.version.hex(),
            "rom": self.in_rom,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoadFile:
        return cls(
            AID(d["aid"]),
            AID(d["sd"]),
            [AID(m) for m in d["modules"]],
            bytes.fromhex(d["content"]),
            bytes.fromhex(d["digest"]),
            bytes.fromhex(d["version"]),
            d["rom"],
        )


@dataclass
class Application:
    """An application instance or Security Domain in the GP Registry.

    The ISD is an entry too (``associated_sd`` None); its life cycle is the card's, kept in
    :class:`CardState`.  ``keys`` is only used by Security Domains; ``personalization`` keeps the
    STORE DATA content received for the instance, one ``(structure, data)`` record per command.
    """

    aid: AID
    load_file_aid: AID
    module_aid: AID
    privileges: Privileges
    life_cycle: LifeCycle
    associated_sd: AID | None
    install_parameters: bytes = b""
    personalization: list[tuple[int, bytes]] = field(default_factory=list)
    keys: KeyStore = field(default_factory=KeyStore)
    iin: bytes | None = None
    cin: bytes | None = None
    reserved_memory: int = 0

    @property
    def is_security_domain(self) -> bool:
        return self.privileges.is_security_domain

    def has(self, privilege: Privileges) -> bool:
        return bool(self.privileges & privilege)

    def personalization_size(self) -> int:
        return sum(len(d) for _, d in self.personalization)

    def to_dict(self) -> dict[str, Any]:
        return {
            "aid": self.aid.hex(),
            "elf": self.load_file_aid.hex(),
            "module": self.module_aid.hex(),
            "privileges": int(self.privileges),
            "lcs": self.life_cycle.coding,
            "sd": _hex(self.associated_sd),
            "params": self.install_parameters.hex(),
            "perso": [[s, d.hex()] for s, d in self.personalization],
            "keys": self.keys.to_dict(),
            "iin": _hex(self.iin),
            "cin": _hex(self.cin),
            "reserved": self.reserved_memory,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Application:
        sd = _unhex(d["sd"])
        return cls(
            AID(d["aid"]),
            AID(d["elf"]),
            AID(d["module"]),
            Privileges(d["privileges"]),
            LifeCycle.decode(d["lcs"]),
            AID(sd) if sd is not None else None,
            bytes.fromhex(d["params"]),
            [(s, bytes.fromhex(h)) for s, h in d["perso"]],
            KeyStore.from_dict(d["keys"]),
            _unhex(d["iin"]),
            _unhex(d["cin"]),
            d["reserved"],
        )


@dataclass
class CardState:
    isd_aid: AID
    life_cycle: CardLifeCycle
    i_param: int
    cplc: bytes
    iin: bytes
    cin: bytes
    applications: dict[AID, Application] = field(default_factory=dict)
    load_files: dict[AID, LoadFile] = field(default_factory=dict)
    confirmation_counter: int = 0
    memory_capacity: int = 256 * 1024
    # The CASD (gp.card.casd): key pair generated in the card, certificate store, CA-KLOC keys.
    casd: Casd | None = None
    # Confidential key loading (gp.card.sd.keyload): the last package counter accepted per SD AID
    # (hex, upper case). Card-wide and never pruned, so it outlives the SD: a package for an earlier
    # SD of the same AID cannot be replayed into a new one.
    keyload_counters: dict[str, int] = field(default_factory=dict)
    # Transient, see the module docstring: bumped by changed(); the memo of read-only answers.
    version: int = field(default=0, init=False, repr=False, compare=False)
    responses: dict[Any, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def changed(self) -> None:
        """Called around every command that may edit the state: invalidates :attr:`responses`."""
        self.version += 1
        self.responses.clear()

    @property
    def isd(self) -> Application:
        return self.applications[self.isd_aid]

    def memory_used(self) -> int:
        used = sum(lf.size for lf in self.load_files.values() if not lf.in_rom)
        return used + sum(a.personalization_size() + a.reserved_memory for a in self.applications.values())

    def memory_free(self) -> int:
        return self.memory_capacity - self.memory_used()

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "isd": self.isd_aid.hex(),
            "lcs": int(self.life_cycle),
            "i": self.i_param,
            "cplc": self.cplc.hex(),
            "iin": self.iin.hex(),
            "cin": self.cin.hex(),
            "applications": [a.to_dict() for a in self.applications.values()],
            "load_files": [lf.to_dict() for lf in self.load_files.values()],
            "confirmation_counter": self.confirmation_counter,
            "memory": self.memory_capacity,
            **({"casd": self.casd.to_dict()} if self.casd is not None else {}),
            **({"keyload_counters": dict(self.keyload_counters)} if self.keyload_counters else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CardState:
        apps = [Application.from_dict(a) for a in d["applications"]]
        elfs = [LoadFile.from_dict(lf) for lf in d["load_files"]]
        return cls(
            AID(d["isd"]),
            CardLifeCycle(d["lcs"]),
            d["i"],
            bytes.fromhex(d["cplc"]),
            bytes.fromhex(d["iin"]),
            bytes.fromhex(d["cin"]),
            {a.aid: a for a in apps},
            {lf.aid: lf for lf in elfs},
            d["confirmation_counter"],
            d["memory"],
            Casd.from_dict(d["casd"]) if "sk" in d.get("casd", {}) else None,
            {str(k): int(v) for k, v in d.get("keyload_counters", {}).items()},
        )
