"""The root of every app's exception hierarchy, and how each maps to HTTP.

Each app defines its own errors (``tenants.errors``, ``devices.errors``…) as subclasses of
``DomainError`` with a stable ``code``; one handler (``portal.api.exception_handler``) turns them
into JSON. Messages say what was wrong and what to do, and never echo secrets.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    code: str = "error"
    status: int = 400

    def __init__(
        self, message: str, *, code: str | None = None, fields: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.fields = fields or {}


class NotFoundError(DomainError):
    """Does not exist, or is not the caller's: the two must be indistinguishable."""

    code = "not_found"
    status = 404


class ForbiddenError(DomainError):
    """The caller may see the object (it is its own organisation's) but its role may not do this."""

    code = "forbidden"
    status = 403


class ConflictError(DomainError):
    code = "conflict"
    status = 409


class InvalidError(DomainError):
    code = "invalid"
    status = 400


class GoneError(DomainError):
    code = "gone"
    status = 410
