"""What every stand-in handler shares: the state, the call gate and body decoding."""

from __future__ import annotations

import hmac
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgspec
from litestar import Request

from engram_voice.zep_standin.config import ZepStandinConfig
from engram_voice.zep_standin.faults import Faults
from engram_voice.zep_standin.store import StandinStore, ZepRuleError
from engram_voice.zep_standin.v4_store import V4Store

__all__ = ["Standin", "decode", "fail_after_store", "gate", "standin_of"]


@dataclass
class Standin:
    """What the stand-in's handlers share: config, stores, faults and call counters."""

    config: ZepStandinConfig
    store: StandinStore
    v4: V4Store
    faults: Faults
    calls: Counter[str] = field(default_factory=Counter)


def standin_of(request: Request[Any, Any, Any]) -> Standin:
    """Return the stand-in state the app's lifespan installed."""
    standin: Standin = request.app.state.standin
    return standin


async def gate(
    request: Request[Any, Any, Any], call: str, *, memory_write: bool = False
) -> Standin:
    """Apply latency, injected faults and the API key check, in that order; count the call."""
    standin = standin_of(request)
    standin.calls[call] += 1
    await standin.faults.delay()
    injected = standin.faults.take(memory_write=memory_write)
    if injected is not None:
        raise ZepRuleError(
            injected.status,
            injected.message,
            retry_after=injected.retry_after,
            retry_after_ms=injected.retry_after_ms,
        )
    expected = f"Api-Key {standin.config.api_key.reveal()}"
    if not hmac.compare_digest(request.headers.get("authorization", ""), expected):
        raise ZepRuleError(401, "unauthorized: send Authorization: Api-Key <key>")
    return standin


async def fail_after_store(standin: Standin) -> None:
    """Raise the injected answer that replaces a stored write's reply, if a plan says so."""
    injected = standin.faults.after_store()
    if injected is not None:
        await standin.faults.hold(injected)
        raise ZepRuleError(injected.status, injected.message)


def decode(body: bytes, kind: type[Any]) -> Any:
    """Decode a JSON body into ``kind``; 400 (``invalid_request``) when it does not fit."""
    try:
        return msgspec.json.decode(body, type=kind)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # bad UTF-8 raises the latter
        raise ZepRuleError(400, f"invalid request body: {exc}", code="invalid_request") from None
