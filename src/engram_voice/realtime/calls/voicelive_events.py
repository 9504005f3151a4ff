"""What Voice Live's control events mean: parsing, the error mapping, secret-free logs.

Set-up (:mod:`~engram_voice.realtime.calls.voicelive`) maps an ``rtc.call.error`` with
:func:`rtc_call_error` and logs ``session.created``/``session.updated`` with
:func:`log_session`; the held call
(:mod:`~engram_voice.realtime.calls.voicelive_call`) logs an ``error`` event arriving on
a live channel with :func:`log_control_error`. Only short, capped fields are logged:
never the instructions, a transcript or an upstream body.
"""

from __future__ import annotations

import json
from typing import Any

import structlog

from engram_voice.errors import (
    AppError,
    UpstreamRejectedError,
    UpstreamUnavailableError,
    ValidationError,
)

__all__ = ["error_field", "log_control_error", "log_session", "parse_event", "rtc_call_error"]

_logger = structlog.get_logger("engram_voice.realtime.calls")


def parse_event(data: str) -> dict[str, Any]:
    """Return a control message as a JSON object; ``{}`` for anything else."""
    try:
        event = json.loads(data)
    except ValueError:
        return {}
    return event if isinstance(event, dict) else {}


def error_field(event: dict[str, Any], name: str) -> str | None:
    """Return ``event["error"][name]`` when it is a string, capped at 64 characters."""
    error = event.get("error")
    value = error.get(name) if isinstance(error, dict) else None
    return value[:64] if isinstance(value, str) else None


def rtc_call_error(event: dict[str, Any], session_id: str) -> AppError:
    """Map ``rtc.call.error``: a refused offer is the caller's 400, a server error a 503."""
    kind, code = error_field(event, "type"), error_field(event, "code")
    _logger.warning(
        "realtime.voicelive_rtc_call_error", session_id=session_id, type=kind, code=code
    )
    if kind == "server_error":
        return UpstreamUnavailableError(
            f"Voice Live could not set up the call (server_error {code or 'unknown'}).",
            retry_after=1,
        )
    if code is not None and "sdp" in code.lower():
        message = f"Voice Live could not use the SDP offer ({code})"
        return ValidationError(
            f"Invalid request: sdp_offer: {message}",
            extra={"errors": [{"field": "sdp_offer", "message": message}]},
        )
    return UpstreamRejectedError(
        f"Voice Live rejected the call ({kind or 'error'} {code or 'unknown'}); check the "
        "agent's Voice Live session options."
    )


def log_session(event: dict[str, Any], session_id: str) -> None:
    """Log ``session.created``/``session.updated`` without the instructions."""
    session = event.get("session") if isinstance(event.get("session"), dict) else {}
    voice = session.get("voice") if isinstance(session, dict) else None
    _logger.info(
        "realtime.voicelive_session",
        kind=event.get("type"),
        session_id=session_id,
        upstream_session=session.get("id") if isinstance(session, dict) else None,
        model=session.get("model") if isinstance(session, dict) else None,
        voice=voice.get("name") if isinstance(voice, dict) else voice,
    )


def log_control_error(event: dict[str, Any], rtc_call_id: str) -> None:
    """Log an ``error`` event arriving on a live call's channel."""
    _logger.warning(
        "realtime.voicelive_call_error",
        rtc_call_id=rtc_call_id,
        code=error_field(event, "code"),
        type=error_field(event, "type"),
    )
