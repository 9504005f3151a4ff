"""The agent catalog: Elena, Marcus and Sage, loaded from a TOML file.

The package ships ``agents.toml``; operators may point ``AGENTS_FILE`` at their own.
Each agent is served by one upstream (``upstream``, else the deployment's default) and has
a voice per upstream: a Voice Live voice object (``[agents.<id>.voice_live] voice``) and an
Azure OpenAI voice name (``[agents.<id>.azure_openai] voice``); a plain ``voice = "marin"``
serves both, and ``voice_from`` inherits another agent's voice on each upstream.
``memory_recall = false`` (per agent or in ``[defaults]``) opts an agent out of recall at
call start. Loading
validates everything up front (voices the upstream can speak, inheritance, session options,
non-empty instructions, the upstream being configured) so a bad file stops start-up with
one clear message naming the file and the agent.
"""

from __future__ import annotations

import tomllib
from collections.abc import Collection, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec

from engram_voice.agents.upstreams import (
    AZURE_OPENAI,
    UPSTREAMS,
    VOICE_LIVE,
    configured_by,
    upstream_label,
)
from engram_voice.agents.voicelive import (
    OPENAI_VOICES,
    VoiceLiveOptions,
    VoiceLiveVoice,
    parse_options,
    parse_voice,
)
from engram_voice.errors import ConfigurationError, NotFoundError

__all__ = [
    "VOICES",
    "Agent",
    "AgentCatalog",
    "AgentVoices",
    "Transcription",
    "load_catalog",
]

VOICES = OPENAI_VOICES
"""The voices Azure OpenAI realtime accepts (GA): the one list, which the emulator enforces too."""

_DEFAULT_TURN_DETECTION: dict[str, Any] = {"type": "server_vad"}


class Transcription(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Input audio transcription settings sent to Azure OpenAI with every session."""

    model: str
    language: str | None = None
    prompt: str | None = None


class _AzureOpenAIFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    voice: str | None = None


class _AgentFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    instructions: str
    upstream: str | None = None
    voice: str | dict[str, Any] | None = None
    voice_from: str | None = None
    style: str = ""
    transcription: Transcription | None = None
    turn_detection: dict[str, Any] | None = None
    voice_live: dict[str, Any] | None = None
    azure_openai: _AzureOpenAIFile | None = None
    memory_recall: bool | None = None


class _Defaults(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    transcription: Transcription = Transcription(model="gpt-4o-mini-transcribe")
    turn_detection: dict[str, Any] = msgspec.field(
        default_factory=lambda: dict(_DEFAULT_TURN_DETECTION)
    )
    voice_live: dict[str, Any] = msgspec.field(default_factory=dict)
    memory_recall: bool = True


class _CatalogFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    agents: dict[str, _AgentFile]
    defaults: _Defaults = msgspec.field(default_factory=_Defaults)


class AgentVoices(msgspec.Struct, frozen=True):
    """An agent's voice on each upstream (None where it has none)."""

    voice_live: VoiceLiveVoice | None = None
    azure_openai: str | None = None

    def name_for(self, upstream: str) -> str | None:
        """Return the voice name the agent speaks with on ``upstream``."""
        if upstream == VOICE_LIVE:
            return self.voice_live.name if self.voice_live else None
        return self.azure_openai


class Agent(msgspec.Struct, frozen=True):
    """One agent, fully resolved: upstream chosen, voices inherited, defaults applied.

    ``voice`` is the voice *name* on the agent's own ``upstream``; ``voices`` holds the
    voice on each upstream; ``transcription``/``turn_detection`` are the Azure OpenAI
    session options and ``voicelive`` the Voice Live ones. ``memory_recall`` says whether
    its sessions start with what memory knows about the user (``MEMORY_RECALL`` must be on).
    """

    id: str
    name: str
    voice: str
    style: str
    instructions: str
    transcription: Transcription
    turn_detection: dict[str, Any]
    upstream: str = AZURE_OPENAI
    voices: AgentVoices = AgentVoices()
    voicelive: VoiceLiveOptions = VoiceLiveOptions()
    memory_recall: bool = True


class AgentCatalog:
    """The agents a caller may talk to, by id."""

    def __init__(self, agents: Mapping[str, Agent], *, source: str) -> None:
        self._agents = dict(agents)
        self.source = source

    def get(self, agent_id: str) -> Agent:
        """Return the agent with ``agent_id`` or raise a 404 naming the known ones."""
        agent = self._agents.get(agent_id.lower())
        if agent is None:
            known = ", ".join(sorted(self._agents))
            raise NotFoundError(f"Unknown agent {agent_id!r}; known agents: {known}")
        return agent

    def all(self) -> list[Agent]:
        """Return every agent in id order."""
        return [self._agents[key] for key in sorted(self._agents)]

    def upstreams(self) -> frozenset[str]:
        """Return the upstreams the agents are served by."""
        return frozenset(agent.upstream for agent in self._agents.values())


def _own_voices(agent_id: str, entry: _AgentFile) -> AgentVoices:
    """Return the voices ``entry`` gives itself (not inherited), each one validated."""
    where = f"agent {agent_id!r}"
    live: VoiceLiveVoice | None = None
    openai: str | None = None
    if entry.voice is not None:
        live = parse_voice(entry.voice, f"{where}: voice")
        openai = live.name if live.type == "openai" else None
    if entry.voice_live and "voice" in entry.voice_live:
        live = parse_voice(entry.voice_live["voice"], f"{where}: voice_live.voice")
    if entry.azure_openai and entry.azure_openai.voice is not None:
        openai = entry.azure_openai.voice
        if openai not in VOICES:
            raise ConfigurationError(
                f"{where}: azure_openai.voice uses unknown voice {openai!r}; Azure OpenAI "
                "speaks " + ", ".join(sorted(VOICES))
            )
    return AgentVoices(voice_live=live, azure_openai=openai)


def _resolve_voices(
    agent_id: str, raw: Mapping[str, _AgentFile], seen: tuple[str, ...]
) -> AgentVoices:
    """Return ``agent_id``'s voices, each upstream's inherited through ``voice_from``."""
    entry = raw[agent_id]
    own = _own_voices(agent_id, entry)
    if not entry.voice_from:
        return own
    if entry.voice_from not in raw:
        raise ConfigurationError(f"agent {agent_id!r} inherits from unknown {entry.voice_from!r}")
    if entry.voice_from in seen or entry.voice_from == agent_id:
        raise ConfigurationError(f"agent voice inheritance loops through {agent_id!r}")
    parent = _resolve_voices(entry.voice_from, raw, (*seen, agent_id))
    return AgentVoices(
        voice_live=own.voice_live or parent.voice_live,
        azure_openai=own.azure_openai or parent.azure_openai,
    )


def _needed_voice(agent_id: str, upstream: str, voices: AgentVoices, why: str) -> None:
    """Stop with one message when the agent has no voice ``upstream`` can speak."""
    if voices.name_for(upstream):
        return
    if upstream == AZURE_OPENAI and voices.voice_live is not None:
        spoken = f"{voices.voice_live.type} voice {voices.voice_live.name!r}"
        raise ConfigurationError(
            f"agent {agent_id!r}: Azure OpenAI cannot speak the {spoken} ({why}); give it an "
            f'OpenAI voice: [agents.{agent_id}.azure_openai] voice = "marin"'
        )
    hint = (
        f'[agents.{agent_id}.voice_live] voice = {{ type = "azure-standard", '
        'name = "en-US-AvaNeural" }'
        if upstream == VOICE_LIVE
        else f'[agents.{agent_id}.azure_openai] voice = "marin"'
    )
    raise ConfigurationError(
        f"agent {agent_id!r} has no {upstream_label(upstream)} voice ({why}); "
        f"add `voice`, `voice_from` or {hint}"
    )


def _upstream(
    agent_id: str, entry: _AgentFile, default: str, configured: Collection[str] | None
) -> str:
    upstream = (entry.upstream or default).lower()
    if upstream not in UPSTREAMS:
        raise ConfigurationError(
            f"agent {agent_id!r} has unknown upstream {upstream!r}; choose "
            + " or ".join(UPSTREAMS)
        )
    if configured is not None and upstream not in configured:
        other = next(u for u in UPSTREAMS if u != upstream)
        raise ConfigurationError(
            f"agent {agent_id!r} uses upstream {upstream}, which is not configured: set "
            f"{configured_by(upstream)} (or give the agent upstream = {other!r})"
        )
    return upstream


def _parse(
    data: bytes, source: str, *, default_upstream: str, configured: Collection[str] | None
) -> AgentCatalog:
    """Parse and validate a catalog; every problem is reported with ``source`` in front."""
    try:
        agents = _validated(data, default_upstream=default_upstream, configured=configured)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{source}: {exc}") from exc
    return AgentCatalog(agents, source=source)


def _validated(
    data: bytes, *, default_upstream: str, configured: Collection[str] | None
) -> dict[str, Agent]:
    try:
        parsed = msgspec.convert(tomllib.loads(data.decode()), _CatalogFile)
    except (tomllib.TOMLDecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"invalid agents file: {exc}") from exc
    if not parsed.agents:
        raise ConfigurationError("the agents file defines no agents")
    defaults = parse_options(parsed.defaults.voice_live, "defaults.voice_live")
    agents: dict[str, Agent] = {}
    for agent_id, entry in parsed.agents.items():
        upstream = _upstream(agent_id, entry, default_upstream, configured)
        voices = _resolve_voices(agent_id, parsed.agents, ())
        _needed_voice(agent_id, upstream, voices, f"it uses upstream {upstream}")
        if configured is not None and AZURE_OPENAI in configured and upstream != AZURE_OPENAI:
            why = "POST /realtime/sessions mints Azure OpenAI keys for every agent"
            _needed_voice(agent_id, AZURE_OPENAI, voices, why)
        if not entry.instructions.strip():
            raise ConfigurationError(f"agent {agent_id!r} has empty instructions")
        options = {k: v for k, v in (entry.voice_live or {}).items() if k != "voice"}
        voicelive = parse_options(options, f"agent {agent_id!r}: voice_live")
        agents[agent_id.lower()] = Agent(
            id=agent_id.lower(),
            name=entry.name,
            voice=voices.name_for(upstream) or "",
            style=entry.style,
            instructions=" ".join(entry.instructions.split()),
            transcription=entry.transcription or parsed.defaults.transcription,
            turn_detection=entry.turn_detection or parsed.defaults.turn_detection,
            upstream=upstream,
            voices=voices,
            voicelive=voicelive.merged_over(defaults),
            memory_recall=(
                parsed.defaults.memory_recall
                if entry.memory_recall is None
                else entry.memory_recall
            ),
        )
    return agents


def load_catalog(
    path: str | None = None,
    *,
    default_upstream: str = AZURE_OPENAI,
    configured: Collection[str] | None = None,
) -> AgentCatalog:
    """Load the catalog from ``path``, or the one shipped with the package.

    Agents without ``upstream`` use ``default_upstream``; when ``configured`` (the upstreams
    the environment configures) is given, an agent on another upstream stops loading.
    """
    if path is None:
        data = resources.files("engram_voice.agents").joinpath("agents.toml").read_bytes()
        source = "built-in agents.toml"
    else:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"AGENTS_FILE={path} cannot be read: {exc.strerror}") from exc
        source = f"AGENTS_FILE={Path(path)}"
    return _parse(data, source, default_upstream=default_upstream, configured=configured)
