"""The relay of the service's credential recognises a refused key, however many connects ran."""

from __future__ import annotations

from typing import Any

import pytest

from engram_voice.realtime.calls.capture_process import CaptureProcess
from engram_voice.realtime.calls.capture_wire import Request
from tests.support.capture_hosts import KEY_NEW, KEY_OLD, RotatingKeys


async def _ask(process: CaptureProcess, op: str, body: Any = None) -> Any:
    return await process._do(Request(id=0, op=op, call="rtc_x", body=body))


@pytest.mark.parametrize("others", [0, 1, 63, 64, 65, 500])
async def test_a_refused_key_is_invalidated_after_any_number_of_other_connects(
    others: int,
) -> None:
    """A burst of connects between one sideband's read and its 401 never forgets its key.

    Each connect asks for the credential; the one refused reports it by token. Before, a
    token was minted per request and only the last 64 were kept, so in a burst of more
    connects the refused key was forgotten, the rotation never happened and the sideband
    was lost.
    """
    keys = RotatingKeys()
    process = CaptureProcess(credentials=keys)  # type: ignore[arg-type]
    first = await _ask(process, "credential")
    assert first[1] == KEY_OLD
    for _ in range(others):
        assert (await _ask(process, "credential"))[1] == KEY_OLD
    assert await _ask(process, "invalidate", first[4]) is True
    assert keys.invalidated == 1
    assert (await _ask(process, "credential"))[1] == KEY_NEW


async def test_an_unknown_token_invalidates_nothing() -> None:
    """A token the service never gave (a restarted service, a stray message) changes nothing."""
    keys = RotatingKeys()
    process = CaptureProcess(credentials=keys)  # type: ignore[arg-type]
    assert await _ask(process, "invalidate", 12345) is False
    assert keys.invalidated == 0
