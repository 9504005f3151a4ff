"""HTTP routes: Azure's GA realtime paths, plus the emulator's own controls under ``/_emulator``.

Azure Voice Live's control WebSocket lives in :mod:`engram_voice.emulator.voicelive`.

Order of checks on Azure's paths: injected latency or hang, ``api-version`` (refused on
v1 paths), authentication, injected error status, then the request itself. An ephemeral
key is spent only once the offer passed the cheap checks (content type, SDP shape).
"""

from __future__ import annotations

from typing import Any

import msgspec
import structlog
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath

from engram_voice.emulator.azure_errors import AzureApiError
from engram_voice.emulator.events import new_id
from engram_voice.emulator.keys import FINGERPRINT_HEX, AuthSlot, bearer_token
from engram_voice.emulator.minting import checked_session, session_object
from engram_voice.emulator.peer import OfferRejectedError, RealtimeCall
from engram_voice.emulator.schemas import ClientSecretRequest, FaultRequest, decode_strict
from engram_voice.emulator.sideband import sideband
from engram_voice.emulator.state import EmulatorState
from engram_voice.emulator.voicelive import voicelive_calls

__all__ = [
    "ROUTES",
    "create_call",
    "create_client_secret",
    "hangup_call",
    "healthz",
    "provide_emulator",
    "read_state",
    "regenerate_key",
    "set_faults",
]

REALTIME = "/openai/v1/realtime"
_MAX_SDP_BYTES = 64 * 1024
_FILTER_ON = frozenset({"on", "true", "1"})
_NO_STORE = {"Cache-Control": "no-store"}
_logger = structlog.get_logger("engram_voice.emulator")
Emulator = NamedDependency[EmulatorState]


def provide_emulator(state: State) -> EmulatorState:
    """Inject the app's :class:`EmulatorState` into handlers."""
    emulator: EmulatorState = state.emulator
    return emulator


def _refuse_api_version(request: Request[Any, Any, Any]) -> None:
    if "api-version" in request.query_params:
        raise AzureApiError(
            401,
            "401",
            "api-version query parameter is not allowed when using /v1 path",
            param="api-version",
        )


def _session_in(body: bytes) -> Any:
    try:
        decoded = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None
    return decoded.get("session") if isinstance(decoded, dict) else None


@get("/healthz", sync_to_thread=False)
def healthz() -> dict[str, str]:
    """Answer 200 while the emulator is alive."""
    return {"status": "ok"}


@post(f"{REALTIME}/client_secrets", status_code=200)
async def create_client_secret(
    request: Request[Any, Any, Any], emulator: Emulator
) -> Response[dict[str, Any]]:
    """Mint a single-use ephemeral key bound to the requested session, as Azure does."""
    auth: AuthSlot | None = None
    seen: Any = None
    try:
        await emulator.faults.delay("client_secrets", emulator.config.latency_ms)
        _refuse_api_version(request)
        auth = emulator.keys.authenticate(request.headers)
        body = await request.body()
        seen = _session_in(body)
        emulator.faults.fail("client_secrets")
        minted = decode_strict(body, ClientSecretRequest)
        session = checked_session(minted, emulator.config.deployments)
        answer_session = session_object(session, new_id("sess"))
        value, key = emulator.ephemeral.issue(answer_session, minted.expires_after.seconds)
    except AzureApiError as exc:
        emulator.record_mint(status=exc.status, auth=auth, session=seen)
        _logger.info("emulator.mint_refused", status=exc.status, code=exc.code, auth=auth)
        raise
    emulator.record_mint(status=200, auth=auth, session=seen, session_id=answer_session["id"])
    _logger.info(
        "emulator.mint_accepted",
        auth=auth,
        key=key.digest[:FINGERPRINT_HEX],  # the key's fingerprint (keys.fingerprint)
        model=answer_session["model"],
        expires_in=minted.expires_after.seconds,
    )
    return Response(
        {"value": value, "expires_at": key.expires_at, "session": answer_session},
        headers=_NO_STORE,
    )


def _offer_text(request: Request[Any, Any, Any], body: bytes) -> str:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/sdp":
        raise AzureApiError(
            415,
            "unsupported_content_type",
            f"Unsupported Content-Type '{media_type or 'none'}': send the SDP offer as "
            "application/sdp.",
        )
    if len(body) > _MAX_SDP_BYTES:
        raise AzureApiError(400, "invalid_offer", "The SDP offer is too large.", param="sdp")
    try:
        text = body.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise AzureApiError(
            400, "invalid_offer", "The SDP offer is not UTF-8.", param="sdp"
        ) from exc
    if not text.startswith("v=0") or "\nm=" not in text:
        raise AzureApiError(
            400, "invalid_offer", "The body is not an SDP offer with media sections.", param="sdp"
        )
    return text + "\r\n"


def _ephemeral_token(request: Request[Any, Any, Any]) -> str:
    token = bearer_token(request.headers)
    if token is None and "api-key" in request.headers:
        raise AzureApiError(
            401,
            "invalid_api_key",
            "Calls are created with an ephemeral key (Authorization: Bearer ek_...), "
            "not a resource key.",
        )
    if token is None:
        raise AzureApiError.invalid_key(
            "Access denied due to missing credentials: send Authorization: Bearer <ephemeral key>."
        )
    if not token.startswith("ek_"):
        raise AzureApiError(
            401, "invalid_api_key", "Calls are created with an ephemeral key, not this token."
        )
    return token


def _ensure_capacity(emulator: EmulatorState) -> None:
    if emulator.full():
        raise AzureApiError(
            429, "429", "Too many concurrent realtime calls.", headers={"Retry-After": "1"}
        )


def _known_call(emulator: EmulatorState, call_id: str) -> RealtimeCall:
    call = emulator.find_call(call_id)
    if call is None:
        raise AzureApiError(
            404, "call_not_found", f"Call '{call_id}' was not found.", param="call_id"
        )
    return call


@post(f"{REALTIME}/calls", status_code=201)
async def create_call(request: Request[Any, Any, Any], emulator: Emulator) -> Response[bytes]:
    """Answer a WebRTC SDP offer authenticated by an unused, unexpired ephemeral key."""
    try:
        await emulator.faults.delay("calls")
        _refuse_api_version(request)
        token = _ephemeral_token(request)
        emulator.ephemeral.check(token)
        emulator.faults.fail("calls")
        offer = _offer_text(request, await request.body())
        _ensure_capacity(emulator)
        call_id = new_id("rtc")
        key = emulator.ephemeral.redeem(token, call_id)
        filtered = request.query_params.get("webrtcfilter", "").lower() in _FILTER_ON
        call = emulator.open_call(
            call_id, key.session, filtered=filtered, media=emulator.config.media
        )
        try:
            answer = await call.answer(offer)
        except OfferRejectedError as exc:
            raise AzureApiError(
                400, "invalid_offer", f"The SDP offer could not be applied: {exc}", param="sdp"
            ) from exc
    except AzureApiError as exc:
        emulator.count("calls", exc.status)
        _logger.info("emulator.call_refused", status=exc.status, code=exc.code)
        raise
    emulator.count("calls", 201)
    _logger.info("emulator.call_created", call_id=call_id, agent=call.agent, filtered=filtered)
    location = f"{REALTIME}/calls/{call_id}"
    if emulator.config.public_url:
        location = emulator.config.public_url + location
    return Response(
        answer.encode(),
        status_code=201,
        media_type="application/sdp",
        headers={"Location": location, **_NO_STORE},
    )


@post(f"{REALTIME}/calls/{{call_id:str}}/hangup", status_code=200)
async def hangup_call(
    call_id: FromPath[str], request: Request[Any, Any, Any], emulator: Emulator
) -> Response[bytes]:
    """End a call from the server side (resource key or accepted bearer token)."""
    try:
        _refuse_api_version(request)
        emulator.keys.authenticate(request.headers)
        await _known_call(emulator, call_id).close("hangup")
    except AzureApiError as exc:
        emulator.count("hangup", exc.status)
        raise
    emulator.count("hangup", 200)
    _logger.info("emulator.call_hung_up", call_id=call_id)
    return Response(b"", status_code=200)


@get("/_emulator/state")
async def read_state(emulator: Emulator) -> dict[str, Any]:
    """Return counters, recent mints (session objects and auth slots), calls and faults."""
    return emulator.snapshot()


@post("/_emulator/faults", status_code=200)
async def set_faults(request: Request[Any, Any, Any], emulator: Emulator) -> dict[str, Any]:
    """Change injected faults, e.g. ``{"status": 500, "count": 2}`` or ``{"clear": true}``."""
    change = decode_strict(await request.body(), FaultRequest)
    return emulator.faults.apply(change)


@post("/_emulator/keys/{slot:int}/regenerate", status_code=200)
async def regenerate_key(slot: FromPath[int], emulator: Emulator) -> Response[dict[str, Any]]:
    """Replace key ``slot`` (1 or 2) with a new random key, returned only in this answer."""
    value = emulator.keys.regenerate(slot)
    _logger.info("emulator.key_regenerated", slot=slot)
    return Response({"slot": slot, "key": value}, headers=_NO_STORE)


ROUTES = [
    healthz,
    create_client_secret,
    create_call,
    hangup_call,
    read_state,
    set_faults,
    regenerate_key,
    voicelive_calls,
    sideband,
]
