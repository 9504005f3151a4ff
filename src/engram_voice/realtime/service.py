"""Create realtime sessions: pick the agent, mint upstream, hand out what the browser needs."""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import structlog

from engram_voice.agents import AgentCatalog
from engram_voice.errors import AppError
from engram_voice.memory.recall import MemoryRecall
from engram_voice.realtime.conversations import ConversationIds
from engram_voice.realtime.metrics import MINT_LATENCY, MINTS
from engram_voice.realtime.schemas import (
    AgentInfo,
    ClientSecret,
    CreateSessionRequest,
    SessionCreated,
)
from engram_voice.realtime.session_config import client_secret_request
from engram_voice.realtime.upstream import UpstreamMinter

__all__ = ["MemoryGrantIssuer", "RealtimeSessions"]

_logger = structlog.get_logger("engram_voice.realtime")

_MINTED = MINTS.labels(outcome="minted")  # bound once: labels() costs a lock and a lookup

MemoryGrantIssuer = Callable[[str, str, str], dict[str, Any]]
"""Called with (session_id, user_id, agent_id); returns the response's ``memory`` object."""


class RealtimeSessions:
    """The token-vending use case behind ``POST /realtime/sessions``."""

    def __init__(
        self,
        *,
        catalog: AgentCatalog,
        minter: UpstreamMinter,
        conversations: ConversationIds,
        deployment: str,
        ttl_seconds: int,
        webrtc_filter: bool,
        memory_grants: MemoryGrantIssuer | None = None,
        recall: MemoryRecall | None = None,
    ) -> None:
        self.catalog = catalog
        self._recall = recall
        self._minter = minter
        self._conversations = conversations
        self._deployment = deployment
        self._ttl = ttl_seconds
        self._webrtc_filter = webrtc_filter
        self._memory_grants = memory_grants
        self.outcomes: Counter[str] = Counter()

    async def create(self, *, user_id: str, request: CreateSessionRequest) -> SessionCreated:
        """Mint a single-use key for ``request.agent`` on behalf of ``user_id``."""
        agent = self.catalog.get(request.agent)
        conversation_id = self._conversations.resolve(user_id, request.conversation_id)
        session_id = f"vs_{secrets.token_hex(16)}"
        if self._recall is not None:  # memory as data in the instructions, within the budget
            agent = (await self._recall.recall(user_id, agent)).agent
        payload = client_secret_request(agent, deployment=self._deployment, ttl_seconds=self._ttl)
        started = time.monotonic()
        try:
            minted = await self._minter.mint(payload)
        except AppError as exc:
            self.outcomes[exc.code] += 1
            MINTS.labels(outcome=exc.code).inc()
            raise
        elapsed = time.monotonic() - started
        self.outcomes["minted"] += 1
        _MINTED.inc()
        MINT_LATENCY.observe(elapsed)
        _logger.info(
            "realtime.session_minted",
            session_id=session_id,
            agent=agent.id,
            endpoint=minted.endpoint.host,
            latency_ms=round(elapsed * 1000, 1),
        )
        memory = self._memory_grants(session_id, user_id, agent.id) if self._memory_grants else None
        return SessionCreated(
            session_id=session_id,
            conversation_id=conversation_id,
            # minting is Azure OpenAI: the voice name the minted session speaks with
            agent=AgentInfo(
                id=agent.id, name=agent.name, voice=agent.voices.azure_openai or agent.voice
            ),
            client_secret=ClientSecret(value=minted.value, expires_at=minted.expires_at),
            webrtc_url=minted.endpoint.calls_url(webrtc_filter=self._webrtc_filter),
            deployment=self._deployment,
            memory=memory,
        )
