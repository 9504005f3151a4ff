"""Build the call upstreams a deployment serves: the one place a new upstream is added."""

from __future__ import annotations

import aiohttp

from engram_voice.credentials import CredentialSource
from engram_voice.realtime.calls.azure_openai import AzureOpenAICalls
from engram_voice.realtime.calls.capture import UsageHook
from engram_voice.realtime.calls.capture_process import CaptureProcess
from engram_voice.realtime.calls.upstream import CallUpstream
from engram_voice.realtime.calls.voicelive import VoiceLiveCalls
from engram_voice.realtime.settings import RealtimeSettings
from engram_voice.realtime.upstream import UpstreamMinter

__all__ = ["build_call_upstreams"]


def build_call_upstreams(
    realtime: RealtimeSettings,
    *,
    session: aiohttp.ClientSession,
    minter: UpstreamMinter,
    credentials: CredentialSource,
    voicelive_credentials: CredentialSource | None = None,
    control_session: aiohttp.ClientSession | None = None,
    on_usage: UsageHook | None = None,
    capture_process: CaptureProcess | None = None,
) -> dict[str, CallUpstream]:
    """Return the configured upstreams by name.

    Voice Live joins when ``realtime.voicelive`` is configured and its (started) credential
    source is given; its control channels are held on ``control_session`` (no pool limit),
    else on ``session``; so are Azure OpenAI's sidebands (one per call). ``on_usage``
    receives each ``response.done`` usage the sideband hears (usage metering).
    ``capture_process``: where Azure OpenAI sidebands are held (None: on this loop).
    """
    upstreams: dict[str, CallUpstream] = {}
    if realtime.voicelive is not None and voicelive_credentials is not None:
        voicelive = VoiceLiveCalls(
            settings=realtime.voicelive,
            credentials=voicelive_credentials,
            session=control_session or session,
            on_usage=on_usage,
        )
        upstreams[voicelive.name] = voicelive
    if not realtime.endpoints:  # Azure OpenAI not configured: its agents get a clear 503
        return upstreams
    azure_openai = AzureOpenAICalls(
        session=session,
        minter=minter,
        credentials=credentials,
        deployment=realtime.deployment,
        ttl_seconds=realtime.key_ttl_seconds,
        webrtc_filter=realtime.webrtc_filter,
        request_timeout=realtime.request_timeout,
        connect_timeout=realtime.connect_timeout,
        sideband=True,
        sideband_session=control_session,
        on_usage=on_usage,
        capture_process=capture_process,
    )
    upstreams[azure_openai.name] = azure_openai
    return upstreams
