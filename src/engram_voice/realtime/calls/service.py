"""The use case behind ``POST /realtime/calls``: relay the offer, hold the call, grant memory."""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

import structlog

from engram_voice.agents import AgentCatalog
from engram_voice.errors import AppError, UpstreamNotConfiguredError
from engram_voice.memory.recall import LiveSession, MemoryRecall
from engram_voice.realtime.calls.capture import CaptureSink
from engram_voice.realtime.calls.metrics import CALL_SETUP
from engram_voice.realtime.calls.registry import CallRegistry
from engram_voice.realtime.calls.schemas import CallCreated, CreateCallRequest
from engram_voice.realtime.calls.upstream import CallUpstream
from engram_voice.realtime.conversations import ConversationIds
from engram_voice.realtime.schemas import AgentInfo
from engram_voice.realtime.service import MemoryGrantIssuer

__all__ = ["DEFAULT_UPSTREAM", "RealtimeCalls"]

DEFAULT_UPSTREAM = "azure-openai"
_logger = structlog.get_logger("engram_voice.realtime.calls")


class RealtimeCalls:
    """Sets up calls through the service on the upstream each agent names."""

    def __init__(
        self,
        *,
        catalog: AgentCatalog,
        upstreams: Mapping[str, CallUpstream],
        registry: CallRegistry,
        conversations: ConversationIds,
        default_upstream: str = DEFAULT_UPSTREAM,
        memory_grants: MemoryGrantIssuer | None = None,
        capture: CaptureSink | None = None,
        recall: MemoryRecall | None = None,
    ) -> None:
        self._capture = capture
        self._recall = recall
        self.catalog = catalog
        self.registry = registry
        self._upstreams = dict(upstreams)
        self._conversations = conversations
        self._default = default_upstream
        self._memory_grants = memory_grants
        self.outcomes: Counter[str] = Counter()

    @property
    def upstream_names(self) -> list[str]:
        """Return the upstreams this service can open calls on."""
        return sorted(self._upstreams)

    async def create(self, *, user_id: str, request: CreateCallRequest) -> CallCreated:
        """Open a call for ``user_id`` with ``request.agent`` and hold it in the registry."""
        agent = self.catalog.get(request.agent)
        conversation_id = self._conversations.resolve(user_id, request.conversation_id)
        name = agent.upstream  # the catalog resolved REALTIME_DEFAULT_UPSTREAM at load
        upstream = self._upstreams.get(name)
        if upstream is None:
            self.outcomes[UpstreamNotConfiguredError.code] += 1
            raise UpstreamNotConfiguredError(
                f"Agent {agent.id!r} is served by the {name!r} upstream, which this deployment "
                f"does not serve (available: {', '.join(self.upstream_names) or 'none'})."
            )
        if self.registry.meter is not None:  # today's calls and minutes, before any upstream work
            try:
                self.registry.meter.check(user_id)
            except AppError as exc:
                self.outcomes[exc.code] += 1
                raise
        self.registry.reserve(user_id)
        session_id = f"vs_{secrets.token_hex(16)}"
        started = time.monotonic()
        recalled = None
        try:
            if self._recall is not None:  # memory as data in the instructions, within the budget
                recalled = await self._recall.recall(user_id, agent)
            opened = await upstream.open(
                agent=recalled.agent if recalled else agent,
                sdp_offer=request.sdp_offer,
                session_id=session_id,
            )
        except AppError as exc:
            self.registry.release(user_id)
            self.outcomes[exc.code] += 1
            raise
        except BaseException:
            self.registry.release(user_id)
            raise
        setup = time.monotonic() - started
        if recalled is not None and self._recall is not None and isinstance(opened, LiveSession):
            self._recall.apply_late(user_id, recalled, opened)  # a read that missed the budget
        live = await self.registry.add(
            user_id=user_id, agent_id=agent.id, upstream=name, session_id=session_id, opened=opened
        )
        bind = getattr(opened, "bind_owner", None)
        if callable(bind):  # server-side transcripts (sink None: memory off) and usage
            bind(
                self._capture,
                session_id=session_id,
                user_id=user_id,
                agent_id=agent.id,
                call_id=live.call_id,
            )
        CALL_SETUP.labels(name).observe(setup)
        self.outcomes["opened"] += 1
        _logger.info(
            "realtime.call_started",
            call_id=live.call_id,
            session_id=session_id,
            agent=agent.id,
            upstream=name,
            setup_ms=round(setup * 1000, 1),
            max_seconds=self.registry.max_seconds(name),
        )
        memory = None
        if self._memory_grants is not None and await self._capture_marked(
            opened, session_id, user_id, agent.id
        ):
            memory = self._memory_grants(session_id, user_id, agent.id)
        return CallCreated(
            call_id=live.call_id,
            session_id=session_id,
            conversation_id=conversation_id,
            agent=AgentInfo(
                id=agent.id, name=agent.name, voice=agent.voice
            ),  # the voice name on agent.upstream
            upstream=name,
            sdp_answer=opened.sdp_answer,
            expires_at=live.expires_at,
            memory=memory,
        )

    async def _capture_marked(
        self, opened: object, session_id: str, user_id: str, agent_id: str
    ) -> bool:
        """Record that the server may hear this session, before its memory token exists.

        True when nothing needs recording (the call has no capture, or memory is off) or
        the record is stored. When it cannot be stored in time (the queue is unreachable,
        e.g. PostgreSQL down at start-up) the call keeps its memory token and never claims
        authority over its session (True): the browser stays its source, as no replica
        could know the session was captured. Without the token every turn would rest on
        the server's own capture, whose store fails while the queue does; the browser's
        outbox retries until the queue is back. A call that cannot forgo its authority
        goes on without a token (False).
        """
        if self._capture is None or getattr(opened, "capture", None) is None:
            return True
        window = getattr(opened, "capture_window", None)
        seconds = window() if callable(window) else None
        expected = seconds if isinstance(seconds, float) else None
        if await self._capture.expect_capture(session_id, user_id, agent_id, window=expected):
            return True
        forgo = getattr(opened, "forgo_authority", None)
        if callable(forgo):
            forgo()
            return True
        return False

    def describe(self) -> dict[str, Any]:
        """Return the ``calls`` section of ``/status``: live calls, limits, setup outcomes."""
        return {
            **self.registry.describe(),
            "upstreams": self.upstream_names,
            "default_upstream": self._default,
            "setups": dict(self.outcomes),
        }

    async def hang_up(self, *, user_id: str, call_id: str) -> bool:
        """End ``user_id``'s call (browser hang-up); False when there is no such call of theirs."""
        return await self.registry.end(call_id, user_id=user_id, reason="client_hangup")
