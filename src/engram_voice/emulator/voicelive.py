"""Azure Voice Live's WebRTC control channel: ``/voice-live/realtime/calls`` (a WebSocket).

Checked before the upgrade, answered with an HTTP status and Azure's JSON error (the ASGI
WebSocket denial response): injected ``upgrade_401``/``upgrade_404`` faults, the
``api-version`` (``2026-01-01-preview`` and ``2026-06-01-preview`` serve ``/calls``; the
GA ``2026-07-15`` and ``v1`` answer 404, anything else 400), the credential (header
``api-key``, query ``api-key``, header ``Authorization: Bearer``, or query
``Authorization``/``authorization`` = ``Bearer <token>``: 401), ``model`` or
``agent-name`` + ``agent-project-name`` (400), and the new-connections-per-minute quota
per credential (429). Then :class:`~engram_voice.emulator.voicelive_control.
VoiceLiveConnection` serves the socket. ``x-ms-client-sdk``, ``client-request-id`` and
``h-*`` query parameters are ignored; no subprotocol is chosen.
"""

from __future__ import annotations

from typing import Any

import msgspec
import structlog
from litestar import WebSocket, websocket
from litestar.di import NamedDependency
from litestar.types.asgi_types import WebSocketResponseBodyEvent, WebSocketResponseStartEvent

from engram_voice.emulator.azure_errors import AzureApiError
from engram_voice.emulator.keys import AuthSlot
from engram_voice.emulator.state import EmulatorState
from engram_voice.emulator.voicelive_control import VoiceLiveConnection

__all__ = [
    "API_VERSIONS",
    "API_VERSIONS_WITHOUT_CALLS",
    "VOICELIVE_CALLS",
    "deny_upgrade",
    "voicelive_calls",
]

VOICELIVE_CALLS = "/voice-live/realtime/calls"
API_VERSIONS = frozenset({"2026-01-01-preview", "2026-06-01-preview"})
API_VERSIONS_WITHOUT_CALLS = frozenset({"2026-07-15", "v1"})
_MAX_NAME = 128
_DENIAL = "websocket.http.response"
_logger = structlog.get_logger("engram_voice.emulator")
Emulator = NamedDependency[EmulatorState]


def _not_found() -> AzureApiError:
    return AzureApiError(404, "404", "Resource not found")


def _credentials(socket: WebSocket[Any, Any, Any]) -> dict[str, str]:
    """Return the credential as headers: the real ones first, else the query's forms."""
    query = socket.query_params
    found: dict[str, str] = {}
    api_key = socket.headers.get("api-key") or query.get("api-key")
    if api_key:
        found["api-key"] = api_key
    authorization = (
        socket.headers.get("authorization")
        or query.get("Authorization")
        or query.get("authorization")
    )
    if authorization:
        found["authorization"] = authorization
    return found


def _checked(socket: WebSocket[Any, Any, Any], emulator: EmulatorState) -> tuple[Any, ...]:
    """Run the checks Azure makes before the upgrade; return what the connection needs."""
    fault = emulator.faults.take_voicelive("upgrade_401", "upgrade_404")
    if fault is not None:
        raise AzureApiError.invalid_key() if fault.mode == "upgrade_401" else _not_found()
    query = socket.query_params
    api_version = query.get("api-version")
    if not api_version:
        raise AzureApiError.bad_param(
            "api-version", "Missing required query parameter 'api-version'.", "missing_parameter"
        )
    if api_version in API_VERSIONS_WITHOUT_CALLS:
        raise _not_found()
    if api_version not in API_VERSIONS:
        raise AzureApiError.bad_param(
            "api-version", f"Unsupported api-version '{api_version[:64]}'.", "invalid_api_version"
        )
    auth: AuthSlot = emulator.keys.authenticate(_credentials(socket))
    model = query.get("model") or None
    agent, project = query.get("agent-name") or None, query.get("agent-project-name") or None
    if model is None and agent is None:
        raise AzureApiError.bad_param(
            "model", "Missing required query parameter 'model' (or 'agent-name').", "missing_model"
        )
    if agent is not None and project is None:
        raise AzureApiError.bad_param(
            "agent-project-name", "Missing required agent project name.", "missing_parameter"
        )
    if any(value is not None and len(value) > _MAX_NAME for value in (model, agent, project)):
        raise AzureApiError.bad_param("model", "The model or agent name is too long.")
    if not emulator.admit_connection(auth):
        raise AzureApiError(
            429,
            "429",
            "Too many new connections per minute for this resource.",
            headers={"Retry-After": "60"},
        )
    return model, agent, api_version, auth


async def deny_upgrade(socket: WebSocket[Any, Any, Any], error: AzureApiError) -> None:
    """Refuse the upgrade with an HTTP answer (or a close where the server cannot)."""
    await socket.receive()  # websocket.connect
    if _DENIAL not in (socket.scope.get("extensions") or {}):
        await socket.close(code=1008, reason=str(error.status))
        return
    body = msgspec.json.encode(error.body())
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((name.lower().encode(), value.encode()) for name, value in error.headers.items()),
    ]
    start: WebSocketResponseStartEvent = {
        "type": "websocket.http.response.start",
        "status": error.status,
        "headers": headers,
    }
    await socket.send(start)
    end: WebSocketResponseBodyEvent = {
        "type": "websocket.http.response.body",
        "body": body,
        "more_body": False,
    }
    await socket.send(end)


@websocket(VOICELIVE_CALLS)
async def voicelive_calls(socket: WebSocket[Any, Any, Any], emulator: Emulator) -> None:
    """Serve one Voice Live WebRTC control channel, refusing bad upgrades with HTTP errors."""
    try:
        model, agent, api_version, auth = _checked(socket, emulator)
    except AzureApiError as exc:
        emulator.count("voicelive", exc.status)
        _logger.info("emulator.voicelive_refused", status=exc.status, code=exc.code)
        await deny_upgrade(socket, exc)
        return
    emulator.count("voicelive", 101)
    connection = VoiceLiveConnection(
        socket, emulator, model=model, agent=agent, api_version=api_version, auth=auth
    )
    emulator.voicelive_calls.append(connection)
    _logger.info("emulator.voicelive_connected", model=model, auth=auth, api_version=api_version)
    await connection.run()
