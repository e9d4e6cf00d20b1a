"""Key policy: how strong a key is, how long that strength is acceptable, and whether a key set
will last as long as the device it sits in (issue 5 part 7; DESIGN §6).

A device lives 10–20 years; a key set should not. Three dates decide what to do with a key set:

- its **crypto-period end** (``KeySet.crypto_period_end``): the owner's intended end of use for
  this key version, set at creation from :func:`default_crypto_period_end`;
- its **strength horizon**: the last day its algorithm and length are acceptable for applying
  protection under the operator's policy (:data:`HORIZONS`, from NIST SP 800-57 / SP 800-131A);
- the device's **intended end of service** (``Device.end_of_service``).

:func:`assess` compares them (a pure function: no database, no clock) and says ``ok``,
``crypto_period_ends_first`` (a routine rotation, same algorithm, is due before the device is
retired), ``strength_expires_before_device`` (rotate to a *stronger* algorithm: the recommended
target) or ``expired`` (the crypto-period or the strength horizon has already passed).

Sources (the tables are cited so an operator can check and change them):

- **Security strength** per algorithm and length: NIST SP 800-57 Part 1 Rev. 5 (May 2020) §5.6.1.1,
  Table 2 "Comparable security strengths of symmetric block cipher and asymmetric-key algorithms":
  2TDEA ≤ 80, 3TDEA 112, AES-128 128, AES-192 192, AES-256 256; ECC by the bit length f of the
  subgroup order n: 224–255 → 112, 256–383 → 128, 384–511 → 192, ≥ 512 → 256; RSA (IFC) by the
  modulus k: 2048 → 112, 3072 → 128, 7680 → 192, 15360 → 256.
- **Horizons by strength**: SP 800-57 Part 1 Rev. 5 §5.6.3, Table 4 "Security-strength time
  frames": below 112 bits disallowed for applying protection; 112 bits acceptable through 2030 and
  disallowed after 2030 (legacy use for processing); 128, 192 and 256 bits acceptable "through
  2031 and beyond" — no end date announced (``None`` below).
- **Algorithm-specific** rows: SP 800-131A Rev. 2 (March 2019) §2, Table 1 "Approval status of
  symmetric algorithms used for encryption and decryption": 2TDEA encryption disallowed (after
  2015); 3TDEA encryption deprecated through 2023 and disallowed after 2023; AES-128/192/256
  acceptable.
- **Quantum horizon — a policy choice, not a finished standard**: NIST IR 8547 initial public
  draft (November 2024), "Transition to Post-Quantum Cryptography Standards", §4.1: quantum-
  vulnerable ECDSA/EdDSA/RSA signatures and ECDH/FFDH/RSA key establishment at 112 bits are
  deprecated after 2030, and at any strength disallowed after 2035. The default policy below
  applies that to asymmetric keys (CASD, OCE, import keys). The same draft keeps AES-128, -192 and
  -256 (§4.2), so the default policy does **not** shorten AES-128; operators who want a margin
  against Grover's search (e.g. a CNSA-2.0-style "AES-256 only") add a row for ``AES`` at 128
  bits — see :data:`POLICIES` ``"aes256-only"``.

Crypto-periods: SP 800-57 Part 1 Rev. 5 §5.3.6, Table 1 "Suggested cryptoperiods for key types"
suggests an originator-usage period of up to 2 years for symmetric authentication, data-encryption
and key-wrapping keys, and about 1 year for a symmetric master (key-derivation) key. SCP03 static
keys are all three (Key-ENC/Key-MAC derive session keys, Key-DEK wraps keys), and a sleeping
device may not be reachable for months, so Tessera's default is 2 years
(``TESSERA_KEY_CRYPTO_PERIOD_DAYS``, default :data:`DEFAULT_CRYPTO_PERIOD_DAYS`); an operator
following Table 1's master-key row sets 365.

This module imports nothing from Django; :func:`default_crypto_period_end` and
:func:`active_policy` read settings lazily so the pure functions stay usable anywhere.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "DEFAULT_CRYPTO_PERIOD_DAYS",
    "DEFAULT_POLICY",
    "HORIZONS",
    "POLICIES",
    "ROTATE_NOTICE_DAYS",
    "STATUS_LABELS",
    "Assessment",
    "Horizon",
    "Policy",
    "PolicyError",
    "Status",
    "active_policy",
    "assess_key_set",
    "assess",
    "default_crypto_period_end",
    "describe",
    "security_strength",
    "strength_horizon",
]

DEFAULT_CRYPTO_PERIOD_DAYS = 730
# A crypto-period ending within this many days counts as "to rotate" on dashboards and filters.
ROTATE_NOTICE_DAYS = 90


class PolicyError(ValueError):
    """The algorithm or length is not one the policy knows (never a key's value: only its shape)."""


class Status(StrEnum):
    OK = "ok"
    CRYPTO_PERIOD_ENDS_FIRST = "crypto_period_ends_first"
    STRENGTH_EXPIRES_BEFORE_DEVICE = "strength_expires_before_device"
    EXPIRED = "expired"


STATUS_LABELS = {
    Status.OK: "OK",
    Status.CRYPTO_PERIOD_ENDS_FIRST: "Rotate when the crypto-period ends",
    Status.STRENGTH_EXPIRES_BEFORE_DEVICE: "Too weak for the device's life",
    Status.EXPIRED: "Expired",
}


# --- security strength (SP 800-57 Pt 1 Rev. 5, Table 2) ------------------------------------------

SYMMETRIC = "symmetric"
ASYMMETRIC = "asymmetric"

# Symmetric algorithms: key length in BYTES (as KeySet.key_length) → security strength in bits.
_SYMMETRIC_STRENGTH: dict[str, dict[int, int]] = {
    "AES": {16: 128, 24: 192, 32: 256},
    "TDEA": {16: 80, 24: 112},  # 2TDEA (≤ 80: counted as 80), 3TDEA
}
_ALIASES = {
    "3DES": "TDEA",
    "DES3": "TDEA",
    "TDES": "TDEA",
    "EC": "ECC",
    "ECDSA": "ECC",
    "ECDH": "ECC",
    "SECP256R1": "P-256",
    "SECP384R1": "P-384",
    "SECP521R1": "P-521",
    "P256": "P-256",
    "P384": "P-384",
    "P521": "P-521",
}
# Named curves: the bit length f of the subgroup order n.
_CURVE_ORDER_BITS = {
    "P-256": 256,
    "P-384": 384,
    "P-521": 521,
    "BRAINPOOLP256R1": 256,
    "BRAINPOOLP384R1": 384,
    "BRAINPOOLP512R1": 512,
}


_CURVE_NAMES = {n: "brainpool" + n[9:-2] + "r1" for n in _CURVE_ORDER_BITS if n.startswith("BRAINPOOL")}


def _canonical(algorithm: object) -> str:
    if not isinstance(algorithm, str) or not algorithm.strip() or len(algorithm) > 32:
        raise PolicyError("algorithm must be a short name such as 'AES' or 'P-256'.")
    name = algorithm.strip().upper()
    return _ALIASES.get(name, name)


def _ecc_strength(order_bits: int) -> int:
    if order_bits >= 512:
        return 256
    if order_bits >= 384:
        return 192
    if order_bits >= 256:
        return 128
    if order_bits >= 224:
        return 112
    return 80  # "≤ 80" in Table 2


def _rsa_strength(modulus_bits: int) -> int:
    for bits, strength in ((15360, 256), (7680, 192), (3072, 128), (2048, 112)):
        if modulus_bits >= bits:
            return strength
    return 80


def _check_length(key_length: object) -> int:
    if not isinstance(key_length, int) or isinstance(key_length, bool) or not 1 <= key_length <= 4096:
        raise PolicyError("key_length must be a positive number of bytes (at most 4096).")
    return key_length


def security_strength(algorithm: object, key_length: object) -> tuple[str, int]:
    """``(family, bits)`` of a key: family ``"symmetric"`` or ``"asymmetric"``.

    ``key_length`` is in bytes: the key for symmetric algorithms, the subgroup order for ``ECC``
    (32 for P-256), the modulus for ``RSA`` (256 for RSA-2048). A named curve (``P-256``,
    ``brainpoolP384r1``) carries its own size and ignores ``key_length``.
    Raises :class:`PolicyError` for an unknown algorithm or a length the algorithm does not have.
    """
    name = _canonical(algorithm)
    if name in _SYMMETRIC_STRENGTH:
        length = _check_length(key_length)
        table = _SYMMETRIC_STRENGTH[name]
        if length not in table:
            sizes = ", ".join(str(n) for n in table)
            raise PolicyError(f"{name} keys are {sizes} bytes long, not {length}.")
        return SYMMETRIC, table[length]
    if name in _CURVE_ORDER_BITS:
        return ASYMMETRIC, _ecc_strength(_CURVE_ORDER_BITS[name])
    if name == "ECC":
        return ASYMMETRIC, _ecc_strength(8 * _check_length(key_length))
    if name == "RSA":
        return ASYMMETRIC, _rsa_strength(8 * _check_length(key_length))
    raise PolicyError(f"The key policy does not know the algorithm {name[:32]!r}.")


def describe(algorithm: object, key_length: object) -> str:
    """A person's name for the key: ``AES-128``, ``3TDEA``, ``P-256``, ``RSA-2048``."""
    name = _canonical(algorithm)
    if name == "AES":
        return f"AES-{8 * _check_length(key_length)}"
    if name == "TDEA":
        return "2TDEA" if key_length == 16 else "3TDEA"
    if name == "RSA":
        return f"RSA-{8 * _check_length(key_length)}"
    if name == "ECC":
        return f"ECC-{8 * _check_length(key_length)}"
    return _CURVE_NAMES.get(name, name)


# --- horizons: one data table ---------------------------------------------------------------------


@dataclass(frozen=True)
class Horizon:
    """Keys of ``strength`` bits in ``applies_to`` (a family, or one algorithm's canonical name,
    which wins over its family) are acceptable for applying protection through
    ``acceptable_through``; ``None``: no end announced."""

    applies_to: str
    strength: int
    acceptable_through: dt.date | None
    source: str


def _end_of(year: int) -> dt.date:
    return dt.date(year, 12, 31)


# The default policy, one row per (applies_to, strength). Edit here, or define another tuple in
# POLICIES and select it with TESSERA_KEY_POLICY.
HORIZONS: tuple[Horizon, ...] = (
    # SP 800-57 Pt 1 Rev. 5, Table 4 (any family)
    Horizon(SYMMETRIC, 80, _end_of(2013), "SP 800-57 Pt 1 Rev. 5 Table 4: < 112 bits disallowed"),
    Horizon(SYMMETRIC, 112, _end_of(2030), "SP 800-57 Pt 1 Rev. 5 Table 4: 112 bits through 2030"),
    Horizon(SYMMETRIC, 128, None, "SP 800-57 Pt 1 Rev. 5 Table 4: 128 bits through 2031 and beyond"),
    Horizon(SYMMETRIC, 192, None, "SP 800-57 Pt 1 Rev. 5 Table 4: 192 bits through 2031 and beyond"),
    Horizon(SYMMETRIC, 256, None, "SP 800-57 Pt 1 Rev. 5 Table 4: 256 bits through 2031 and beyond"),
    # SP 800-131A Rev. 2, Table 1 (TDEA ends earlier than its strength alone says)
    Horizon("TDEA", 80, _end_of(2015), "SP 800-131A Rev. 2 Table 1: 2TDEA encryption disallowed"),
    Horizon("TDEA", 112, _end_of(2023), "SP 800-131A Rev. 2 Table 1: 3TDEA disallowed after 2023"),
    # Asymmetric: Table 4, shortened by the quantum horizon of NIST IR 8547 ipd §4.1 (policy choice)
    Horizon(ASYMMETRIC, 80, _end_of(2013), "SP 800-57 Pt 1 Rev. 5 Table 4: < 112 bits disallowed"),
    Horizon(ASYMMETRIC, 112, _end_of(2030), "NIST IR 8547 ipd: 112-bit ECC/RSA deprecated after 2030"),
    Horizon(ASYMMETRIC, 128, _end_of(2035), "NIST IR 8547 ipd: ECC/RSA disallowed after 2035"),
    Horizon(ASYMMETRIC, 192, _end_of(2035), "NIST IR 8547 ipd: ECC/RSA disallowed after 2035"),
    Horizon(ASYMMETRIC, 256, _end_of(2035), "NIST IR 8547 ipd: ECC/RSA disallowed after 2035"),
)

# Strongest targets an upgrade may move to, per algorithm (canonical name): what rotate_keys can do.
UPGRADES: dict[str, tuple[str, int]] = {
    "AES": ("AES", 32),
    "TDEA": ("AES", 32),
    "ECC": ("P-384", 48),
    "P-256": ("P-384", 48),
    "BRAINPOOLP256R1": ("BRAINPOOLP384R1", 48),
}


@dataclass(frozen=True)
class Policy:
    name: str
    horizons: tuple[Horizon, ...]
    crypto_period_days: int = DEFAULT_CRYPTO_PERIOD_DAYS

    def horizon_for(self, algorithm: str, family: str, strength: int) -> Horizon | None:
        """The algorithm's own row for exactly this strength, else its family's row; for a
        strength the family rows do not list, the next lower listed one (conservative)."""
        for h in self.horizons:
            if h.applies_to == algorithm and h.strength == strength:
                return h
        rows = [h for h in self.horizons if h.applies_to == family and h.strength <= strength]
        return max(rows, key=lambda h: h.strength) if rows else None


DEFAULT_POLICY = Policy("nist", HORIZONS)
POLICIES: dict[str, Policy] = {
    "nist": DEFAULT_POLICY,
    # An operator's stricter choice: symmetric keys below 256 bits end with the quantum horizon
    # for public keys (e.g. CNSA 2.0-style AES-256 only). Not a NIST requirement.
    "aes256-only": Policy(
        "aes256-only",
        (
            *HORIZONS,
            Horizon("AES", 128, _end_of(2035), "operator policy: AES-256 only after 2035"),
            Horizon("AES", 192, _end_of(2035), "operator policy: AES-256 only after 2035"),
        ),
    ),
}


def strength_horizon(
    algorithm: object, key_length: object, policy: Policy = DEFAULT_POLICY
) -> Horizon | None:
    family, strength = security_strength(algorithm, key_length)
    return policy.horizon_for(_canonical(algorithm), family, strength)


# --- assessment -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Assessment:
    status: Status
    message: str
    algorithm: str  # e.g. "AES-128"
    strength: int  # bits
    strength_until: dt.date | None  # last acceptable day; None: no end announced
    crypto_period_end: dt.date | None
    device_end_of_service: dt.date | None
    rotate_by: dt.date | None  # the day by which a rotation should have happened
    target: str | None  # recommended stronger algorithm, e.g. "AES-256"
    target_key_length: int | None  # its key_length for rotate_keys (bytes)
    source: str

    @property
    def label(self) -> str:
        return STATUS_LABELS[self.status]

    @property
    def flagged(self) -> bool:
        return self.status is not Status.OK

    def to_rotate(self, today: dt.date, notice_days: int = ROTATE_NOTICE_DAYS) -> bool:
        """Expired, too weak for the device's life, or due within ``notice_days``."""
        if self.status in (Status.EXPIRED, Status.STRENGTH_EXPIRES_BEFORE_DEVICE):
            return True
        return self.rotate_by is not None and self.rotate_by <= today + dt.timedelta(days=notice_days)

    def as_dict(self) -> dict[str, object]:
        return {
            "status": self.status.value,
            "label": self.label,
            "message": self.message,
            "algorithm": self.algorithm,
            "strength": self.strength,
            "strength_until": self.strength_until.isoformat() if self.strength_until else None,
            "rotate_by": self.rotate_by.isoformat() if self.rotate_by else None,
            "target": self.target,
            "target_key_length": self.target_key_length,
            "source": self.source,
        }


def _as_date(value: object, what: str) -> dt.date | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    raise PolicyError(f"{what} must be a date or nothing.")


def _later(a: dt.date | None, b: dt.date | None) -> bool:
    """Does ``a`` end strictly before ``b``? (``None`` = never ends)."""
    return a is not None and (b is None or a < b)


def _target(
    name: str, strength: int, until: dt.date | None, policy: Policy
) -> tuple[str, int, dt.date | None] | None:
    """The upgrade of :data:`UPGRADES`, when it is stronger and lasts longer than ``until``."""
    up = UPGRADES.get(name)
    if up is None:
        return None
    algorithm, length = up
    family, up_strength = security_strength(algorithm, length)
    row = policy.horizon_for(_canonical(algorithm), family, up_strength)
    up_until = row.acceptable_through if row else None
    if up_strength <= strength or not _later(until, up_until):
        return None
    return describe(algorithm, length), length, up_until


def assess(
    algorithm: object,
    key_length: object,
    created_at: object,
    crypto_period_end: object,
    device_end_of_service: object,
    today: object,
    *,
    policy: Policy = DEFAULT_POLICY,
) -> Assessment:
    """Will this key set last, and if not, what to do.

    1. Strength from the algorithm and length (Table 2); its horizon from ``policy``.
    2. The crypto-period end: the recorded one, else ``created_at`` + the policy's period.
    3. ``expired`` if today is past the crypto-period end or the strength horizon.
    4. The key set must last until the device's end of service (when recorded): if the strength
       horizon comes first → ``strength_expires_before_device`` with the recommended stronger
       target (whose own horizon is checked too); else if the crypto-period comes first →
       ``crypto_period_ends_first`` (rotate, same algorithm is fine); else ``ok``.
       Without a recorded end of service the key set must last its own crypto-period.
    Raises :class:`PolicyError` for an unknown algorithm/length or arguments that are not dates.
    """
    name = _canonical(algorithm)
    family, strength = security_strength(name, key_length)
    row = policy.horizon_for(name, family, strength)
    until = row.acceptable_through if row else None
    source = row.source if row else "no horizon in the policy"
    label = describe(name, key_length)
    now = _as_date(today, "today")
    if now is None:
        raise PolicyError("today is required.")
    created = _as_date(created_at, "created_at")
    period_end = _as_date(crypto_period_end, "crypto_period_end")
    if period_end is None and created is not None:
        period_end = created + dt.timedelta(days=policy.crypto_period_days)
    eos = _as_date(device_end_of_service, "device_end_of_service")
    target = _target(name, strength, until, policy)
    target_name, target_length, target_until = target if target else (None, None, None)

    def result(status: Status, message: str, rotate_by: dt.date | None, suggest: bool) -> Assessment:
        return Assessment(
            status=status,
            message=message,
            algorithm=label,
            strength=strength,
            strength_until=until,
            crypto_period_end=period_end,
            device_end_of_service=eos,
            rotate_by=rotate_by,
            target=target_name if suggest else None,
            target_key_length=target_length if suggest else None,
            source=source,
        )

    upgrade = ""
    if target_name is not None:
        upgrade = f" Rotate to {target_name}"
        if _later(target_until, eos or period_end):
            upgrade += f" (itself acceptable only through {target_until.isoformat()})"  # type: ignore[union-attr]
        upgrade += "."
    elif family == ASYMMETRIC:
        upgrade = " No classical algorithm lasts past this policy's quantum horizon: plan a post-quantum key."

    if until is not None and now > until:
        return result(
            Status.EXPIRED,
            f"{label} ({strength}-bit) has not been acceptable since {until.isoformat()} ({source}).{upgrade}",
            until,
            True,
        )
    if period_end is not None and now > period_end:
        return result(
            Status.EXPIRED,
            f"The crypto-period of this {label} key set ended on {period_end.isoformat()}: rotate it.",
            period_end,
            False,
        )
    must_last = eos if eos is not None else period_end
    if _later(until, must_last):
        if eos is not None:
            whose = f"the device's end of service ({eos.isoformat()})"
        elif period_end is not None:
            whose = f"the end of its crypto-period ({period_end.isoformat()})"
        else:
            whose = "an end of use, as neither a crypto-period nor the device's end of service is recorded"
        return result(
            Status.STRENGTH_EXPIRES_BEFORE_DEVICE,
            f"{label} ({strength}-bit) is acceptable only through {until.isoformat()} ({source}), "  # type: ignore[union-attr]
            f"before {whose}.{upgrade}",
            min(d for d in (until, period_end) if d is not None),
            True,
        )
    if eos is not None and _later(period_end, eos):
        return result(
            Status.CRYPTO_PERIOD_ENDS_FIRST,
            f"The crypto-period ends on {period_end.isoformat()}, before the device's end of service "  # type: ignore[union-attr]
            f"({eos.isoformat()}): rotate by then; {label} itself is strong enough.",
            period_end,
            False,
        )
    horizon = "no announced end" if until is None else f"acceptable through {until.isoformat()}"
    if eos is not None:
        lasts = f"lasts until the device's end of service ({eos.isoformat()})."
    elif period_end is not None:
        lasts = f"lasts its crypto-period ({period_end.isoformat()}); the device's end of service is not recorded."
    else:
        lasts = "has no crypto-period or device end of service recorded to check against."
    return result(
        Status.OK,
        f"{label} ({strength}-bit, {horizon}) {lasts}",
        period_end,
        False,
    )


# --- settings (read lazily: the functions above stay pure) ------------------------------------------


def active_policy() -> Policy:
    """The policy named by ``TESSERA_KEY_POLICY`` (default ``"nist"``), with the crypto-period of
    ``TESSERA_KEY_CRYPTO_PERIOD_DAYS``."""
    from django.conf import settings

    policy = POLICIES.get(getattr(settings, "TESSERA_KEY_POLICY", "nist"), DEFAULT_POLICY)
    days = int(getattr(settings, "TESSERA_KEY_CRYPTO_PERIOD_DAYS", policy.crypto_period_days))
    if days != policy.crypto_period_days:
        policy = Policy(policy.name, policy.horizons, days)
    return policy


def default_crypto_period_end(created_at: dt.datetime | dt.date, policy: Policy | None = None) -> dt.date:
    """The intended end of use of a key set created at ``created_at`` (SP 800-57 Table 1, above)."""
    days = (policy or active_policy()).crypto_period_days
    start = created_at.date() if isinstance(created_at, dt.datetime) else created_at
    return start + dt.timedelta(days=days)


def assess_key_set(
    keyset: object, device_end_of_service: dt.date | None, today: dt.date, policy: Policy | None = None
) -> Assessment | None:
    """:func:`assess` for a ``KeySet`` row (anything with ``algorithm``, ``key_length``,
    ``created_at``, ``crypto_period_end``); ``None`` when the policy does not know its algorithm."""
    try:
        return assess(
            getattr(keyset, "algorithm", None),
            getattr(keyset, "key_length", None),
            getattr(keyset, "created_at", None),
            getattr(keyset, "crypto_period_end", None),
            device_end_of_service,
            today,
            policy=policy or active_policy(),
        )
    except PolicyError:
        return None
