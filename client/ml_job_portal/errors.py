"""The exceptions of the client: one class per kind of answer, each with the portal's own sentence."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ml_job_portal.jobs import Job


# Errors ----------------------------------------------------------------------------------------
class PortalError(Exception):
    """Any error the portal answered with (``status_code``) or that stopped a call from reaching it."""

    def __init__(self, message: str, status_code: int | None = None, problems: Mapping[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.problems: dict[str, str] = dict(problems or {})

    def __str__(self) -> str:
        return self.message


class AuthenticationError(PortalError):
    """401: no token, or the token is unknown, expired or revoked."""


class PermissionDenied(PortalError):
    """403: the portal refused the request (for example a cross-origin mutation)."""


class NotFoundError(PortalError):
    """404: no such job or file, or one you may not see."""


class ConflictError(PortalError):
    """409: the action does not fit the job's state (stopping a finished job, ...)."""


class ValidationError(PortalError):
    """422: some submitted values are not valid (400: a field the portal cannot read, such as a history's
    ``metric_filter``); ``problems`` maps each field to a sentence."""

    def __str__(self) -> str:
        # Name the fields too, unless the server's sentence already does.
        if not self.problems or all(text in self.message for text in self.problems.values()):
            return self.message
        details = "; ".join(f"{field}: {text}" if field else text for field, text in self.problems.items())
        return f"{self.message} ({details})"


class ServerError(PortalError):
    """5xx: the portal failed; retrying later may help."""


class PortalConnectionError(PortalError):
    """The portal could not be reached (DNS, refused connection, timeout, dropped stream)."""


class JobFailed(PortalError):
    """``Job.wait(raise_on_failure=True)`` found the job ended other than Succeeded."""

    def __init__(self, message: str, job: Job | None = None):
        super().__init__(message)
        self.job = job


_ERROR_CLASSES: dict[int, type[PortalError]] = {
    401: AuthenticationError,
    403: PermissionDenied,
    404: NotFoundError,
    409: ConflictError,
    422: ValidationError,
}
