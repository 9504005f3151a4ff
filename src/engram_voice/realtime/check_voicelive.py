"""``engram-voice check`` for Azure AI Voice Live: open the control channel, place no call.

What proves the configuration without starting a (billed) call: the upgrade of
``wss://{resource}/voice-live/realtime/calls?api-version=…&model=…`` succeeding with the
configured credential. Azure checks the credential (401/403), the api-version and the
resource's ``/calls`` route (404/400) and the model (400) before it upgrades, so an open
socket is the primary proof. Then, as a secondary and informative step, the agent's
session is sent as ``session.update`` and the first answer (bounded by
``VOICELIVE_ANSWER_TIMEOUT_SECONDS``) is reported: ``session.updated`` (accepted), an
``error`` naming the session (refused: exit 5), or an answer that Voice Live checks sessions
only with a call's offer (``call_not_started``; not documented either way), which is
reported as not verified without failing. No ``rtc.call.sdp.create`` is ever sent.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import aiohttp

from engram_voice.agents import Agent
from engram_voice.credentials import CredentialSource
from engram_voice.errors import (
    AppError,
    CredentialTimeoutError,
    CredentialUnavailableError,
    UpstreamAuthError,
    UpstreamRejectedError,
    UpstreamThrottledError,
    UpstreamTimeoutError,
)
from engram_voice.realtime.voicelive_session import voicelive_session
from engram_voice.realtime.voicelive_settings import (
    DEFAULT_VOICELIVE_API_VERSION,
    VoiceLiveSettings,
)
from engram_voice.realtime.voicelive_socket import open_control_socket, upgrade_status

__all__ = ["VOICELIVE_WEBRTC_REGIONS", "Reporter", "check_voicelive"]

EXIT_OK: Final = 0
EXIT_CREDENTIAL: Final = 3
EXIT_REFUSED: Final = 4
EXIT_REJECTED: Final = 5
EXIT_UNREACHABLE: Final = 6
VOICELIVE_WEBRTC_REGIONS: Final = (
    "australiaeast",
    "brazilsouth",
    "centralindia",
    "centralus",
    "eastus2",
    "italynorth",
    "japaneast",
    "japanwest",
    "koreacentral",
    "northcentralus",
    "southcentralus",
    "uksouth",
    "westus",
    "westus2",
)
"""Regions whose Voice Live serves WebRTC (/calls), per the Voice Live WebRTC how-to."""
_NOT_BEFORE_A_CALL = frozenset({"call_not_started"})
_ROLES = "'Cognitive Services User' and 'Foundry User' (formerly 'Azure AI User')"


class Reporter(Protocol):
    """What the check writes with (``engram_voice.realtime.check._Check``)."""

    def say(self, line: str = "") -> None:
        """Write one line."""
        ...

    def fail(self, code: int, what: str, fix: str) -> int:
        """Write a failure and its fix, and return ``code``."""
        ...

    async def credential(self, source: CredentialSource, api_key_setting: str) -> int:
        """Obtain one credential from ``source`` and report it."""
        ...


def _ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def _refused_fix(settings: VoiceLiveSettings) -> str:
    if settings.auth == "entra":
        return (
            f"grant the identity {_ROLES} on this Voice Live resource (role assignments take "
            "a few minutes to apply); its token is asked for the scope "
            "https://ai.azure.com/.default."
        )
    if settings.auth == "key-vault":
        return (
            f"the key in secret '{settings.key_vault_secret_name}' is not a current key of this "
            "resource (it was re-read once): store key 1 or key 2 from the resource's 'Keys and "
            "Endpoint' page as a new version of the secret, and check AZURE_VOICELIVE_ENDPOINT "
            "names that resource."
        )
    return (
        "AZURE_VOICELIVE_KEY is not a current key of this resource: copy key 1 or key 2 from "
        "the resource's 'Keys and Endpoint' page (and check AZURE_VOICELIVE_ENDPOINT names "
        "that resource)."
    )


def _rejected_fix(settings: VoiceLiveSettings, status: int | None) -> str:
    if status == 404:  # noqa: PLR2004
        return (
            f"{settings.host} does not serve WebRTC calls with api-version "
            f"{settings.api_version}: keep AZURE_VOICELIVE_API_VERSION at "
            f"{DEFAULT_VOICELIVE_API_VERSION} (the GA 2026-07-15 and v1 do not serve /calls), "
            "and check that AZURE_VOICELIVE_ENDPOINT is the AI Services (Foundry) resource, "
            "https://<resource>.services.ai.azure.com (older resources: "
            "https://<resource>.cognitiveservices.azure.com)."
        )
    return (
        f"check that AZURE_VOICELIVE_MODEL ('{settings.model}') is a model Voice Live offers "
        "(e.g. gpt-realtime) and AZURE_VOICELIVE_API_VERSION a preview version that serves "
        f"/calls ({DEFAULT_VOICELIVE_API_VERSION})."
    )


def _unreachable_fix(error: AppError) -> str:
    regions = ", ".join(VOICELIVE_WEBRTC_REGIONS)
    if isinstance(error, UpstreamThrottledError):
        return (
            "the resource is at its new-connections-per-minute quota (30 by default): "
            "try again in a minute or raise the quota."
        )
    if isinstance(error, UpstreamTimeoutError):
        return (
            "Voice Live did not answer within VOICELIVE_CONNECT_TIMEOUT_SECONDS: check the "
            "network path (a firewall dropping packets, a private endpoint) and that the "
            f"resource's region serves Voice Live WebRTC ({regions})."
        )
    return (
        "check the URL in AZURE_VOICELIVE_ENDPOINT (https://<resource>.services.ai.azure.com), "
        "DNS, and that the network (private endpoint, firewall) lets this app reach it; "
        f"Voice Live WebRTC is offered in {regions}."
    )


def _classify(error: AppError, settings: VoiceLiveSettings) -> tuple[int, str, str]:
    if isinstance(error, UpstreamAuthError):
        return EXIT_REFUSED, error.detail, _refused_fix(settings)
    if isinstance(error, UpstreamRejectedError):
        return EXIT_REJECTED, error.detail, _rejected_fix(settings, upgrade_status(error))
    if isinstance(error, CredentialUnavailableError):
        hint = (
            "the managed identity did not answer in time: check AZURE_CLIENT_ID"
            if isinstance(error, CredentialTimeoutError)
            else "the line above names the cause; docs/operations.md (Troubleshooting)"
        )
        return EXIT_CREDENTIAL, error.detail, hint + "."
    return EXIT_UNREACHABLE, error.detail, _unreachable_fix(error)


async def _first_answer(socket: aiohttp.ClientWebSocketResponse, wait: float) -> dict[str, Any]:
    """Return the first event other than ``session.created`` (or a stand-in on close/timeout)."""
    try:
        async with asyncio.timeout(wait):
            async for message in socket:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                event = json.loads(message.data)
                if isinstance(event, dict) and event.get("type") != "session.created":
                    return event
    except TimeoutError:
        return {"type": "timeout"}
    except ValueError:
        return {"type": "unreadable"}
    return {"type": "closed"}


async def _session_step(
    check: Reporter, socket: aiohttp.ClientWebSocketResponse, agent: Agent, wait: float
) -> int:
    voice = agent.voices.voice_live
    check.say(f"session: agent {agent.id} (voice {voice.name if voice else '-'}), no call placed")
    await socket.send_json(
        {"type": "session.update", "event_id": "check", "session": voicelive_session(agent)}
    )
    answer = await _first_answer(socket, wait)
    kind = answer["type"]
    found = answer.get("error")
    error: dict[str, Any] = found if isinstance(found, dict) else {}
    code = str(error.get("code") or "")
    if kind == "session.updated":
        check.say("  OK: session accepted (session.updated)")
        return EXIT_OK
    if kind in {"error", "rtc.call.error"} and code in _NOT_BEFORE_A_CALL:
        check.say(
            f"  not verified: Voice Live answered {code} (it takes the session with a call's "
            "offer); the control channel above is the proof"
        )
        return EXIT_OK
    if kind in {"error", "rtc.call.error"}:
        param = f", param {error['param']}" if error.get("param") else ""
        return check.fail(
            EXIT_REJECTED,
            f"Voice Live refused the session ({kind} {code or 'without a code'}{param}).",
            "check the agent catalog's Voice Live voice and session options for this agent "
            "(voice name, turn_detection, noise reduction, transcription model).",
        )
    check.say(f"  not verified: no answer to session.update ({kind} after at most {wait:g} s)")
    return EXIT_OK


async def check_voicelive(
    check: Reporter,
    settings: VoiceLiveSettings,
    source: CredentialSource,
    agent: Agent | None,
    http: aiohttp.ClientSession,
) -> int:
    """Resolve the credential, open the control channel, try the session; return the exit code."""
    check.say("Azure AI Voice Live (WebRTC control channel)")
    host = urlsplit(settings.endpoint).netloc
    check.say(f"endpoint: {host} (api-version {settings.api_version}, model {settings.model})")
    code = await check.credential(source, "AZURE_VOICELIVE_KEY")
    if code != EXIT_OK:
        return code
    started = time.monotonic()
    try:
        socket = await open_control_socket(http, settings, source)
    except AppError as exc:
        return check.fail(*_classify(exc, settings))
    try:
        check.say(
            f"  OK: control channel opened in {_ms(started)} ms (credential, api-version and "
            "model accepted; the credential is not shown)"
        )
        if agent is None:
            check.say("session: no agent has a Voice Live voice; session not tried")
            return EXIT_OK
        return await _session_step(check, socket, agent, settings.answer_timeout)
    finally:
        await socket.close()
