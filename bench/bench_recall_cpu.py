"""What recall with a warm cache costs the mint path itself, without a shared machine's noise.

Runs ``RealtimeSessions.create`` (the use case behind ``POST /realtime/sessions``) in this
process against a stub minter that only encodes the body as the real one does (no network),
alternating recall on (every user cached, with memory) and recall off in paired batches,
and prints the CPU time per mint of each and the difference (mean and p99 over batches).

    .venv/bin/python bench/bench_recall_cpu.py --mints 20000
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._load import percentile
from tests.support.recall import FakeReader

from engram_voice.agents import load_catalog
from engram_voice.memory.circuit import CircuitBreaker
from engram_voice.memory.recall import MemoryRecall, RecallSettings
from engram_voice.realtime.conversations import ConversationIds
from engram_voice.realtime.endpoints import Endpoint
from engram_voice.realtime.schemas import CreateSessionRequest
from engram_voice.realtime.service import RealtimeSessions
from engram_voice.realtime.upstream import MintedKey

MEMORY = (
    "FACTS and ENTITIES represent relevant context to the current conversation.\n<FACTS>\n"
    + "\n".join(
        f"  - (2026-11-29T10:{i:02d}:00Z) the user said: fact number {i}." for i in range(8)
    )
    + "\n</FACTS>"
)


class StubMinter:
    """Encodes the body and decodes an answer echoing the session, as the real minter does."""

    def __init__(self) -> None:
        self._endpoint = Endpoint("https://bench.openai.azure.com")

    async def mint(self, payload: dict[str, Any]) -> MintedKey:
        """Return a key after encoding ``payload`` and decoding Azure's echo of its session."""
        body = msgspec.json.encode(payload)
        session = msgspec.json.decode(body)["session"]
        answer = msgspec.json.encode({"value": "ek_bench", "expires_at": 0, "session": session})
        echoed = msgspec.json.decode(answer)
        return MintedKey(
            value=echoed["value"], expires_at=0, session=echoed["session"], endpoint=self._endpoint
        )


def _sessions(recall: MemoryRecall | None) -> RealtimeSessions:
    return RealtimeSessions(
        catalog=load_catalog(),
        minter=StubMinter(),  # type: ignore[arg-type]
        conversations=ConversationIds([b"k" * 32]),
        deployment="gpt-realtime",
        ttl_seconds=600,
        webrtc_filter=True,
        recall=recall,
    )


async def _batch(sessions: RealtimeSessions, users: int, size: int, offset: int) -> float:
    request = CreateSessionRequest(agent="elena")
    started = time.process_time()
    for index in range(size):
        await sessions.create(user_id=f"user-{(offset + index) % users}", request=request)
    return (time.process_time() - started) / size * 1e6


async def main(args: argparse.Namespace) -> None:
    """Warm the cache, then time paired batches of mints with recall on and off."""
    reader = FakeReader(contexts={f"user-{i}": MEMORY for i in range(args.users)})
    recall = MemoryRecall(
        reader,
        RecallSettings(cache_seconds=86_400),
        circuit=CircuitBreaker(failures=5, cooldown=30),
        read_timeout=10,
    )
    on, off = _sessions(recall), _sessions(None)
    for index in range(args.users):  # warm: every user's memory cached
        await on.create(user_id=f"user-{index}", request=CreateSessionRequest(agent="elena"))
    per_on: list[float] = []
    per_off: list[float] = []
    size = 500
    for batch in range(args.mints // size):
        first, second = (on, off) if batch % 2 == 0 else (off, on)
        a = await _batch(first, args.users, size, batch * size)
        b = await _batch(second, args.users, size, batch * size)
        (per_on, per_off)[first is off].append(a)
        (per_on, per_off)[second is off].append(b)
    diff = [a - b for a, b in zip(per_on, per_off, strict=True)]
    print(f"CPU per mint in the service's use case, {len(diff)} paired batches of {size}:")
    print(f"  recall on (warm): mean {statistics.fmean(per_on):6.1f} us")
    print(f"  recall off:       mean {statistics.fmean(per_off):6.1f} us")
    print(
        f"  recall adds: mean {statistics.fmean(diff):+6.1f} us, "
        f"p99 over batches {percentile(diff, 99):+6.1f} us"
    )
    print(f"  outcomes: {dict(recall.outcomes)}")
    await recall.aclose()


if __name__ == "__main__":
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mints", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=200)
    asyncio.run(main(parser.parse_args()))
