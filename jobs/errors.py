"""Errors of the jobs app."""

from __future__ import annotations

from portal.errors import ConflictError, DomainError, InvalidError


class JobsError(DomainError):
    pass


class InvalidJobRequest(InvalidError, JobsError):
    code = "invalid_job"


class JobNotAllowed(InvalidError, JobsError):
    """The actor may see the device but not request this change on it (card rules + mandates)."""

    code = "job_not_allowed"
    status = 403


class JobConflict(ConflictError, JobsError):
    code = "job_conflict"


class StepError(JobsError):
    """A step could not be compiled or its result not interpreted (internal, maps to a failed job)."""

    code = "step_error"
