"""The agent catalog: Elena, Marcus and Sage, loaded from a TOML file.

The package ships ``agents.toml``; operators may point ``AGENTS_FILE`` at their own.
Loading validates everything up front (known voices, inheritance, non-empty
instructions) so a bad file stops start-up with one clear message.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec

from engram_voice.errors import ConfigurationError, NotFoundError

__all__ = ["VOICES", "Agent", "AgentCatalog", "Transcription", "load_catalog"]

VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"}
)
"""The voices Azure OpenAI realtime accepts (GA): the one list, which the emulator enforces too."""


class Transcription(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Input audio transcription settings sent to Azure with every session."""

    model: str
    language: str | None = None
    prompt: str | None = None


class _AgentFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    instructions: str
    voice: str | None = None
    voice_from: str | None = None
    style: str = ""
    transcription: Transcription | None = None
    turn_detection: dict[str, Any] | None = None


class _Defaults(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    transcription: Transcription
    turn_detection: dict[str, Any]


class _CatalogFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    defaults: _Defaults
    agents: dict[str, _AgentFile]


class Agent(msgspec.Struct, frozen=True):
    """One agent, fully resolved: voice inherited and defaults applied."""

    id: str
    name: str
    voice: str
    style: str
    instructions: str
    transcription: Transcription
    turn_detection: dict[str, Any]


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


def _resolve_voice(agent_id: str, raw: Mapping[str, _AgentFile], seen: tuple[str, ...]) -> str:
    entry = raw[agent_id]
    if entry.voice:
        return entry.voice
    if not entry.voice_from:
        raise ConfigurationError(f"agent {agent_id!r} needs `voice` or `voice_from`")
    if entry.voice_from not in raw:
        raise ConfigurationError(f"agent {agent_id!r} inherits from unknown {entry.voice_from!r}")
    if entry.voice_from in seen:
        raise ConfigurationError(f"agent voice inheritance loops through {agent_id!r}")
    return _resolve_voice(entry.voice_from, raw, (*seen, agent_id))


def _parse(data: bytes, source: str) -> AgentCatalog:
    """Parse and validate a catalog; every problem is reported with ``source`` in front."""
    try:
        return _validated(data, source)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{source}: {exc}") from exc


def _validated(data: bytes, source: str) -> AgentCatalog:
    try:
        parsed = msgspec.convert(tomllib.loads(data.decode()), _CatalogFile)
    except (tomllib.TOMLDecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"invalid agents file: {exc}") from exc
    if not parsed.agents:
        raise ConfigurationError("the agents file defines no agents")
    agents: dict[str, Agent] = {}
    for agent_id, entry in parsed.agents.items():
        voice = _resolve_voice(agent_id, parsed.agents, ())
        if voice not in VOICES:
            raise ConfigurationError(
                f"agent {agent_id!r} uses unknown voice {voice!r}; choose one of "
                + ", ".join(sorted(VOICES))
            )
        if not entry.instructions.strip():
            raise ConfigurationError(f"agent {agent_id!r} has empty instructions")
        agents[agent_id.lower()] = Agent(
            id=agent_id.lower(),
            name=entry.name,
            voice=voice,
            style=entry.style,
            instructions=" ".join(entry.instructions.split()),
            transcription=entry.transcription or parsed.defaults.transcription,
            turn_detection=entry.turn_detection or parsed.defaults.turn_detection,
        )
    return AgentCatalog(agents, source=source)


def load_catalog(path: str | None = None) -> AgentCatalog:
    """Load the catalog from ``path``, or the one shipped with the package."""
    if path is None:
        data = resources.files("engram_voice.agents").joinpath("agents.toml").read_bytes()
        return _parse(data, "built-in agents.toml")
    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"AGENTS_FILE={path} cannot be read: {exc.strerror}") from exc
    return _parse(data, f"AGENTS_FILE={file}")
