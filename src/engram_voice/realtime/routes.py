"""HTTP surface of token vending: ``POST /realtime/sessions``."""

from __future__ import annotations

import time
from typing import Any

from litestar import Request, Response, post
from litestar.di import NamedDependency
from litestar.status_codes import HTTP_201_CREATED

from engram_voice.bodies import BodyDecoder
from engram_voice.errors import ANSWER_COUNTER
from engram_voice.problem_docs import problem_responses, raw_body_operation
from engram_voice.realtime.metrics import (
    SESSION_REQUESTS,
    SESSION_SECONDS,
    count_session_answer,
)
from engram_voice.realtime.schemas import MAX_BODY_BYTES, CreateSessionRequest, SessionCreated
from engram_voice.services import Services

__all__ = ["MINT_BODY", "create_session"]

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_ANSWERED_201 = SESSION_REQUESTS.labels("201")

MINT_BODY = BodyDecoder(CreateSessionRequest, max_bytes=MAX_BODY_BYTES, length_limits_are_413=False)
"""The mint body decoder: the same path as enrich's; an over-long id is a 400 like any."""


@post(
    "/realtime/sessions",
    status_code=HTTP_201_CREATED,
    request_max_body_size=MAX_BODY_BYTES,
    summary="Mint a single-use realtime credential for one agent",
    description=(
        "Authenticates the caller, applies the per-user mint rate limit, mints an Azure "
        "ephemeral key with the server-controlled session configuration of the agent, and "
        "returns it with the WebRTC URL to post the SDP offer to. Never cache the key."
    ),
    tags=["realtime"],
    responses=problem_responses(400, 401, 403, 404, 413, 429, 502, 503, 504),
    operation_class=raw_body_operation(CreateSessionRequest, "application/json"),
    opt={ANSWER_COUNTER: count_session_answer},
)
async def create_session(
    request: Request[Any, Any, Any], services: NamedDependency[Services]
) -> Response[SessionCreated]:
    """Mint a realtime session for the authenticated caller."""
    started = time.perf_counter()  # errors are counted by the one error mapping (opt)
    data = MINT_BODY.decode(await request.body())
    caller = await services.authenticator.authenticate(request.headers)
    await services.rate_limiter.check(caller.user_id)
    created = await services.sessions.create(user_id=caller.user_id, request=data)
    _ANSWERED_201.inc()
    SESSION_SECONDS.observe(time.perf_counter() - started)
    return Response(created, status_code=HTTP_201_CREATED, headers=_NO_STORE)
