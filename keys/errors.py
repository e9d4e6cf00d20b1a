"""Errors of the keys app. Messages never carry key material, not even a prefix of it."""

from __future__ import annotations

from portal.env import ImproperEnvironment
from portal.errors import ConflictError, DomainError, InvalidError


class KeysError(InvalidError):
    code = "invalid_keys"


class KeySetConflict(ConflictError):
    code = "key_set_conflict"


class VaultError(DomainError):
    """A sealed blob could not be opened (wrong owner or purpose, tampered, shredded) or sealed.

    Server-side: the caller did nothing wrong, so it maps to 500 with a fixed message.
    """

    code = "vault_error"
    status = 500


class VaultConfigurationError(ImproperEnvironment):
    """The master key is missing, unreadable or malformed: the process refuses to start."""
