"""Security Domain command processing: card content management, keys, status, personalization.

Implements, for the Security Domain selected on a logical channel:

- INSTALL (GP CS v2.3.1 §11.5, §9.3 card content installation, §9.4 extradition, §9.5 registry
  update, §7.3.2 personalization), LOAD (§11.6, §9.3.5), DELETE (§11.2, §9.5 content removal),
  PUT KEY (§11.8, Amd D §7.2), STORE DATA (§11.11), GET STATUS (§11.4), SET STATUS (§11.10, §5
  life cycle transitions), GET DATA (§11.3).
- Delegated Management tokens (§C.4, AES token scheme §B.2.2: CMAC with the ISD's Token
  Verification key, KVN ``70``) and receipts (§C.5, §11.1.6: CMAC with the Receipt Generation
  key, KVN ``71``, of the SD holding the Receipt Generation privilege).

Status word policy where the spec only says "reject": the acting entity lacks the privilege or
authority → ``6982`` (security status not satisfied); the card, the target or the sequence is in
the wrong state → ``6985`` (conditions of use not satisfied); malformed data → ``6A80``; unknown
P1/P2 → ``6A86``; target absent → ``6A88``; memory exhausted → ``6A84``.  Handlers raise
:class:`CardError`; the dispatcher turns it into the status word and rolls the state back.

Modules, one concern each: :mod:`~gp.card.sd.common` (status words, errors, channel context),
:mod:`~gp.card.sd.authorization` (tokens, receipts), :mod:`~gp.card.sd.install`,
:mod:`~gp.card.sd.load`, :mod:`~gp.card.sd.delete`, :mod:`~gp.card.sd.keys` (PUT KEY),
:mod:`~gp.card.sd.store_data`, :mod:`~gp.card.sd.status` (GET STATUS),
:mod:`~gp.card.sd.lifecycle` (SET STATUS), :mod:`~gp.card.sd.get_data`, and
:mod:`~gp.card.sd.entry` (:func:`process`, the router).
"""

from __future__ import annotations

from gp.card.sd.common import (
    SD_LOAD_FILE_AID,
    SD_MODULE_AID,
    SW_OK,
    CardError,
    ChannelContext,
    LoadInProgress,
)
from gp.card.sd.entry import process

__all__ = [
    "SD_LOAD_FILE_AID",
    "SD_MODULE_AID",
    "SW_OK",
    "CardError",
    "ChannelContext",
    "LoadInProgress",
    "process",
]
