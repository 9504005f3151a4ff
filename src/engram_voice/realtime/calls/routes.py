"""HTTP surface of calls through the service: ``POST /realtime/calls`` and its ``DELETE``."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, delete, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from engram_voice.bodies import BodyDecoder
from engram_voice.errors import CallNotFoundError
from engram_voice.problem_docs import problem_responses, raw_body_operation
from engram_voice.realtime.calls.schemas import (
    MAX_CALL_BODY_BYTES,
    CallCreated,
    CreateCallRequest,
    check_offer,
)
from engram_voice.services import Services

__all__ = ["CALL_BODY", "create_call", "end_call"]

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

CALL_BODY = BodyDecoder(
    CreateCallRequest,
    max_bytes=MAX_CALL_BODY_BYTES,
    length_limits_are_413=False,
    check=check_offer,
)
"""The call body decoder: strict, unknown fields refused, the offer's shape checked."""


@post(
    "/realtime/calls",
    status_code=HTTP_201_CREATED,
    request_max_body_size=MAX_CALL_BODY_BYTES,
    summary="Set up a WebRTC call with one agent through the service",
    description=(
        "Authenticates the caller, applies the per-user mint rate limit and the per-user "
        "live-call limit, opens the call on the agent's upstream (Azure OpenAI: an "
        "ephemeral key minted and used server-side; Voice Live: the service's control "
        "channel) with the server-controlled session, and answers with the SDP answer, the "
        "memory grant and the call id to hang up with. No Azure credential is returned."
    ),
    tags=["realtime"],
    responses=problem_responses(400, 401, 403, 404, 413, 429, 502, 503, 504),
    operation_class=raw_body_operation(CreateCallRequest, "application/json"),
)
async def create_call(
    request: Request[Any, Any, Any], services: NamedDependency[Services]
) -> Response[CallCreated]:
    """Relay the caller's SDP offer to the agent's upstream and hold the call."""
    data = CALL_BODY.decode(await request.body())
    caller = await services.authenticator.authenticate(request.headers)
    await services.rate_limiter.check(caller.user_id)
    created = await services.calls.create(user_id=caller.user_id, request=data)
    return Response(
        created,
        status_code=HTTP_201_CREATED,
        headers={**_NO_STORE, "Location": f"/realtime/calls/{created.call_id}"},
    )


@delete(
    "/realtime/calls/{call_id:str}",
    status_code=HTTP_204_NO_CONTENT,
    summary="Hang up a call set up through the service",
    description=(
        "Ends the caller's own live call upstream and forgets it. An unknown call, one "
        "that already ended and another user's call all answer 404 `call_not_found`."
    ),
    tags=["realtime"],
    responses=problem_responses(401, 403, 404),
)
async def end_call(
    call_id: FromPath[str], request: Request[Any, Any, Any], services: NamedDependency[Services]
) -> None:
    """Hang up the caller's call ``call_id``."""
    caller = await services.authenticator.authenticate(request.headers)
    if not await services.calls.hang_up(user_id=caller.user_id, call_id=call_id):
        raise CallNotFoundError("No live call of yours has this id.")
