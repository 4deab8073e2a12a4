"""Typed API errors with stable codes.

Handlers and services raise these; `callcenter.web.middlewares.error_middleware` is the one place
that turns them (and every other exception) into HTTP responses with the JSON body
`{"error": {"code": ..., "message": ..., "fields": {...}}}`. Codes are part of the API contract:
clients switch on them, so never rename one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar


class ApiError(Exception):
    """Base of every error the API reports on purpose. `code` defaults to the class's; pass
    one to report a domain rule's own stable code with this class's status."""

    status: ClassVar[int] = 500
    code: str = "internal_error"

    def __init__(
        self, message: str, *, fields: Mapping[str, str] | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.fields: dict[str, str] = dict(fields or {})
        if code is not None:
            self.code = code


class BadRequest(ApiError):
    status = 400
    code = "bad_request"


class ValidationFailed(ApiError):
    """Query parameters or a body failed validation; `fields` maps each bad field to why."""

    status = 422
    code = "validation_failed"


class Unauthorized(ApiError):
    """No valid session or API token."""

    status = 401
    code = "unauthenticated"


class InvalidCredentials(Unauthorized):
    """Sign-in refused: unknown user, wrong password or disabled account (never says which)."""

    code = "invalid_credentials"


class Forbidden(ApiError):
    """Signed in, but the role (or the token's scopes) does not allow this."""

    status = 403
    code = "forbidden"


class UnsupportedMediaType(ApiError):
    status = 415
    code = "unsupported_media_type"


class TooManyRequests(ApiError):
    """Rate limited; `retry_after` seconds until the next attempt may succeed."""

    status = 429
    code = "rate_limited"

    def __init__(
        self, message: str, *, retry_after: int, fields: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message, fields=fields)
        self.retry_after = max(1, retry_after)


class NotFound(ApiError):
    status = 404
    code = "not_found"


class CallNotFound(NotFound):
    code = "call_not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class ServiceUnavailable(ApiError):
    """A backend (AMI, database, bus) needed for this request is down."""

    status = 503
    code = "service_unavailable"
