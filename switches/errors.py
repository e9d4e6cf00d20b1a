"""Errors of the switches app (mapped to JSON errors with stable codes by ``portal.api``)."""

from __future__ import annotations

from portal.errors import ConflictError, DomainError, InvalidError


class SwitchError(DomainError):
    pass


class SwitchRequestInvalid(InvalidError, SwitchError):
    code = "invalid_switch"


class SwitchNotAllowed(InvalidError, SwitchError):
    code = "switch_not_allowed"
    status = 403


class SwitchConflict(ConflictError, SwitchError):
    code = "switch_running"
