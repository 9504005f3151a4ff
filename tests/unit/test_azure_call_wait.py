"""An Azure OpenAI call's end: one event to wait on, whichever source ends it first."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import aiohttp
import pytest

from engram_voice.credentials import CredentialSource
from engram_voice.realtime.calls.azure_openai import AzureOpenAICall, AzureOpenAICalls
from engram_voice.realtime.calls.sideband import UPSTREAM_CLOSED, Sideband
from engram_voice.realtime.endpoints import Endpoint


def _call(sideband: Sideband) -> AzureOpenAICall:
    return AzureOpenAICall(
        sdp_answer="v=0\r\n",
        upstream_call_id="rtc_1",
        endpoint=Endpoint("http://127.0.0.1:9"),
        owner=cast("AzureOpenAICalls", None),  # only a hang-up would use it
        sideband=sideband,
    )


def _sideband(http: aiohttp.ClientSession) -> Sideband:
    return Sideband(
        http=http,
        endpoint=Endpoint("http://127.0.0.1:9"),
        call_id="rtc_1",
        credentials=cast("CredentialSource", None),  # never started: no credential read
        connect_timeout=1.0,
        on_event=lambda _: None,
    )


@pytest.mark.parametrize("ended_first", [True, False])
async def test_waiting_for_the_end_starts_no_task_and_returns_upstream_closed(
    ended_first: bool,
) -> None:
    """wait_closed needs no waiter task per source; the sideband's end (before or after) ends it."""
    async with aiohttp.ClientSession() as http:
        sideband = _sideband(http)
        if ended_first:
            sideband._call_over()
        call = _call(sideband)
        before = len(asyncio.all_tasks())
        waiter: asyncio.Task[Any] = asyncio.ensure_future(call.wait_closed())
        for _ in range(3):
            await asyncio.sleep(0)
        assert len(asyncio.all_tasks()) - before <= (0 if ended_first else 1)
        if not ended_first:
            sideband._call_over()
        async with asyncio.timeout(5):
            assert await waiter == UPSTREAM_CLOSED
