"""Confidential key loading on the card: the ISD receives a provider's key-loading package
(``docs/key-loading-package.md``) in STORE DATA after INSTALL [for personalization] named the
target SSD, verifies it with its CASD (:func:`gp.keyload.open_package`), installs the key set in
the SSD and answers the receipt.

This module knows nothing of how the CASD is stored: the caller passes the agreement as an
``ecdh`` callable (the CASD private key stays where the card keeps it), the CA-KLOC public key, the
SE identifier (the CASD certificate's subject identifier) and the last counter accepted for the
SD.  Refusals are :class:`~gp.card.sd.common.CardError` with the status word of
:data:`gp.keyload.STATUS_WORDS`; the card state is untouched until :func:`install_key_set`, which
either installs the whole key set or raises before changing anything.

What the STORE DATA path does with it (one package, possibly over several blocks):

1. Collect the blocks of the STORE DATA sequence addressed to an SSD (``ctx.perso_target``) whose
   first block starts with ``BF 74`` (:func:`is_key_package`); structure ``00`` (no structure)
   since a package spans blocks; blocks are concatenated until P1.b8 "last block".
2. On the last block: ``result = handle_key_package(data,
   ecdh=lambda pk: casd_key_agreement(state, pk), se_id=<the CASD certificate's subject
   identifier>, sd_aid=target.aid, last_counter=<stored counter for target.aid, 0 if none>,
   ca_public_key=<the CA-KLOC key>, verify_chain=lambda certs, _root: verify_oce_chain(state,
   certs))`` (:mod:`gp.card.casd`; its verifier also applies the CASD's revoked serials, and any
   failure of it is answered ``6982`` here).
3. ``install_key_set(target, result)``, then store ``result.counter`` as the last counter for
   ``target.aid`` — the counter table is card-wide, keyed by SD AID, and survives the SD's
   deletion, so a package for an earlier SD of the same AID can never be replayed.
4. Answer ``result.response`` (``86 10 <receipt>``) with 9000.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from gp import keyload
from gp.card.sd.common import SW_NO_MEMORY, SW_WRONG_DATA, CardError
from gp.card.state import INITIAL_SEQUENCE_COUNTER, MAX_KEY_SETS, Application, Key, KeySet
from gp.commands.types import KeyType
from gp.scp03 import kcv

__all__ = ["KeyPackageResult", "handle_key_package", "install_key_set", "is_key_package"]

_PACKAGE_TAG = keyload.TAG_PACKAGE.to_bytes(2, "big")
_SCP03_KIDS = (0x01, 0x02, 0x03)


@dataclass(frozen=True, slots=True)
class KeyPackageResult:
    """A verified package: the key set to install, the new counter, and the answer to send."""

    keys: tuple[bytes, bytes, bytes] = field(repr=False)
    kvn: int
    counter: int
    receipt: bytes

    @property
    def response(self) -> bytes:
        """Response data to the last STORE DATA: ``86 10 <receipt>``."""
        return keyload.encode_receipt_response(self.receipt)

    @property
    def kcvs(self) -> tuple[bytes, ...]:
        return tuple(kcv(k) for k in self.keys)


def is_key_package(data: bytes) -> bool:
    """Whether STORE DATA content starts a key-loading package (tag ``BF74``)."""
    return bytes(data[:2]) == _PACKAGE_TAG


def handle_key_package(
    data: bytes,
    *,
    ecdh: Callable[[ec.EllipticCurvePublicKey], bytes],
    se_id: bytes,
    sd_aid: bytes,
    last_counter: int,
    ca_public_key: ec.EllipticCurvePublicKey,
    verify_chain: Callable[[Sequence[bytes], ec.EllipticCurvePublicKey], Any] | None = None,
) -> KeyPackageResult:
    """Parse and verify a complete package for SD ``sd_aid`` of this SE.

    Raises :class:`CardError` with ``6A80`` (malformed, other SE or SD, unusable ephemeral key),
    ``6982`` (OCE chain or signature), ``6985`` (counter not above ``last_counter``) or ``6988``
    (cryptogram integrity, key check values).  No effect on any state.
    """
    try:
        package = keyload.parse_package(data)
        opened = keyload.open_package(
            package,
            ecdh=ecdh,
            se_id=se_id,
            sd_aid=sd_aid,
            last_counter=last_counter,
            ca_public_key=ca_public_key,
            verify_chain=verify_chain,
        )
    except keyload.KeyLoadError as e:
        raise CardError(e.sw or SW_WRONG_DATA, e.code) from None
    return KeyPackageResult(opened.keys, opened.kvn, opened.counter, opened.receipt)


def install_key_set(sd: Application, result: KeyPackageResult) -> None:
    """Install ``result``'s key set in ``sd`` as KIDs 01/02/03 of KVN ``result.kvn``.

    An existing key set with that KVN is replaced (its other keys kept, as PUT KEY does); otherwise
    a new set is added.  The new set's SCP03 sequence counter starts again (Amd D §6.2.2.1).
    Raises :class:`CardError` before any change: ``6A80`` when ``sd`` is not a Security Domain,
    ``6A84`` when a new set would exceed the card's room for key sets.
    """
    if not sd.is_security_domain:
        raise CardError(SW_WRONG_DATA, "key-loading packages are for Security Domains")
    store = sd.keys
    old = store.sets.get(result.kvn)
    if old is None and len(store.sets) >= MAX_KEY_SETS:
        raise CardError(SW_NO_MEMORY, "no room for another key set")
    keyset = KeySet(result.kvn, dict(old.keys) if old is not None else {})
    for kid, value in zip(_SCP03_KIDS, result.keys, strict=True):
        keyset.keys[kid] = Key(kid, KeyType.AES, value)
    keyset.sequence_counter = INITIAL_SEQUENCE_COUNTER
    store.sets[result.kvn] = keyset
