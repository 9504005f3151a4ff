"""The agent catalog's upstreams, voices per upstream and Voice Live session options."""

from __future__ import annotations

from pathlib import Path

import pytest

from engram_voice.agents import load_catalog
from engram_voice.agents.voicelive import VoiceLiveVoice
from engram_voice.errors import ConfigurationError

AVA = "en-US-Ava:DragonHDLatestNeural"
GUY = "en-US-GuyNeural"
BOTH = frozenset({"voice-live", "azure-openai"})


@pytest.mark.parametrize(
    ("upstream", "expected"),
    [
        ("voice-live", {"elena": AVA, "marcus": GUY, "sage": AVA}),
        ("azure-openai", {"elena": "marin", "marcus": "cedar", "sage": "marin"}),
    ],
)
def test_shipped_catalog_speaks_the_v1_voices_on_voice_live_and_marin_cedar_on_azure_openai(
    upstream: str, expected: dict[str, str]
) -> None:
    """Each agent's voice name follows the default upstream; Sage inherits Elena's on both."""
    catalog = load_catalog(default_upstream=upstream, configured=BOTH)
    assert {a.id: a.voice for a in catalog.all()} == expected
    assert {a.upstream for a in catalog.all()} == {upstream}
    assert catalog.upstreams() == {upstream}


def test_shipped_voice_live_voices_are_azure_standard_objects() -> None:
    """Elena and Sage speak Ava HD, Marcus Guy, as azure-standard voice objects."""
    catalog = load_catalog(default_upstream="voice-live", configured={"voice-live"})
    assert catalog.get("elena").voices.voice_live == VoiceLiveVoice("azure-standard", AVA)
    assert catalog.get("sage").voices.voice_live == VoiceLiveVoice("azure-standard", AVA)
    assert catalog.get("marcus").voices.voice_live == VoiceLiveVoice("azure-standard", GUY)
    assert catalog.get("sage").voices.azure_openai == "marin"


def test_shipped_voice_live_options_use_azure_vad_noise_suppression_and_echo_cancellation() -> None:
    """[defaults.voice_live] reaches every agent with Voice Live's option names."""
    for agent in load_catalog(default_upstream="voice-live").all():
        options = agent.voicelive.as_session()
        assert options["turn_detection"]["type"] == "azure_semantic_vad"
        assert options["input_audio_noise_reduction"] == {"type": "azure_deep_noise_suppression"}
        assert options["input_audio_echo_cancellation"] == {"type": "server_echo_cancellation"}
        assert options["input_audio_transcription"]["model"] == "azure-speech"


def _write(tmp_path: Path, body: str) -> str:
    path = tmp_path / "agents.toml"
    path.write_text(body)
    return str(path)


def test_an_agent_pins_its_upstream_over_the_default(tmp_path: Path) -> None:
    """`upstream` in the file wins over the deployment default, per agent."""
    path = _write(
        tmp_path,
        '[agents.a]\nname="A"\ninstructions="x"\nupstream="azure-openai"\nvoice="ash"\n'
        '[agents.b]\nname="B"\ninstructions="y"\n'
        '[agents.b.voice_live]\nvoice={type="azure-standard", name="en-US-AvaNeural", '
        "temperature=0.8}\n"
        '[agents.b.voice_live.turn_detection]\ntype="semantic_vad"\neagerness="low"\n'
        '[agents.b.azure_openai]\nvoice="sage"\n',
    )
    catalog = load_catalog(path, default_upstream="voice-live", configured=BOTH)
    assert (catalog.get("a").upstream, catalog.get("a").voice) == ("azure-openai", "ash")
    b = catalog.get("b")
    assert (b.upstream, b.voice) == ("voice-live", "en-US-AvaNeural")
    assert b.voices.voice_live == VoiceLiveVoice("azure-standard", "en-US-AvaNeural", 0.8)
    assert b.voicelive.as_session() == {
        "turn_detection": {"type": "semantic_vad", "eagerness": "low"}
    }


def test_a_v1_style_catalog_with_plain_voice_names_serves_both_upstreams(tmp_path: Path) -> None:
    """`voice = "coral"` (the old format) is an OpenAI voice on Azure OpenAI and on Voice Live."""
    path = _write(tmp_path, '[agents.a]\nname="A"\ninstructions="x"\nvoice="coral"\n')
    agent = load_catalog(path, default_upstream="voice-live", configured=BOTH).get("a")
    assert agent.voice == "coral"
    assert agent.voices.voice_live == VoiceLiveVoice("openai", "coral")
    assert agent.voices.azure_openai == "coral"


def test_an_agent_overrides_one_voice_live_option_and_keeps_the_other_defaults(
    tmp_path: Path,
) -> None:
    """An agent's voice_live table replaces only the options it names."""
    path = _write(
        tmp_path,
        '[defaults.voice_live.input_audio_noise_reduction]\ntype="azure_deep_noise_suppression"\n'
        '[defaults.voice_live.turn_detection]\ntype="server_vad"\n'
        '[agents.a]\nname="A"\ninstructions="x"\nvoice="ash"\n'
        '[agents.a.voice_live.input_audio_noise_reduction]\ntype="far_field"\n',
    )
    options = load_catalog(path).get("a").voicelive.as_session()
    assert options == {
        "turn_detection": {"type": "server_vad"},
        "input_audio_noise_reduction": {"type": "far_field"},
    }


_ELENA_HD = '[agents.a.voice_live]\nvoice={type="azure-standard", name="en-US-AvaNeural"}\n'
_HEAD = '[agents.a]\nname="A"\ninstructions="x"\n'

BAD_CATALOGS = [
    pytest.param(
        _HEAD + 'upstream="azure-openai"\n' + _ELENA_HD,
        "voice-live",
        "Azure OpenAI cannot speak the azure-standard voice 'en-US-AvaNeural'",
        id="azure-standard-voice-on-azure-openai",
    ),
    pytest.param(
        _HEAD + 'voice="robot"\n', "azure-openai", "unknown voice 'robot'", id="unknown-plain"
    ),
    pytest.param(
        _HEAD + '[agents.a.voice_live]\nvoice={type="openai", name="nova"}\n',
        "voice-live",
        "unknown voice 'nova'",
        id="unknown-openai-voice-live",
    ),
    pytest.param(
        _HEAD + '[agents.a.azure_openai]\nvoice="en-US-GuyNeural"\n',
        "azure-openai",
        "azure_openai.voice uses unknown voice 'en-US-GuyNeural'",
        id="neural-name-as-azure-openai-voice",
    ),
    pytest.param(
        _HEAD + '[agents.a.voice_live]\nvoice={type="azure-standard"}\n',
        "voice-live",
        "needs a name",
        id="azure-standard-without-name",
    ),
    pytest.param(
        _HEAD + '[agents.a.voice_live]\nvoice={type="azure-standard", name=" "}\n',
        "voice-live",
        "needs a name",
        id="azure-standard-blank-name",
    ),
    *(
        pytest.param(
            _HEAD
            + "[agents.a.voice_live]\n"
            + f'voice={{type="azure-standard", name="n", temperature={t}}}\n',
            "voice-live",
            "temperature",
            id=f"temperature-{t}",
        )
        for t in ("-0.1", "1.01", "2", '"warm"', "true")
    ),
    pytest.param(
        _HEAD + '[agents.a.voice_live]\nvoice={type="azure-custom", name="x"}\n',
        "voice-live",
        "type 'azure-custom'",
        id="unsupported-voice-type",
    ),
    pytest.param(
        _HEAD + '[agents.a.voice_live]\nvoice={type="openai", name="ash", temperature=0.5}\n',
        "voice-live",
        "does not take temperature",
        id="openai-voice-with-temperature",
    ),
    pytest.param(
        _HEAD + 'upstream="gpt-live"\nvoice="ash"\n',
        "voice-live",
        "unknown upstream 'gpt-live'",
        id="unknown-upstream",
    ),
    pytest.param(
        _HEAD + 'upstream="azure-openai"\nvoice="ash"\n',
        "voice-live",
        "not configured: set AZURE_OPENAI_ENDPOINTS",
        id="upstream-not-configured",
    ),
    pytest.param(
        _HEAD + 'voice="ash"\n' + "[agents.a.voice_live.turn_detection]\ntype='vad'\n",
        "voice-live",
        "turn_detection",
        id="unknown-turn-detection",
    ),
    pytest.param(
        _HEAD
        + 'voice="ash"\n[agents.a.voice_live.turn_detection]\ntype="server_vad"\neagerness="low"\n',
        "voice-live",
        "does not take eagerness",
        id="field-of-another-vad-type",
    ),
    pytest.param(
        _HEAD
        + 'voice="ash"\n[agents.a.voice_live.turn_detection]\ntype="server_vad"\nthreshold=1.5\n',
        "voice-live",
        "threshold must be within 0..1",
        id="vad-threshold",
    ),
    pytest.param(
        _HEAD + 'voice="ash"\n[agents.a.voice_live.input_audio_noise_reduction]\ntype="loud"\n',
        "voice-live",
        "input_audio_noise_reduction",
        id="noise-reduction-type",
    ),
    pytest.param(
        _HEAD + 'voice="ash"\n[agents.a.voice_live.input_audio_echo_cancellation]\ntype="x"\n',
        "voice-live",
        "input_audio_echo_cancellation",
        id="echo-cancellation-type",
    ),
    pytest.param(
        _HEAD + 'voice="ash"\n[agents.a.voice_live.input_audio_transcription]\nmodel="w2"\n',
        "voice-live",
        "input_audio_transcription",
        id="transcription-model",
    ),
    pytest.param(
        _HEAD + 'voice="ash"\n[agents.a.voice_live]\nvad="on"\n',
        "voice-live",
        "vad",
        id="unknown-voice-live-option",
    ),
]


@pytest.mark.parametrize(("body", "default", "message"), BAD_CATALOGS)
def test_a_catalog_whose_voices_or_options_the_upstream_cannot_take_stops_start_up(
    tmp_path: Path, body: str, default: str, message: str
) -> None:
    """Every bad voice, upstream or option is one ConfigurationError naming the file and agent."""
    configured = {"voice-live"} if "not configured" in message else BOTH
    path = _write(tmp_path, body)
    with pytest.raises(ConfigurationError) as info:
        load_catalog(path, default_upstream=default, configured=configured)
    text = str(info.value)
    assert text.startswith(f"AGENTS_FILE={path}: ")
    assert message in text
    assert "'a'" in text or "agents.a" in text


def test_a_voice_live_agent_without_an_azure_openai_voice_is_refused_when_minting_is_on(
    tmp_path: Path,
) -> None:
    """With Azure OpenAI configured every agent needs an OpenAI voice (for minting keys)."""
    path = _write(tmp_path, _HEAD + _ELENA_HD)
    assert load_catalog(path, default_upstream="voice-live", configured={"voice-live"})
    with pytest.raises(ConfigurationError, match=r"agents\.a\.azure_openai\] voice"):
        load_catalog(path, default_upstream="voice-live", configured=BOTH)


def test_inheritance_is_per_upstream(tmp_path: Path) -> None:
    """An agent's own Azure OpenAI voice combines with the Voice Live voice it inherits."""
    path = _write(
        tmp_path,
        _HEAD
        + 'voice="ash"\n'
        + _ELENA_HD
        + '[agents.b]\nname="B"\ninstructions="y"\nvoice_from="a"\n'
        + '[agents.b.azure_openai]\nvoice="verse"\n',
    )
    b = load_catalog(path, default_upstream="voice-live", configured=BOTH).get("b")
    assert b.voices.voice_live == VoiceLiveVoice("azure-standard", "en-US-AvaNeural")
    assert b.voices.azure_openai == "verse"
