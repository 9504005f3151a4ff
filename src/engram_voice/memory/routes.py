"""HTTP surface of enrichment: ``POST /memory/enrich`` and the session progress read.

``POST /memory/enrich`` is fire-and-forget (202 once durable); ``GET
/memory/sessions/{session_id}/progress`` tells the token's holder how far those turns got
(Bearer only; any other session is 404, so existence never leaks).

Enrich authenticates only by the memory token: ``Authorization: Bearer <token>`` or, for
``navigator.sendBeacon`` (no headers, no preflight), a ``token`` field in a JSON body
sent as ``text/plain``. The token decides user, session and agent; a token for another
session gets 403. A request may carry both only if they are the same token: credentials
that disagree are refused with 401 naming ``token``. The runtime is read from
``app.state.memory`` (set by the lifespan); on this hot path that is measurably cheaper
than a Litestar dependency. The body goes through the one decoder (``bodies``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.exceptions import InternalServerException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.params import FromPath
from litestar.status_codes import HTTP_202_ACCEPTED

from engram_voice.bodies import BodyDecoder
from engram_voice.errors import (
    ANSWER_COUNTER,
    AuthenticationError,
    ForbiddenError,
    NotFoundError,
)
from engram_voice.memory import metrics
from engram_voice.memory.runtime import MemoryRuntime
from engram_voice.memory.schemas import (
    MAX_BODY_BYTES,
    EnrichAccepted,
    EnrichRequest,
    MemoryProgress,
    refuse_unstorable_text,
)
from engram_voice.problem_docs import problem_responses, raw_body_operation

__all__ = ["ENRICH_BODY", "decode_enrich", "enrich", "memory_router", "progress", "read_body"]

_NO_STORE = {"Cache-Control": "no-store"}
_ANSWERED_202 = metrics.ENRICH_REQUESTS.labels("202")
_ENCODE = msgspec.json.Encoder().encode


class _Accepted(Response[EnrichAccepted]):
    """The 202 answer, sent as pre-built ASGI messages.

    Litestar's generic response path (header objects, media-type negotiation, encoder
    lookup) cost about a fifth of this route's own CPU; the 202 has one fixed shape. It
    stays a ``Response[EnrichAccepted]`` so the OpenAPI document is unchanged, and sends
    the same status, headers and JSON body the generic path sent.
    """

    __slots__ = ("_body",)

    def __init__(self, answer: EnrichAccepted) -> None:
        self._body = _ENCODE(answer)

    def to_asgi_response(self, *_: Any, **__: Any) -> Any:
        """Return this object: it is its own ASGI app (whatever Litestar passes)."""
        return self

    async def __call__(self, _scope: Any, _receive: Any, send: Any) -> None:
        """Send the 202 (this object is the ASGI app Litestar runs)."""
        body = self._body
        await send(
            {
                "type": "http.response.start",
                "status": HTTP_202_ACCEPTED,
                "headers": [
                    (b"cache-control", b"no-store"),
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})


ENRICH_BODY = BodyDecoder(EnrichRequest, max_bytes=MAX_BODY_BYTES, check=refuse_unstorable_text)
"""Enrich's body decoder: over-long lists and texts are 413, everything else wrong is 400
(U+0000 in a text included: the memory store cannot keep it)."""


def decode_enrich(body: bytes) -> EnrichRequest:
    """Decode and validate a request body; raise 413 for limits, 400 for everything else."""
    return ENRICH_BODY.decode(body)


async def read_body(receive: Callable[[], Awaitable[Any]], limit: int = MAX_BODY_BYTES) -> bytes:
    """Read a request body from the ASGI channel; more than ``limit`` bytes is 413.

    What ``Request.body()`` does for this route (the same errors: 413 once the bytes
    received pass the limit, 500 on a premature disconnect), without building the
    request's header map and an async generator per request: ~6 us of the route's CPU.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InternalServerException("client disconnected prematurely")
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise RequestEntityTooLarge
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _bearer(request: Request[Any, Any, Any]) -> str | None:
    # The raw scope headers: building Litestar's Headers costs more than this whole lookup.
    header = next(
        (value for name, value in request.scope["headers"] if name == b"authorization"), None
    )
    if header is None:
        return None
    scheme, _, token = header.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("Authorization must be 'Bearer <memory token>'")
    return token.strip()


@post(
    "/enrich",
    status_code=HTTP_202_ACCEPTED,
    request_max_body_size=MAX_BODY_BYTES,
    summary="Queue transcript turns for long-term memory (answers once they are durable)",
    description=(
        "Body: `{session_id, messages: [{id, role: user|assistant, text, at?}], token?}` as "
        "`application/json` or `text/plain` (sendBeacon). Authenticate with "
        "`Authorization: Bearer <memory token>` or the `token` field. Answers 202 "
        "`{accepted, duplicates}` once the turns are on durable storage; a turn posted again "
        "(same session and id) counts as a duplicate and is stored once. For a session the "
        "server captures itself (calls through the service on Azure OpenAI) nothing posted "
        "is stored: turns the server heard count as duplicates, others as `not_heard`."
    ),
    tags=["memory"],
    responses=problem_responses(400, 401, 403, 413, 429, 503),
    operation_class=raw_body_operation(EnrichRequest, "application/json", "text/plain"),
    opt={ANSWER_COUNTER: metrics.count_enrich_answer},
)
async def enrich(request: Request[Any, Any, Any]) -> Response[EnrichAccepted]:
    """Authenticate by memory token, validate, store durably, answer 202 with counts."""
    started = time.perf_counter()  # error answers are counted by the one error mapping (opt)
    memory: MemoryRuntime = request.app.state.memory  # not a Provide: DI is costly on this path
    header_token = _bearer(request)
    claims = memory.verify(header_token) if header_token else None
    payload = ENRICH_BODY.decode(await read_body(request.receive))
    if claims is None:
        if payload.token is None:
            raise AuthenticationError(
                "a memory token is required (Authorization: Bearer or a token field)"
            )
        claims = memory.verify(payload.token)
    elif payload.token is not None and payload.token != header_token:
        # Two credentials that disagree: refuse rather than silently pick one (both are
        # the caller's own, so a plain comparison leaks nothing).
        raise AuthenticationError(
            "the body token differs from the Authorization token; send one credential",
            extra={"errors": [{"field": "token", "message": "contradicts the header token"}]},
        )
    if claims.session_id != payload.session_id:
        raise ForbiddenError(
            "the memory token was issued for another session",
            extra={"errors": [{"field": "session_id", "message": "not this token's session"}]},
        )
    result, not_heard = await memory.accept_browser(claims, payload.messages)
    _ANSWERED_202.inc()
    metrics.ENRICH_SECONDS.observe(time.perf_counter() - started)
    return _Accepted(
        EnrichAccepted(accepted=result.accepted, duplicates=result.duplicates, not_heard=not_heard)
    )


@get(
    "/sessions/{session_id:str}/progress",
    summary="How far a session's transcript turns got (queued, delivered, dead-lettered)",
    description=(
        "Authenticate with `Authorization: Bearer <memory token>` of that session (no body "
        "token: this is a plain GET). Answers counts of the session's turns the service "
        "holds and whether a failed delivery is waiting for a retry. A token of another "
        "session gets 404 `not_found`, the same answer as for a session that does not "
        "exist, so nothing about other sessions leaks. Rate-limited per session."
    ),
    tags=["memory"],
    responses=problem_responses(401, 404, 429, 503),
)
async def progress(
    session_id: FromPath[str], request: Request[Any, Any, Any]
) -> Response[MemoryProgress]:
    """Answer how far the token's own session's turns got; any other session is 404."""
    memory: MemoryRuntime = request.app.state.memory
    token = _bearer(request)
    if token is None:
        raise AuthenticationError("a memory token is required (Authorization: Bearer)")
    claims = memory.verify(token)
    if claims.session_id != session_id:
        # Same answer whether or not that session exists: existence never leaks.
        raise NotFoundError("no memory progress for this session with this token")
    found = await memory.progress(session_id)
    answer = MemoryProgress(
        session_id=session_id,
        queued=found.queued,
        delivered=found.delivered,
        dead_lettered=found.dead_lettered,
        retrying=found.next_attempt_at is not None,
        next_attempt_at=found.next_attempt_at,
    )
    return Response(answer, headers=_NO_STORE)


def memory_router() -> Router:
    """Return ``/memory`` routes; they expect the runtime in ``app.state.memory``."""
    return Router(path="/memory", route_handlers=[enrich, progress])
