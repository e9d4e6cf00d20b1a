"""The software Secure Element: a GlobalPlatform Card Specification v2.3.1 card minus the Java Card VM.

- :mod:`gp.card.softcard` — :class:`SoftCard`, the card and its transaction model (§6.2 atomicity).
- :mod:`gp.card.dispatcher` — OPEN command dispatch (§6.3), logical channels and selection (§6.4,
  §11.9), SCP03 sessions (Amendment D v1.2 §5).
- :mod:`gp.card.sd` — Security Domain commands (§11.2-§11.11: card content management, keys,
  status), one module per concern.
- :mod:`gp.card.registry` — GP Registry queries (§6.5, §7.2) and a read-only view for tests.
- :mod:`gp.card.state` — the persistent data model (§6.5.1, §7.5); :mod:`gp.card.storage` —
  sealed atomic files.
- :mod:`gp.card.vpcd` — connects a card to pcscd through vsmartcard's vpcd reader.
"""

from __future__ import annotations

from gp.card.registry import RegistryView
from gp.card.sd import SD_LOAD_FILE_AID, SD_MODULE_AID
from gp.card.softcard import ATR, ISD_PRIVILEGES, SoftCard
from gp.card.storage import StorageError

__all__ = [
    "ATR",
    "ISD_PRIVILEGES",
    "SD_LOAD_FILE_AID",
    "SD_MODULE_AID",
    "RegistryView",
    "SoftCard",
    "StorageError",
]
