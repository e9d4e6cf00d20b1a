"""The one exception hierarchy of the ``gp`` package.

Every error the package raises on bad input derives from :class:`GPError`, so a caller (a Django
view, the card simulator, the agent) can catch one type and map it to its own answer.  Messages
say what was wrong and where; they never contain key material, cryptograms or MACs.

Not a spec mapping itself: a card answers with status words instead (GP Card Spec v2.3.1
§11.1.3, Table 11-10; Amendment D v1.2 §7 for the secure channel), which
:class:`gp.scp03.SCP03Error` carries and :mod:`gp.card` produces.
"""

from __future__ import annotations

__all__ = ["EncodeError", "GPError", "ParseError", "UsageError"]


class GPError(Exception):
    """Base class of every error raised by the ``gp`` package."""


class ParseError(GPError):
    """Bytes received from outside (an APDU, a TLV stream, a card response) are malformed.

    ``offset`` is the byte position (0-based, in the outermost buffer) where the problem was
    found; the message names it too.
    """

    def __init__(self, message: str, *, offset: int) -> None:
        super().__init__(f"at offset {offset}: {message}")
        self.offset = offset
        self.problem = message


class UsageError(GPError, ValueError):
    """An API was called with arguments outside its contract (a programming error, not bad input)."""


class EncodeError(UsageError):
    """A value cannot be encoded (out of range, wrong length)."""
