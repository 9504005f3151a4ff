"""Domain errors and their single mapping to RFC 9457 problem+json answers.

Every error the service raises on purpose is an :class:`AppError`. Each subclass fixes
its HTTP status and a stable machine-readable ``code``; the exception handlers in this
module are the only place where errors become HTTP responses. Upstream bodies and
secrets never reach a client: an ``AppError`` carries only the message we wrote.

The error classes need no web framework: processes that only raise them (the capture
process, the worker) import this module without Litestar, which the mapping imports only
when it builds an answer or its handler table.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import structlog

if TYPE_CHECKING:  # the mapping's types; Litestar itself is imported where it is used
    from litestar import Request, Response
    from litestar.exceptions import HTTPException, ValidationException

__all__ = [
    "ANSWER_COUNTER",
    "PROBLEM_JSON",
    "AppError",
    "AuthenticationError",
    "CallNotFoundError",
    "CapturePendingError",
    "ClientError",
    "ConfigurationError",
    "CredentialTimeoutError",
    "CredentialUnavailableError",
    "ForbiddenError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RateLimitedError",
    "StorageUnavailableError",
    "TooManyCallsError",
    "UpstreamAuthError",
    "UpstreamError",
    "UpstreamNotConfiguredError",
    "UpstreamRejectedError",
    "UpstreamThrottledError",
    "UpstreamTimeoutError",
    "UpstreamUnavailableError",
    "UsageLimitReachedError",
    "ValidationError",
    "exception_handlers",
    "msgspec_field",
    "msgspec_reason",
    "problem_response",
]

PROBLEM_JSON = "application/problem+json"
ANSWER_COUNTER = "answer_counter"
"""Route ``opt`` key: a function of the status that this mapping calls for every error
answer of the route (hot paths count their answers themselves, not by middleware)."""
_logger = structlog.get_logger("engram_voice.errors")
_INTERNAL_SERVER_ERROR = 500


class ConfigurationError(Exception):
    """Configuration that cannot work; raised at start-up with one clear message."""


class AppError(Exception):
    """Base of every error the service answers on purpose."""

    status: ClassVar[int] = _INTERNAL_SERVER_ERROR
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal error"

    def __init__(
        self,
        detail: str,
        *,
        retry_after: int | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after
        self.extra = dict(extra or {})


class ClientError(AppError):
    """The caller sent something we refuse (4xx)."""

    status = 400
    code = "bad_request"
    title = "Bad request"


class ValidationError(ClientError):
    """A field of the request is missing or invalid."""

    code = "validation_failed"
    title = "Request validation failed"


class AuthenticationError(ClientError):
    """No valid caller credential was presented."""

    status = 401
    code = "unauthenticated"
    title = "Authentication required"


class ForbiddenError(ClientError):
    """The caller is known but may not do this."""

    status = 403
    code = "forbidden"
    title = "Forbidden"


class NotFoundError(ClientError):
    """The named resource does not exist."""

    status = 404
    code = "not_found"
    title = "Not found"


class PayloadTooLargeError(ClientError):
    """The request body or one of its parts exceeds a declared limit."""

    status = 413
    code = "payload_too_large"
    title = "Payload too large"


class RateLimitedError(ClientError):
    """The caller exceeded its rate limit."""

    status = 429
    code = "rate_limited"
    title = "Too many requests"


class TooManyCallsError(RateLimitedError):
    """The caller already holds as many live calls as one user may (``Retry-After`` set)."""

    code = "too_many_calls"
    title = "Too many live calls"


class UsageLimitReachedError(RateLimitedError):
    """The caller used up today's calls or minutes (``Retry-After``: next UTC midnight)."""

    code = "usage_limit_reached"
    title = "Daily usage limit reached"


class CallNotFoundError(NotFoundError):
    """The call is unknown, already ended, or another user's (never told apart)."""

    code = "call_not_found"
    title = "Call not found"


class StorageUnavailableError(AppError):
    """Our own durable storage could not take the request (disk full, database locked)."""

    status = 503
    code = "storage_unavailable"
    title = "Storage unavailable"


class CapturePendingError(StorageUnavailableError):
    """The server is about to hear the session itself: post again after ``Retry-After``."""

    code = "capture_pending"
    title = "Capture pending"


class UpstreamError(AppError):
    """A dependency (Azure, Entra ID, Key Vault) failed; never carries its body."""

    status = 502
    code = "upstream_error"
    title = "Upstream error"


class UpstreamAuthError(UpstreamError):
    """Azure refused our credential (401/403): a server configuration problem."""

    code = "upstream_auth"
    title = "Upstream refused the service credential"


class UpstreamRejectedError(UpstreamError):
    """Azure rejected the request itself (400/404): deployment or session config is wrong."""

    code = "upstream_rejected"
    title = "Upstream rejected the request"


class UpstreamUnavailableError(UpstreamError):
    """Every configured endpoint failed with a transport error or 5xx."""

    code = "upstream_unavailable"
    title = "Upstream unavailable"


class UpstreamNotConfiguredError(UpstreamError):
    """The agent's upstream has no implementation or no configuration in this deployment."""

    status = 503
    code = "upstream_not_configured"
    title = "Upstream not configured"


class UpstreamThrottledError(UpstreamError):
    """Every usable endpoint answered 429."""

    status = 503
    code = "upstream_throttled"
    title = "Upstream is throttling"


class UpstreamTimeoutError(UpstreamError):
    """The upstream did not answer within the configured bound."""

    status = 504
    code = "upstream_timeout"
    title = "Upstream timed out"


class CredentialUnavailableError(UpstreamError):
    """The service could not obtain its own credential (Entra ID, Key Vault)."""

    status = 503
    code = "credential_unavailable"
    title = "Service credential unavailable"


class CredentialTimeoutError(CredentialUnavailableError):
    """Obtaining the service credential took longer than its timeout."""

    status = 504
    code = "credential_timeout"
    title = "Service credential timed out"


def _count_answer(request: Request[Any, Any, Any], status: int) -> None:
    """Count an error answer for routes that keep their own answer metric (hot paths)."""
    handler = request.scope.get("route_handler")
    count = handler.opt.get(ANSWER_COUNTER) if handler is not None else None
    if count is not None:
        count(status)


def problem_response(
    *,
    status: int,
    code: str,
    title: str,
    detail: str,
    instance: str | None = None,
    retry_after: int | None = None,
    extra: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response[dict[str, Any]]:
    """Build an RFC 9457 problem+json response with our stable ``code`` member.

    ``headers`` adds protocol headers the status requires (``Allow`` for a 405).
    """
    body: dict[str, Any] = {
        "type": f"https://engram.dev/problems/{code.replace('_', '-')}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if instance:
        body["instance"] = instance
    body.update(extra or {})
    sent = {**(headers or {}), "Cache-Control": "no-store"}
    if retry_after is not None:
        sent["Retry-After"] = str(max(1, retry_after))
    if status == 401:  # noqa: PLR2004 - RFC 9110: a 401 names the scheme it wants
        sent["WWW-Authenticate"] = 'Bearer realm="engram-voice"'
    from litestar import Response  # noqa: PLC0415 - loaded by then; see the module docstring

    return Response(content=body, status_code=status, media_type=PROBLEM_JSON, headers=sent)


def _app_error_handler(request: Request[Any, Any, Any], exc: AppError) -> Response[Any]:
    _count_answer(request, exc.status)
    if exc.status >= _INTERNAL_SERVER_ERROR:
        # A dependency's failure and our own (storage) are told apart in the log.
        event = (
            "http.upstream_failure"
            if isinstance(exc, UpstreamError)
            else "http.service_unavailable"
        )
        _logger.warning(event, code=exc.code, status=exc.status)
    return problem_response(
        status=exc.status,
        code=exc.code,
        title=exc.title,
        detail=exc.detail,
        instance=request.url.path,
        retry_after=exc.retry_after,
        extra=exc.extra,
    )


_WHERE = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_NAMED = re.compile(r"(?:unknown|missing required) field `(?P<name>[^`]+)`")


def msgspec_field(message: str) -> str | None:
    """Return the field a msgspec validation message is about (``messages[0].id``), if any."""
    where = _WHERE.search(message)
    path = where.group("path") if where else ""
    named = _NAMED.search(message)
    if named:
        path = f"{path}.{named.group('name')}" if path else named.group("name")
    return path or None


def msgspec_reason(message: str) -> str:
    """Return a msgspec validation message without its ``- at `$.path``` suffix."""
    return _WHERE.sub("", message)


def _field_name(key: object, message: object) -> object:
    """Name the body field itself where Litestar reports only its ``data`` parameter."""
    if key == "data" and isinstance(message, str):
        return msgspec_field(message) or key
    return key


def _validation_handler(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    _count_answer(request, 400)
    items = exc.extra if isinstance(exc.extra, list) else []
    errors = [
        {"field": _field_name(item.get("key"), item.get("message")), "message": item.get("message")}
        for item in items
        if isinstance(item, dict)
    ]
    fields = ", ".join(str(e["field"]) for e in errors if e["field"]) or "body"
    return problem_response(
        status=400,
        code=ValidationError.code,
        title=ValidationError.title,
        detail=f"Invalid request: {fields}: {errors[0]['message'] if errors else exc.detail}",
        instance=request.url.path,
        extra={"errors": errors},
    )


@functools.cache
def _http_codes() -> dict[type[HTTPException], tuple[str, str]]:
    """Return our ``code`` and title for the framework's own 401, 403 and 404."""
    from litestar.exceptions import (  # noqa: PLC0415 - see the module docstring
        NotAuthorizedException,
        NotFoundException,
        PermissionDeniedException,
    )

    return {
        NotAuthorizedException: (AuthenticationError.code, AuthenticationError.title),
        PermissionDeniedException: (ForbiddenError.code, ForbiddenError.title),
        NotFoundException: (NotFoundError.code, NotFoundError.title),
    }


def _allow(exc: HTTPException) -> dict[str, str]:
    """Return the ``Allow`` header a 405 must carry (RFC 9110 15.5.6).

    Litestar's router computes it; this mapping must only not drop it.
    """
    given = {k.lower(): v for k, v in (exc.headers or {}).items()}.get("allow")
    return {"Allow": given} if given else {}


def _http_exception_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    _count_answer(request, exc.status_code)
    code, title = _http_codes().get(type(exc), ("http_error", "HTTP error"))
    headers: dict[str, str] = {}
    if exc.status_code == 405:  # noqa: PLR2004 - the one framework status worth naming
        code, title = "method_not_allowed", "Method not allowed"
        headers = _allow(exc)
    elif exc.status_code == 413:  # noqa: PLR2004
        code, title = PayloadTooLargeError.code, PayloadTooLargeError.title
    return problem_response(
        status=exc.status_code,
        code=code,
        title=title,
        detail=exc.detail if exc.status_code < _INTERNAL_SERVER_ERROR else title,
        instance=request.url.path,
        headers=headers,
    )


def _unexpected_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    _count_answer(request, _INTERNAL_SERVER_ERROR)
    # Type, message and traceback (``exc_info``); the log pipeline redacts secret-shaped
    # text in all three (logs.redact_event runs after the traceback is formatted).
    _logger.error(
        "http.unhandled_error",
        path=request.url.path,
        error=type(exc).__name__,
        error_message=str(exc),
        exc_info=exc,
    )
    return problem_response(
        status=_INTERNAL_SERVER_ERROR,
        code=AppError.code,
        title=AppError.title,
        detail="The service failed unexpectedly; the incident was logged.",
        instance=request.url.path,
    )


def exception_handlers() -> dict[type[Exception] | int, Any]:
    """Return the one table that maps every error to a problem+json answer."""
    from litestar.exceptions import (  # noqa: PLC0415 - see the module docstring
        HTTPException,
        ValidationException,
    )

    return {
        AppError: _app_error_handler,
        ValidationException: _validation_handler,
        HTTPException: _http_exception_handler,
        Exception: _unexpected_handler,
    }
