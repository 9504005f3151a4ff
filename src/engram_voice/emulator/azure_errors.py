"""Azure-shaped error answers: ``{"error": {"code", "message", "type", "param"}}``, one mapping.

The emulator speaks Azure's wire format, not the service's problem+json: every refusal
is an :class:`AzureApiError` raised by a handler, and :func:`azure_exception_handlers`
is the only place that turns errors into HTTP answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

__all__ = ["AzureApiError", "azure_exception_handlers", "injected_error"]

_logger = structlog.get_logger("engram_voice.emulator")

_INVALID_KEY_MESSAGE = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
    "provide a valid key for an active subscription and use a correct regional API "
    "endpoint for your resource."
)

# What Azure answers for the statuses a test can inject (code, type, message).
_INJECTED: dict[int, tuple[str, str, str]] = {
    400: ("BadRequest", "invalid_request_error", "The request is invalid."),
    401: ("401", "invalid_request_error", _INVALID_KEY_MESSAGE),
    403: (
        "PermissionDenied",
        "invalid_request_error",
        "The principal does not have access to this resource.",
    ),
    404: (
        "DeploymentNotFound",
        "invalid_request_error",
        "The API deployment for this resource does not exist.",
    ),
    408: ("Timeout", "server_error", "The operation was timeout."),
    429: (
        "429",
        "requests",
        (
            "Requests to the Realtime client secrets operation have exceeded the rate limit "
            "of your current tier. Please retry after {retry_after} seconds."
        ),
    ),
    500: (
        "InternalServerError",
        "server_error",
        "The server had an error while processing your request. Sorry about that!",
    ),
    502: ("BadGateway", "server_error", "Bad gateway."),
    503: ("ServiceUnavailable", "server_error", "The service is temporarily unavailable."),
    504: ("GatewayTimeout", "server_error", "The server did not answer in time."),
}


class AzureApiError(Exception):
    """A refusal the emulator answers in Azure's JSON error format."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        error_type: str = "invalid_request_error",
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.error_type = error_type
        self.param = param
        self.headers = dict(headers or {})

    @classmethod
    def invalid_key(cls, message: str = _INVALID_KEY_MESSAGE) -> AzureApiError:
        """Return the 401 Azure answers for a missing or wrong credential."""
        return cls(401, "401", message)

    @classmethod
    def bad_param(cls, param: str, message: str, code: str = "invalid_value") -> AzureApiError:
        """Return a 400 that names the offending parameter."""
        return cls(400, code, message, param=param)

    def body(self) -> dict[str, Any]:
        """Return the JSON body Azure sends for this error."""
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
            }
        }


def injected_error(status: int, retry_after: int | None = None) -> AzureApiError:
    """Return the error Azure would send with ``status``, for fault injection."""
    code, error_type, message = _INJECTED.get(
        status,
        (str(status), "server_error" if status >= 500 else "invalid_request_error", ""),  # noqa: PLR2004
    )
    headers: dict[str, str] = {}
    if status == 429:  # noqa: PLR2004 - Azure's throttling status carries Retry-After
        seconds = retry_after if retry_after is not None else 1
        headers["Retry-After"] = str(seconds)
        message = message.format(retry_after=seconds)
    elif retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return AzureApiError(
        status,
        code,
        message or f"Injected failure {status}.",
        error_type=error_type,
        headers=headers,
    )


def _azure_error(_: Request[Any, Any, Any], exc: AzureApiError) -> Response[Any]:
    return Response(
        content=exc.body(),
        status_code=exc.status,
        media_type="application/json",
        headers=exc.headers,
    )


def _framework_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if exc.status_code == 404:  # noqa: PLR2004
        error = AzureApiError(404, "404", "Resource not found")
    elif exc.status_code == 405:  # noqa: PLR2004
        error = AzureApiError(405, "405", f"Method {request.method} is not allowed here.")
    else:
        error = AzureApiError(exc.status_code, str(exc.status_code), str(exc.detail))
    return _azure_error(request, error)


def _validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    return _azure_error(request, AzureApiError(400, "invalid_value", str(exc.detail)))


def _unexpected_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    _logger.error(
        "emulator.unhandled_error", path=request.url.path, error=type(exc).__name__, exc_info=exc
    )
    return _azure_error(request, injected_error(500))


def azure_exception_handlers() -> dict[type[Exception] | int, Any]:
    """Return the emulator's one table from errors to Azure-shaped answers."""
    return {
        AzureApiError: _azure_error,
        ValidationException: _validation_error,
        HTTPException: _framework_error,
        Exception: _unexpected_error,
    }
