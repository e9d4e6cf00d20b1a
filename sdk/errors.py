"""Errors of the provider tooling. Each carries a stable ``code`` and an exit status for the CLI;
messages name the problem, never key material, a passphrase, a PIN or the API token."""

from __future__ import annotations

__all__ = [
    "EXIT_API",
    "EXIT_INTERNAL",
    "EXIT_JOB",
    "EXIT_OK",
    "EXIT_USAGE",
    "EXIT_VERIFY",
    "ApiError",
    "JobFailed",
    "SdkError",
    "StoreError",
    "UsageError",
    "VerificationError",
]

EXIT_OK = 0
EXIT_INTERNAL = 1  # a bug: the CLI prints one line and no traceback all the same
EXIT_USAGE = 2  # bad input or configuration, a missing or corrupt key store
EXIT_VERIFY = 3  # a certificate chain, fingerprint, receipt or R-MAC does not verify
EXIT_API = 4  # the server refused or could not be reached
EXIT_JOB = 5  # the job ran and failed (or timed out)


class SdkError(Exception):
    """Base class: ``code`` (stable, snake_case) and ``exit_status`` for the CLI."""

    exit_status = EXIT_USAGE

    def __init__(self, message: str, *, code: str = "error") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class UsageError(SdkError):
    """Bad input: an argument, an environment variable, a hex string."""


class StoreError(SdkError):
    """The key store is missing, corrupt, locked (no passphrase/PIN) or refuses an operation."""


class VerificationError(SdkError):
    """Something that must verify did not: a chain, a pinned fingerprint, a receipt, an R-MAC."""

    exit_status = EXIT_VERIFY


class ApiError(SdkError):
    """The server answered an error (``status`` and its JSON ``code``) or could not be reached."""

    exit_status = EXIT_API

    def __init__(self, message: str, *, code: str = "api_error", status: int | None = None) -> None:
        super().__init__(message, code=code)
        self.status = status


class JobFailed(SdkError):
    """A job reached a terminal state other than ``succeeded`` (or did not finish in time)."""

    exit_status = EXIT_JOB

    def __init__(self, message: str, *, code: str = "job_failed", job: dict | None = None) -> None:
        super().__init__(message, code=code)
        self.job = job or {}
