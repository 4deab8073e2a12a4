"""The one error middleware: typed errors -> HTTP status + a stable JSON error body.

A database that is down (callcenter.db.availability: refused, unreachable, not migrated yet)
is 503 `database_unavailable` with Retry-After, as JSON, or as a small HTML page for a browser
asking for a page; never a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import ValidationError

from callcenter.db.availability import DatabaseUnavailable, is_database_down
from callcenter.web.errors import ApiError, TooManyRequests

log = logging.getLogger(__name__)

# aiohttp's own exceptions (unknown route, wrong method, ...) get codes too.
_HTTP_CODES: Mapping[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "route_not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
}

DATABASE_RETRY_AFTER = 5  # seconds, for the Retry-After of a 503 database_unavailable
_DB_DOWN_MESSAGE = "the database is unavailable; calls are still routed - try again shortly"
_DB_DOWN_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Database unavailable</title></head>
<body><h1>Database unavailable</h1>
<p>The call center's database cannot be reached right now. Calls are still routed;
this page works again as soon as the database is back. Try again in a few seconds.</p>
</body></html>
"""


def error_body(code: str, message: str, fields: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "fields": dict(fields or {})}}


def validation_fields(exc: ValidationError) -> dict[str, str]:
    """pydantic errors as {"field": "message"}; the first message per field wins."""
    fields: dict[str, str] = {}
    for err in exc.errors(include_url=False):
        loc = ".".join(str(part) for part in err["loc"]) or "__root__"
        fields.setdefault(loc, err["msg"])
    return fields


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        resp = web.json_response(error_body(exc.code, exc.message, exc.fields), status=exc.status)
        if isinstance(exc, TooManyRequests):
            resp.headers["Retry-After"] = str(exc.retry_after)
        return resp
    except ValidationError as exc:
        return web.json_response(
            error_body("validation_failed", "invalid input", validation_fields(exc)), status=422
        )
    except web.HTTPException as exc:
        if exc.status < 400:  # redirects and the like are not errors
            raise
        code = _HTTP_CODES.get(exc.status, f"http_{exc.status}")
        resp = web.json_response(error_body(code, exc.reason), status=exc.status)
        if exc.status == 405 and "Allow" in exc.headers:
            resp.headers["Allow"] = exc.headers["Allow"]
        return resp
    except Exception as exc:
        if is_database_down(exc, strict=True):
            return database_unavailable(request, exc)
        # CancelledError is a BaseException and passes through untouched (client went away).
        log.exception("unhandled error in %s %s", request.method, request.path)
        return web.json_response(error_body("internal_error", "internal server error"), status=500)


def database_unavailable(request: web.Request, exc: BaseException) -> web.Response:
    """503 for a request that needed the database while it is down."""
    if isinstance(exc, DatabaseUnavailable):  # the gate knows and has logged it once
        log.debug("%s %s: %s", request.method, request.path, exc)
    else:
        log.warning("%s %s: database unreachable: %r", request.method, request.path, exc)
    headers = {"Retry-After": str(DATABASE_RETRY_AFTER)}
    if _wants_html(request):
        return web.Response(
            text=_DB_DOWN_HTML, status=503, content_type="text/html", headers=headers
        )
    body = error_body("database_unavailable", _DB_DOWN_MESSAGE)
    return web.json_response(body, status=503, headers=headers)


def _wants_html(request: web.Request) -> bool:
    """A browser navigating to a page (not the API, which always gets JSON)."""
    if request.path.startswith("/api/"):
        return False
    accept = request.headers.get("Accept", "")
    return "text/html" in accept
