"""The enrich route's own fast paths behave as Litestar's generic ones did.

The 202 is byte for byte what the generic response sent; the body reader returns the
whole body for any chunking and refuses one byte over the limit with 413.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from litestar import Litestar, Response, post
from litestar.exceptions import InternalServerException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.status_codes import HTTP_202_ACCEPTED

from engram_voice.memory.routes import _Accepted, read_body
from engram_voice.memory.schemas import EnrichAccepted

_counts = st.integers(min_value=0, max_value=10_000)


def _app(answer: EnrichAccepted, *, fast: bool) -> Litestar:
    """Return an app whose one route answers ``answer`` the fast or the generic way."""

    @post("/enrich", status_code=HTTP_202_ACCEPTED)
    async def enrich() -> Response[EnrichAccepted]:
        """Answer the given counts."""
        if fast:
            return _Accepted(answer)
        return Response(
            answer, status_code=HTTP_202_ACCEPTED, headers={"Cache-Control": "no-store"}
        )

    return Litestar(route_handlers=[enrich], openapi_config=None)


async def _messages(app: Litestar) -> list[dict[str, Any]]:
    """Call the app once over raw ASGI and return every message it sent."""
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/enrich",
        "raw_path": b"/enrich",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)  # type: ignore[arg-type]
    return sent


@settings(max_examples=60, deadline=None)
@given(accepted=_counts, duplicates=_counts, not_heard=_counts)
def test_the_prebuilt_202_equals_the_generic_response(
    accepted: int, duplicates: int, not_heard: int
) -> None:
    """For any counts, status, headers (names, values, order) and body are unchanged."""
    answer = EnrichAccepted(accepted=accepted, duplicates=duplicates, not_heard=not_heard)
    generic = asyncio.run(_messages(_app(answer, fast=False)))
    fast = asyncio.run(_messages(_app(answer, fast=True)))
    assert fast == generic
    assert generic[0]["status"] == HTTP_202_ACCEPTED


def _channel(chunks: list[bytes], *, disconnect: bool = False) -> Any:
    """Return an ASGI receive callable that yields ``chunks`` (then a disconnect, if asked)."""
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1 or disconnect}
        for i, chunk in enumerate(chunks)
    ]
    if disconnect:
        messages.append({"type": "http.disconnect"})

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    return receive


@settings(max_examples=80, deadline=None)
@given(chunks=st.lists(st.binary(max_size=40), max_size=8), limit=st.integers(0, 200))
def test_the_body_is_read_whole_and_over_the_limit_is_413(chunks: list[bytes], limit: int) -> None:
    """Any split of a body reads back whole within the limit; one byte over it is 413."""
    whole = b"".join(chunks)
    receive = _channel(chunks or [b""])
    if len(whole) <= limit:
        assert asyncio.run(read_body(receive, limit)) == whole
    else:
        with pytest.raises(RequestEntityTooLarge):
            asyncio.run(read_body(receive, limit))


@settings(max_examples=30, deadline=None)
@given(chunks=st.lists(st.binary(max_size=20), max_size=4))
def test_a_client_gone_before_the_last_chunk_is_a_server_side_error(chunks: list[bytes]) -> None:
    """A disconnect before the body's end raises as Litestar's own reader did."""
    with pytest.raises(InternalServerException):
        asyncio.run(read_body(_channel(chunks, disconnect=True), 10_000))
