"""The Voice Live `session` of `rtc.call.sdp.create` uses the contract's field names exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engram_voice.agents import load_catalog
from engram_voice.agents.voicelive import TURN_DETECTION_FIELDS
from engram_voice.errors import UpstreamUnavailableError
from engram_voice.realtime.session_config import client_secret_request
from engram_voice.realtime.voicelive_session import voicelive_session

# contracts/voice-live-webrtc.md §3: the session fields, voice objects and option shapes.
SESSION_FIELDS = {
    "modalities",
    "instructions",
    "voice",
    "turn_detection",
    "input_audio_transcription",
    "input_audio_noise_reduction",
    "input_audio_echo_cancellation",
}
VOICE_FIELDS = {
    "azure-standard": {"type", "name", "temperature"},
    "openai": {"type", "name"},
}
VAD_FIELDS = {
    "type",
    "threshold",
    "prefix_padding_ms",
    "silence_duration_ms",
    "speech_duration_ms",
    "remove_filler_words",
    "languages",
    "create_response",
    "interrupt_response",
    "auto_truncate",
    "eagerness",
    "end_of_utterance_detection",
}
VAD_TYPES = {"server_vad", "semantic_vad", "azure_semantic_vad", "azure_semantic_vad_multilingual"}
TRANSCRIPTION_FIELDS = {"model", "language", "prompt", "phrase_list"}
NOISE_TYPES = {"azure_deep_noise_suppression", "near_field", "far_field"}


def assert_contract_shape(session: dict[str, Any]) -> None:
    """Fail unless every key and enum value of ``session`` is one the contract names."""
    assert set(session) <= SESSION_FIELDS
    assert {"modalities", "instructions", "voice"} <= set(session)
    assert set(session["modalities"]) == {"text", "audio"}  # audio alone is refused
    voice = session["voice"]
    assert set(voice) <= VOICE_FIELDS[voice["type"]]
    assert isinstance(voice["name"], str)
    assert voice["name"]
    if "turn_detection" in session:
        detection = session["turn_detection"]
        assert detection["type"] in VAD_TYPES
        assert set(detection) <= VAD_FIELDS
    if "input_audio_transcription" in session:
        assert set(session["input_audio_transcription"]) <= TRANSCRIPTION_FIELDS
    if "input_audio_noise_reduction" in session:
        assert session["input_audio_noise_reduction"]["type"] in NOISE_TYPES
    if "input_audio_echo_cancellation" in session:
        assert session["input_audio_echo_cancellation"] == {"type": "server_echo_cancellation"}


@pytest.mark.parametrize(
    ("agent_id", "voice"),
    [
        ("elena", "en-US-Ava:DragonHDLatestNeural"),
        ("marcus", "en-US-GuyNeural"),
        ("sage", "en-US-Ava:DragonHDLatestNeural"),
    ],
)
def test_shipped_agents_build_the_contracts_session_with_their_voice(
    agent_id: str, voice: str
) -> None:
    """Each shipped agent's session carries its azure-standard voice and the Voice Live options."""
    agent = load_catalog(default_upstream="voice-live").get(agent_id)
    session = voicelive_session(agent, instructions="Be brief.")
    assert_contract_shape(session)
    assert session == {
        "modalities": ["text", "audio"],
        "instructions": "Be brief.",
        "voice": {"type": "azure-standard", "name": voice},
        "turn_detection": {
            "type": "azure_semantic_vad",
            "threshold": 0.3,
            "prefix_padding_ms": 300,
            "silence_duration_ms": 500,
            "remove_filler_words": False,
            "create_response": True,
            "interrupt_response": True,
        },
        "input_audio_transcription": {"model": "azure-speech", "language": "en-US"},
        "input_audio_noise_reduction": {"type": "azure_deep_noise_suppression"},
        "input_audio_echo_cancellation": {"type": "server_echo_cancellation"},
    }


def test_instructions_default_to_the_agents_own() -> None:
    """Without an instructions override the catalog's instructions are sent."""
    agent = load_catalog(default_upstream="voice-live").get("elena")
    assert voicelive_session(agent)["instructions"] == agent.instructions


@pytest.mark.parametrize("vad_type", sorted(TURN_DETECTION_FIELDS))
def test_every_turn_detection_type_with_all_its_fields_keeps_the_contract_names(
    tmp_path: Path, vad_type: str
) -> None:
    """Each VAD type, with every field it takes, renders only names §3 lists."""
    values: dict[str, str] = {
        "threshold": "0.4",
        "prefix_padding_ms": "200",
        "silence_duration_ms": "400",
        "speech_duration_ms": "80",
        "remove_filler_words": "true",
        "languages": '["en", "de"]',
        "eagerness": '"high"',
        "end_of_utterance_detection": '{model="semantic_detection_v1", timeout_ms=1000}',
        "auto_truncate": "true",
        "create_response": "true",
        "interrupt_response": "false",
    }
    lines = "".join(f"{k}={values[k]}\n" for k in sorted(TURN_DETECTION_FIELDS[vad_type]))
    path = tmp_path / "agents.toml"
    path.write_text(
        '[agents.a]\nname="A"\ninstructions="x"\n'
        '[agents.a.voice_live]\nvoice={type="azure-standard", name="en-US-AvaNeural", '
        "temperature=0.7}\n"
        f'[agents.a.voice_live.turn_detection]\ntype="{vad_type}"\n{lines}'
        '[agents.a.voice_live.input_audio_noise_reduction]\ntype="near_field"\n'
    )
    agent = load_catalog(str(path), default_upstream="voice-live").get("a")
    session = voicelive_session(agent)
    assert_contract_shape(session)
    assert set(session["turn_detection"]) == {"type", *TURN_DETECTION_FIELDS[vad_type]}
    expected_voice = {"type": "azure-standard", "name": "en-US-AvaNeural", "temperature": 0.7}
    assert session["voice"] == expected_voice


def test_azure_openai_minting_keeps_the_openai_voice_of_a_voice_live_agent() -> None:
    """client_secrets carries marin/cedar even when the agent's calls go to Voice Live."""
    catalog = load_catalog(default_upstream="voice-live")
    for agent_id, voice in (("elena", "marin"), ("marcus", "cedar"), ("sage", "marin")):
        body = client_secret_request(catalog.get(agent_id), deployment="d", ttl_seconds=60)
        assert body["session"]["audio"]["output"]["voice"] == voice


def test_minting_for_an_agent_without_an_azure_openai_voice_is_a_clean_upstream_error(
    tmp_path: Path,
) -> None:
    """A Voice-Live-only agent asked for through client_secrets is a 502 problem, not a crash."""
    path = tmp_path / "agents.toml"
    path.write_text(
        '[agents.a]\nname="A"\ninstructions="x"\n'
        '[agents.a.voice_live]\nvoice={type="azure-standard", name="en-US-AvaNeural"}\n'
    )
    agent = load_catalog(str(path), default_upstream="voice-live").get("a")
    with pytest.raises(UpstreamUnavailableError, match="POST /realtime/calls"):
        client_secret_request(agent, deployment="d", ttl_seconds=60)
