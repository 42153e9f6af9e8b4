"""Exceptions raised by fhir_cart, sorted by what the caller should do.

Exception tree::

    FhirCartError                  base of everything fhir_cart raises on purpose
    ├── FatalError                 stop the run; carries a message and a process exit code
    │   ├── ConfigError            settings or mapping file is wrong
    │   ├── InputError             a study file was rejected (carries the Reject list)
    │   ├── TerminologyError       a code is missing, or unverified under --strict
    │   └── ServerUnreachable      the FHIR server did not answer at all (exit code 6)
    ├── MappingError               a FHIR resource cannot be reverse-mapped (kept, never dropped)
    └── FhirClientError            talking to a FHIR server failed
        ├── RetryableError         transient (408, 429, 5xx, connection): safe to try again
        └── FatalHttpError         4xx and other faults that repeat if retried
            ├── AuthError          401/403 after re-authentication, or token endpoint refused
            ├── PreconditionFailed 412: the resource changed on the server (stale If-Match)
            ├── ForeignOriginError the server named a URL on another origin (never followed
            │                      with credentials)
            ├── BadResponse        the server's answer is not the FHIR JSON it should be
            └── LimitExceeded      a paging, size or count limit from settings was reached
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "AuthError",
    "BadResponse",
    "ConfigError",
    "FatalError",
    "FatalHttpError",
    "FhirCartError",
    "FhirClientError",
    "ForeignOriginError",
    "InputError",
    "LimitExceeded",
    "MappingError",
    "PreconditionFailed",
    "Reject",
    "RetryableError",
    "ServerUnreachable",
    "TerminologyError",
    "validation_reason",
]


@dataclass(frozen=True, slots=True)
class Reject:
    """One rejected row, value or resource, with where it came from and why."""

    source: str
    """File name, or ``Type/id`` for a FHIR resource."""
    row: int | None
    """1-based row in the file as a spreadsheet user sees it (header is row 1)."""
    column: str | None
    value: str | None
    reason: str
    table: str | None = None

    def describe(self) -> str:
        where = self.source
        if self.table:
            where += f" [{self.table}]"
        if self.row is not None:
            where += f" row {self.row}"
        if self.column:
            where += f" column {self.column!r}"
        shown = "" if self.value is None else f" value {self.value!r}:"
        return f"{where}:{shown} {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "table": self.table,
            "row": self.row,
            "column": self.column,
            "value": self.value,
            "reason": self.reason,
        }


class FhirCartError(Exception):
    """Base class of every error fhir_cart raises on purpose."""


class FatalError(FhirCartError):
    """Stop the run with a message and an exit code (handled once, in the CLI)."""

    exit_code: int = 1

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code

    def describe(self) -> str:
        """What the CLI prints for it."""
        return self.message


class ConfigError(FatalError):
    exit_code = 2


class InputError(FatalError):
    """A study file was rejected. ``str()`` is the headline and every reject under it (the
    CLI, the service's problem documents and job errors all show the whole list);
    ``listed``: the caller has shown the rejects already (the CLI prints only the
    headline then)."""

    exit_code = 3
    shown = 50
    """Rejects written out in ``str()``; the rest are counted (all are in ``rejects``)."""

    def __init__(self, message: str, rejects: list[Reject], *, listed: bool = False) -> None:
        super().__init__(message)
        self.rejects = rejects
        self.listed = listed

    def __str__(self) -> str:
        lines = [self.message]
        lines += [f"  - {r.describe()}" for r in self.rejects[: self.shown]]
        if len(self.rejects) > self.shown:
            lines.append(f"  ... and {len(self.rejects) - self.shown} more")
        return "\n".join(lines)

    def describe(self) -> str:
        return self.message if self.listed else str(self)


class TerminologyError(FatalError):
    exit_code = 4


class ServerUnreachable(FatalError):
    exit_code = 6

    def __init__(self, base_url: str, cause: str) -> None:
        super().__init__(
            f"cannot reach the FHIR server at {base_url} ({cause}). Is it running? "
            "'fhir-cart fhir-server start --port PORT' starts a local one to try fhir_cart on."
        )


class MappingError(FhirCartError):
    """A resource could not be reverse-mapped; the caller keeps it and lists it."""

    def __init__(self, resource_ref: str, reason: str) -> None:
        super().__init__(f"{resource_ref}: {reason}")
        self.resource_ref = resource_ref
        self.reason = reason


class FhirClientError(FhirCartError):
    """Talking to a FHIR server failed. ``response`` is kept when there was one."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        response: Any = None,
        outcome: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.response = response
        self.outcome = outcome


class RetryableError(FhirClientError):
    """Transient: the same request may succeed later."""


class FatalHttpError(FhirClientError):
    """Retrying the same request will fail the same way."""


class AuthError(FatalHttpError):
    """Credentials refused (after one re-authentication)."""


class PreconditionFailed(FatalHttpError):
    """HTTP 412: the resource's version on the server is not the one we expected."""


def validation_reason(exc: Any) -> str:
    """A pydantic ValidationError as one readable line: ``field: message; field: message``."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    return "; ".join(problems)


class ForeignOriginError(FatalHttpError):
    """The server named a URL (next link, status URL, file) on another origin: refused, so
    its credentials never reach a host the settings do not name."""


class BadResponse(FatalHttpError):
    """The server answered with something that is not the FHIR JSON expected (HTML, truncated
    JSON, a Bundle that is not one, a resource without ``resourceType`` or ``id``)."""


class LimitExceeded(FatalHttpError):
    """A limit from settings (pages, entries per page, resources per pull, response bytes)."""
