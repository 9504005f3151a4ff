"""The stand-in's ``/api/v4`` subset: what ``zep_cloud.client.AsyncZep`` (4.x) calls.

Point the SDK at it with ``AsyncZep(api_key=..., base_url="http://HOST:PORT/api/v4")``.
Served: ``user.create / get / lookup / delete``, ``thread.create / get / list / delete``,
``thread.add_messages``, ``thread.list_messages`` and ``thread.get_context``. Rules are in
:mod:`.v4_rules`, ``Idempotency-Key`` handling in :mod:`.v4_idempotency`, the context
block in :mod:`.v4_context`. Errors have v4's shape, ``{"error": {code, message, param,
details, request_id}}`` (see ``create_standin_app``'s error handler).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.params import FromPath

from engram_voice.zep_standin.gate import Standin, decode, fail_after_store, gate
from engram_voice.zep_standin.store import ZepRuleError
from engram_voice.zep_standin.v4_context import context_block
from engram_voice.zep_standin.v4_idempotency import fingerprint
from engram_voice.zep_standin.v4_rules import (
    MAX_USER_ID_CHARS,
    AddMessagesIn,
    LookupIn,
    ThreadIn,
    UserIn,
    check_messages,
    check_uuid,
)

__all__ = ["V4_ROUTES"]

_MAX_PAGE = 1000
_DEFAULT_PAGE = 50


async def _write(
    request: Request[Any, Any, Any],
    standin: Standin,
    action: Callable[[], tuple[int, dict[str, Any]]],
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Apply a write once per ``Idempotency-Key``; return status, body and reply headers."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    request_print = fingerprint(request.method, bytes(raw).decode("latin-1"), await request.body())
    status, body, replayed = standin.v4.write(
        request.headers.get("idempotency-key"), request_print, action
    )
    if replayed:
        standin.calls["v4.replays"] += 1
        return status, body, {"Idempotent-Replayed": "true"}
    return status, body, {}


def _page(request: Request[Any, Any, Any]) -> tuple[int, int, bool]:
    """Read ``page_size``, ``cursor`` (an opaque offset) and ``order``; 400 when invalid."""
    params = request.query_params
    size_text, cursor = params.get("page_size") or str(_DEFAULT_PAGE), params.get("cursor") or "0"
    if not size_text.isdigit() or not 1 <= int(size_text) <= _MAX_PAGE:
        raise ZepRuleError(400, f"page_size must be 1-{_MAX_PAGE}", code="invalid_request")
    if not cursor.isdigit():
        raise ZepRuleError(400, "cursor is not valid", code="invalid_request", param="cursor")
    order = params.get("order") or "asc"
    if order not in ("asc", "desc"):
        raise ZepRuleError(400, "order must be asc or desc", code="invalid_request")
    return int(cursor), int(size_text), order == "desc"


def _paged(items: list[dict[str, Any]], after: int | None, total: int) -> dict[str, Any]:
    page: dict[str, Any] = {"items": items, "total_size": total}
    if after is not None:
        page["next_cursor"] = str(after)
    return page


@post("/api/v4/users")
async def create_user(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    """Create a user with a server-generated UUID (409 when its ``user_id`` is taken)."""
    standin = await gate(request, "v4.users.create")
    body: UserIn = decode(await request.body(), UserIn)
    if body.user_id is not None and not 1 <= len(body.user_id) <= MAX_USER_ID_CHARS:
        raise ZepRuleError(
            400, f"user_id must be 1-{MAX_USER_ID_CHARS} characters", code="invalid_request"
        )
    fields: dict[str, Any] = msgspec.to_builtins(body)
    status, answer, headers = await _write(request, standin, lambda: standin.v4.create_user(fields))
    return Response(answer, status_code=status, headers=headers)


@post("/api/v4/users/lookup", status_code=200)
async def lookup_user(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Resolve a developer ``user_id`` to the user (404 when none has it)."""
    standin = await gate(request, "v4.users.lookup")
    body: LookupIn = decode(await request.body(), LookupIn)
    if body.user_id is None or body.thread_id is not None or body.graph_id is not None:
        raise ZepRuleError(
            400, "the stand-in looks up by user_id only", code="invalid_request", param="user_id"
        )
    return standin.v4.lookup_user(body.user_id)


@get("/api/v4/users/{user_uuid:str}")
async def get_user(request: Request[Any, Any, Any], user_uuid: FromPath[str]) -> dict[str, Any]:
    """Return a user by UUID (400 for a non-UUID, 404 when unknown)."""
    standin = await gate(request, "v4.users.get")
    return standin.v4.get_user(check_uuid(user_uuid, "user_uuid"))


@delete("/api/v4/users/{user_uuid:str}", status_code=202)
async def delete_user(
    request: Request[Any, Any, Any], user_uuid: FromPath[str]
) -> Response[dict[str, Any]]:
    """Delete a user with its threads and messages."""
    standin = await gate(request, "v4.users.delete")
    uuid = check_uuid(user_uuid, "user_uuid")
    status, answer, headers = await _write(request, standin, lambda: standin.v4.delete_user(uuid))
    return Response(answer, status_code=status, headers=headers)


@post("/api/v4/threads")
async def create_thread(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    """Create a thread for a known user; the server chooses its UUID."""
    standin = await gate(request, "v4.threads.create")
    body: ThreadIn = decode(await request.body(), ThreadIn)
    user_uuid = check_uuid(body.user_uuid, "user_uuid")
    status, answer, headers = await _write(
        request, standin, lambda: standin.v4.create_thread(user_uuid)
    )
    return Response(answer, status_code=status, headers=headers)


@get("/api/v4/threads")
async def list_threads(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """List threads, optionally of one user (``user_uuid``), a page at a time."""
    standin = await gate(request, "v4.threads.list")
    user_text = request.query_params.get("user_uuid")
    user_uuid = check_uuid(user_text, "user_uuid") if user_text else None
    after, limit, descending = _page(request)
    return _paged(
        *standin.v4.list_threads(user_uuid, after=after, limit=limit, descending=descending)
    )


@get("/api/v4/threads/{thread_uuid:str}")
async def get_thread(request: Request[Any, Any, Any], thread_uuid: FromPath[str]) -> dict[str, Any]:
    """Return a thread by UUID (400 for a non-UUID, 404 when unknown)."""
    standin = await gate(request, "v4.threads.get")
    return standin.v4.get_thread(check_uuid(thread_uuid, "thread_uuid"))


@delete("/api/v4/threads/{thread_uuid:str}", status_code=202)
async def delete_thread(
    request: Request[Any, Any, Any], thread_uuid: FromPath[str]
) -> Response[dict[str, Any]]:
    """Delete a thread and its messages."""
    standin = await gate(request, "v4.threads.delete")
    uuid = check_uuid(thread_uuid, "thread_uuid")
    status, answer, headers = await _write(request, standin, lambda: standin.v4.delete_thread(uuid))
    return Response(answer, status_code=status, headers=headers)


@post("/api/v4/threads/{thread_uuid:str}/messages")
async def add_messages(
    request: Request[Any, Any, Any], thread_uuid: FromPath[str]
) -> Response[dict[str, Any]]:
    """Append 1-30 checked messages atomically; 202 with their server UUIDs."""
    standin = await gate(request, "v4.messages.add", memory_write=True)
    uuid = check_uuid(thread_uuid, "thread_uuid")
    body: AddMessagesIn = decode(await request.body(), AddMessagesIn)
    check_messages(body.messages, max_content_chars=standin.config.v4_max_content_chars)
    messages = body.messages or []
    status, answer, headers = await _write(
        request, standin, lambda: standin.v4.add_messages(uuid, messages)
    )
    await fail_after_store(standin)
    if body.return_context:
        user_uuid = standin.v4.get_thread(uuid)["user_uuid"]
        answer = {**answer, "context": context_block(standin.v4, user_uuid)}
    return Response(answer, status_code=status, headers=headers)


@get("/api/v4/threads/{thread_uuid:str}/messages")
async def list_messages(
    request: Request[Any, Any, Any], thread_uuid: FromPath[str]
) -> dict[str, Any]:
    """Return a page of the thread's messages in the order they were added."""
    standin = await gate(request, "v4.messages.list")
    uuid = check_uuid(thread_uuid, "thread_uuid")
    after, limit, descending = _page(request)
    return _paged(*standin.v4.list_messages(uuid, after=after, limit=limit, descending=descending))


@get("/api/v4/threads/{thread_uuid:str}/context")
async def get_context(
    request: Request[Any, Any, Any], thread_uuid: FromPath[str]
) -> dict[str, Any]:
    """Return the context block of the thread's user (all of that user's threads)."""
    standin = await gate(request, "v4.threads.context")
    thread = standin.v4.get_thread(check_uuid(thread_uuid, "thread_uuid"))
    return {"context": context_block(standin.v4, thread["user_uuid"])}


V4_ROUTES = [
    create_user,
    lookup_user,
    get_user,
    delete_user,
    create_thread,
    list_threads,
    get_thread,
    delete_thread,
    add_messages,
    list_messages,
    get_context,
]
