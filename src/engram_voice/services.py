"""The long-lived clients and use cases one app instance owns, built in its lifespan."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
import httpx

from engram_voice.agents import AgentCatalog
from engram_voice.auth import Authenticator, MintRateLimiter, build_authenticator
from engram_voice.credentials import CredentialSource
from engram_voice.credentials.factory import (
    build_credential_source,
    build_voicelive_credential_source,
)
from engram_voice.memory import MemoryRuntime, MemorySink, build_memory_runtime
from engram_voice.memory.recall import MemoryReader, MemoryRecall, build_recall
from engram_voice.realtime.calls import CallLimits, CallRegistry, CallUpstream, RealtimeCalls
from engram_voice.realtime.calls.capture_process import CaptureProcess
from engram_voice.realtime.calls.factory import build_call_upstreams
from engram_voice.realtime.calls.voicelive import control_session
from engram_voice.realtime.conversations import ConversationIds
from engram_voice.realtime.endpoints import EndpointPool
from engram_voice.realtime.service import RealtimeSessions
from engram_voice.realtime.settings import VoiceLiveSettings
from engram_voice.realtime.upstream import UpstreamMinter
from engram_voice.settings import Settings
from engram_voice.usage import UsageMeter, UsageStore
from engram_voice.usage.factory import build_usage_store

__all__ = ["Overrides", "Services", "VoiceLiveUpstream", "open_services"]


@dataclass(frozen=True)
class Overrides:
    """Replacements for built services, for tests and embedding (never monkeypatching)."""

    credentials: CredentialSource | None = None
    authenticator: Authenticator | None = None
    conversation_keys: list[bytes] | None = None
    memory_sink: MemorySink | None = None
    voicelive_credentials: CredentialSource | None = None
    call_limits: CallLimits | None = None
    call_upstreams: dict[str, CallUpstream] | None = None
    usage_store: UsageStore | None = None
    usage_clock: Callable[[], float] | None = None
    """The usage meter's wall clock (the UTC day and live calls' elapsed time)."""
    memory_reader: MemoryReader | None = None
    """Recall's reader instead of the configured Zep's (recall still needs MEMORY_RECALL)."""


@dataclass(frozen=True)
class VoiceLiveUpstream:
    """Azure AI Voice Live as configured: its settings and its started credential source."""

    settings: VoiceLiveSettings
    credentials: CredentialSource


@dataclass
class Services:
    """What request handlers receive: the use cases and the state ``/status`` reports."""

    settings: Settings
    catalog: AgentCatalog
    credentials: CredentialSource
    pool: EndpointPool
    sessions: RealtimeSessions
    authenticator: Authenticator
    rate_limiter: MintRateLimiter
    memory: MemoryRuntime | None
    calls: RealtimeCalls
    started_at: float = field(default_factory=time.time)
    voicelive: VoiceLiveUpstream | None = None
    """None when AZURE_VOICELIVE_ENDPOINT is not configured."""
    usage: UsageMeter | None = None
    """The usage meter of calls set up through the service (the sideband reports to it)."""
    recall: MemoryRecall | None = None
    """Recall at call start; None when MEMORY_RECALL is off or no Zep is configured."""
    capture_process: CaptureProcess | None = None
    """Where Azure OpenAI sidebands are held; None when REALTIME_CAPTURE_PROCESS is off."""


@asynccontextmanager
async def open_services(settings: Settings, overrides: Overrides) -> AsyncIterator[Services]:
    """Build every client and use case, yield them, and close them all on the way out."""
    realtime = settings.realtime
    catalog = realtime.load_catalog()
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(
            httpx.AsyncClient(
                timeout=httpx.Timeout(realtime.request_timeout, connect=realtime.connect_timeout)
            )
        )
        upstream_http = await stack.enter_async_context(
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(
                    total=realtime.request_timeout, sock_connect=realtime.connect_timeout
                ),
                raise_for_status=False,
            )
        )
        credentials = overrides.credentials or build_credential_source(realtime)
        stack.push_async_callback(credentials.aclose)
        await credentials.start()
        pool = EndpointPool(
            realtime.endpoints,
            failure_threshold=realtime.failure_threshold,
            cooldown_seconds=realtime.cooldown_seconds,
        )
        minter = UpstreamMinter(
            session=upstream_http,
            credentials=credentials,
            pool=pool,
            request_timeout=realtime.request_timeout,
            connect_timeout=realtime.connect_timeout,
            deadline=realtime.deadline,
        )
        voicelive = await _open_voicelive(realtime.voicelive, overrides, stack)
        # Held sockets (Voice Live control channels, Azure OpenAI sidebands): no pool limit.
        control_http = await stack.enter_async_context(control_session())
        memory = await _open_memory(settings, overrides, stack)
        recall = _open_recall(settings, overrides, memory, stack)
        conversation_keys = overrides.conversation_keys or settings.signing_keys()
        sessions = RealtimeSessions(
            catalog=catalog,
            minter=minter,
            conversations=ConversationIds(conversation_keys),
            deployment=realtime.deployment,
            ttl_seconds=realtime.key_ttl_seconds,
            webrtc_filter=realtime.webrtc_filter,
            memory_grants=memory.grant if memory else None,
            recall=recall,
        )
        usage = await _open_usage(settings, overrides, stack)
        capture_process = _capture_process(settings, credentials, stack)
        # Pushed after the HTTP session, the credentials and the usage meter: the drain
        # (hanging up every live call, metering each end) runs before any is closed.
        registry = CallRegistry(
            overrides.call_limits or CallLimits.from_settings(realtime), meter=usage
        )
        stack.push_async_callback(registry.close)
        upstreams = overrides.call_upstreams
        if upstreams is None:
            upstreams = build_call_upstreams(
                realtime,
                session=upstream_http,
                minter=minter,
                credentials=credentials,
                voicelive_credentials=voicelive.credentials if voicelive else None,
                control_session=control_http,
                on_usage=usage.response_done if usage else None,
                capture_process=capture_process,
            )
        calls = RealtimeCalls(
            catalog=catalog,
            upstreams=upstreams,
            registry=registry,
            conversations=ConversationIds(conversation_keys),
            default_upstream=realtime.default_upstream,
            memory_grants=memory.grant if memory else None,
            capture=memory,
            recall=recall,
        )
        yield Services(
            settings=settings,
            catalog=catalog,
            credentials=credentials,
            pool=pool,
            sessions=sessions,
            authenticator=overrides.authenticator or build_authenticator(settings.auth, http),
            rate_limiter=MintRateLimiter(settings.auth.mint_rate_limit),
            memory=memory,
            voicelive=voicelive,
            calls=calls,
            usage=usage,
            recall=recall,
            capture_process=capture_process,
        )


def _capture_process(
    settings: Settings, credentials: CredentialSource, stack: AsyncExitStack
) -> CaptureProcess | None:
    """Return the capture process Azure OpenAI sidebands are held in (started at first call).

    Pushed before the call registry, so it closes after every call was hung up.
    """
    realtime = settings.realtime
    if not realtime.capture_process or not realtime.endpoints:
        return None
    process = CaptureProcess(
        credentials=credentials,
        log_level=settings.server.log_level,
        log_json=settings.server.log_json,
        priority=realtime.capture_priority,
    )
    stack.push_async_callback(process.aclose)
    return process


async def _open_usage(
    settings: Settings, overrides: Overrides, stack: AsyncExitStack
) -> UsageMeter:
    """Open the usage store (USAGE_STORE unless overridden) and load today's totals."""
    store = overrides.usage_store or build_usage_store(settings.usage)
    meter = UsageMeter(store, settings.usage, clock=overrides.usage_clock or time.time)
    await meter.start()
    stack.push_async_callback(meter.close)
    return meter


async def _open_voicelive(
    settings: VoiceLiveSettings | None, overrides: Overrides, stack: AsyncExitStack
) -> VoiceLiveUpstream | None:
    """Start Voice Live's credential source (a Key Vault read fails start-up) if configured."""
    if settings is None:
        return None
    credentials = overrides.voicelive_credentials or build_voicelive_credential_source(settings)
    stack.push_async_callback(credentials.aclose)
    await credentials.start()
    return VoiceLiveUpstream(settings=settings, credentials=credentials)


def _open_recall(
    settings: Settings, overrides: Overrides, memory: MemoryRuntime | None, stack: AsyncExitStack
) -> MemoryRecall | None:
    """Build recall on the delivery worker's circuit; the worker refreshes its cache."""
    worker = memory.worker if memory else None
    recall = build_recall(
        settings.recall,
        settings.memory,
        reader=overrides.memory_reader,
        circuit=worker.circuit if worker else None,
    )
    if recall is None:
        return None
    stack.push_async_callback(recall.aclose)
    if worker is not None:
        worker.on_delivered = recall.refresh
    return recall


async def _open_memory(
    settings: Settings, overrides: Overrides, stack: AsyncExitStack
) -> MemoryRuntime | None:
    """Start the memory runtime (queue and in-process worker) unless memory is disabled."""
    if not settings.memory.enabled:
        return None
    runtime = build_memory_runtime(
        settings.memory, token_keys=settings.token_keys, sink=overrides.memory_sink
    )
    await runtime.start()
    stack.push_async_callback(runtime.stop)
    return runtime
