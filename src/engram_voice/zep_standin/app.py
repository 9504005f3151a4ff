"""The Zep stand-in's HTTP app: the v2 and v4 API subsets the SDKs use, plus an admin API.

``/api/v2`` is what zep-python 2.0.2 uses, ``/api/v4`` what zep-cloud 4.x uses
(:mod:`.v4_routes`).

API calls need ``Authorization: Api-Key <key>`` (as both SDKs send it) and answer errors
as Zep does: ``{"message": ...}`` on ``/api/v2``, ``{"error": {code, message, param,
details, request_id}}`` on ``/api/v4``. Paths are routed as sent, one id per path segment,
and each id is percent-decoded after routing, as a server routing on the raw path does:
so ``/users/a%2Fb`` is the user ``a/b``, while ``/users/a/b`` (what an SDK that does not
encode ids sends) is no route at all, 404. ``/_standin/faults`` injects failures and
``/_standin/state`` reports counts; both are for local development and tests only.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast
from urllib.parse import unquote

import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.enums import ScopeType
from litestar.params import FromPath
from litestar.status_codes import HTTP_201_CREATED
from litestar.types import LifeSpanReceive, LifeSpanScope, LifeSpanSend, Receive, Scope, Send

from engram_voice.gcfreeze import freeze_startup_objects
from engram_voice.zep_standin.config import ZepStandinConfig
from engram_voice.zep_standin.faults import FaultPlan, Faults
from engram_voice.zep_standin.gate import Standin, fail_after_store, gate, standin_of
from engram_voice.zep_standin.gate import decode as _decode
from engram_voice.zep_standin.store import MessageIn, StandinStore, ZepRuleError
from engram_voice.zep_standin.v4_routes import V4_ROUTES
from engram_voice.zep_standin.v4_store import V4Store

__all__ = ["Standin", "create_standin_app"]


class _UserIn(msgspec.Struct, frozen=True):
    user_id: str | None = None
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    metadata: dict[str, Any] | None = None


class _SessionIn(msgspec.Struct, frozen=True):
    session_id: str | None = None
    user_id: str | None = None
    metadata: dict[str, Any] | None = None


class _MemoryIn(msgspec.Struct, frozen=True):
    messages: list[MessageIn] | None = None


@post("/api/v2/users", status_code=HTTP_201_CREATED)
async def add_user(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Create a user (400 when it exists)."""
    standin = await gate(request, "users.add")
    body: _UserIn = _decode(await request.body(), _UserIn)
    return standin.store.add_user(body.user_id, msgspec.to_builtins(body))


@get("/api/v2/users/{user_id:str}")
async def get_user(request: Request[Any, Any, Any], user_id: FromPath[str]) -> dict[str, Any]:
    """Return a user (404 when unknown)."""
    standin = await gate(request, "users.get")
    return standin.store.get_user(unquote(user_id))


@post("/api/v2/sessions", status_code=HTTP_201_CREATED)
async def add_session(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Create a session (400 for an unknown user or a duplicate)."""
    standin = await gate(request, "sessions.add")
    body: _SessionIn = _decode(await request.body(), _SessionIn)
    return standin.store.add_session(body.session_id, body.user_id, body.metadata)


@get("/api/v2/sessions/{session_id:str}")
async def get_session(request: Request[Any, Any, Any], session_id: FromPath[str]) -> dict[str, Any]:
    """Return a session (404 when unknown)."""
    standin = await gate(request, "sessions.get")
    return standin.store.get_session(unquote(session_id))


@post("/api/v2/sessions/{session_id:str}/memory", status_code=200)
async def add_memory(request: Request[Any, Any, Any], session_id: FromPath[str]) -> dict[str, Any]:
    """Append up to 30 messages atomically (400 on any rule, e.g. an existing uuid)."""
    standin = await gate(request, "memory.add", memory_write=True)
    body: _MemoryIn = _decode(await request.body(), _MemoryIn)
    standin.store.add_messages(unquote(session_id), body.messages or [])
    await fail_after_store(standin)
    return {"message": "OK"}


@get("/api/v2/sessions/{session_id:str}/memory")
async def get_memory(request: Request[Any, Any, Any], session_id: FromPath[str]) -> dict[str, Any]:
    """Return the session's messages in order (``lastn`` limits to the newest)."""
    standin = await gate(request, "memory.get")
    lastn_text = request.query_params.get("lastn") or ""
    lastn = int(lastn_text) if lastn_text.isdigit() else None
    messages = standin.store.messages(unquote(session_id), lastn)
    return {"messages": messages, "metadata": {}, "relevant_facts": []}


@get("/api/v2/sessions/{session_id:str}/messages/{message_uuid:str}")
async def get_message(
    request: Request[Any, Any, Any], session_id: FromPath[str], message_uuid: FromPath[str]
) -> dict[str, Any]:
    """Return one message by uuid (404 when the session does not hold it)."""
    standin = await gate(request, "messages.get")
    return standin.store.message(unquote(session_id), unquote(message_uuid))


@get("/healthz")
async def healthz() -> dict[str, str]:
    """Answer 200 while the stand-in runs (no faults, no key)."""
    return {"status": "ok"}


@post("/_standin/faults", status_code=200)
async def set_faults(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Install a fault plan, or clear it with ``{"clear": true}``."""
    standin = standin_of(request)
    plan: FaultPlan = _decode(await request.body(), FaultPlan)
    standin.faults.set(plan)
    return {"mode": standin.faults.plan.mode, "latency_ms": standin.faults.latency_ms}


@get("/_standin/state")
async def state(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Report stored counts, calls per endpoint and injected faults."""
    standin = standin_of(request)
    return {
        "counts": {**standin.store.counts(), **standin.v4.counts()},
        "calls": dict(standin.calls),
        "faults": {"mode": standin.faults.plan.mode, "injected": standin.faults.injected},
    }


def _zep_error(request: Request[Any, Any, Any], exc: ZepRuleError) -> Response[dict[str, Any]]:
    """Answer a broken rule or an injected fault in the shape of the API that was called."""
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else {}
    if exc.retry_after_ms is not None:
        headers["retry-after-ms"] = str(exc.retry_after_ms)
    if not request.url.path.startswith("/api/v4/"):
        return Response({"message": exc.message}, status_code=exc.status, headers=headers)
    error = {
        "code": exc.code or _V4_CODES.get(exc.status, "error"),
        "message": exc.message,
        "param": exc.param,
        "details": None,
        "request_id": str(uuid.uuid4()),
    }
    return Response({"error": error}, status_code=exc.status, headers=headers)


_V4_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    404: "not_found",
    409: "conflict",
    422: "unprocessable",
    429: "rate_limited",
    500: "internal_error",
    503: "service_unavailable",
    504: "timeout",
}


class _RawPathLitestar(Litestar):
    """Litestar routing on the raw (still percent-encoded) path, as Zep's server does.

    The ASGI server hands Litestar a decoded ``path``, in which ``a%2Fb`` has become two
    segments; routing on ``raw_path`` keeps an encoded id in one segment.
    """

    async def __call__(
        self,
        scope: Scope | LifeSpanScope,
        receive: Receive | LifeSpanReceive,
        send: Send | LifeSpanSend,
    ) -> None:
        """Route HTTP requests on ``raw_path``; everything else as Litestar does."""
        raw = scope.get("raw_path") if scope["type"] == ScopeType.HTTP else None
        if isinstance(raw, bytes) and raw:
            scope = cast("Scope", {**scope, "path": raw.decode("latin-1")})
        await super().__call__(scope, receive, send)


def create_standin_app(config: ZepStandinConfig, *, store: StandinStore | None = None) -> Litestar:
    """Build the stand-in app; it opens (and closes) its SQLite store in its lifespan."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        own = store or StandinStore(config.db_path, max_content_chars=config.max_content_chars)
        v4 = V4Store(config.db_path, idempotency_ttl_s=config.idempotency_ttl_s)
        app.state.standin = Standin(
            config=config, store=own, v4=v4, faults=Faults(latency_ms=config.latency_ms)
        )
        freeze_startup_objects()  # a steady stand-in: no full-GC stalls in latency runs
        try:
            yield
        finally:
            v4.close()
            if store is None:
                own.close()

    return _RawPathLitestar(
        route_handlers=[
            add_user,
            get_user,
            add_session,
            get_session,
            add_memory,
            get_memory,
            get_message,
            *V4_ROUTES,
            healthz,
            set_faults,
            state,
        ],
        exception_handlers={ZepRuleError: _zep_error},
        lifespan=[lifespan],
        openapi_config=None,
        debug=False,
        logging_config=None,  # the process configures logging (LOG_FORMAT, redaction)
    )
