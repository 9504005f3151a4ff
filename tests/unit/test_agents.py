from pathlib import Path

import pytest

from engram_voice.agents import VOICES, load_catalog
from engram_voice.errors import ConfigurationError, NotFoundError


def test_shipped_catalog_has_the_three_agents_with_their_voices() -> None:
    """The built-in catalog defines Elena (marin), Marcus (cedar) and Sage."""
    catalog = load_catalog()
    assert [a.id for a in catalog.all()] == ["elena", "marcus", "sage"]
    assert catalog.get("elena").voice == "marin"
    assert catalog.get("marcus").voice == "cedar"
    assert catalog.get("Elena").name == "Elena"


def test_sage_inherits_elenas_voice() -> None:
    """Sage has no voice of its own and takes Elena's."""
    catalog = load_catalog()
    assert catalog.get("sage").voice == catalog.get("elena").voice
    assert "storyteller" in catalog.get("sage").style


def test_every_agent_gets_default_transcription_and_turn_detection() -> None:
    """Agents without overrides use the catalog's default transcription and VAD settings."""
    for agent in load_catalog().all():
        assert agent.transcription.model
        assert agent.turn_detection["type"] == "server_vad"
        assert agent.instructions.startswith(f"You are {agent.name}")
        assert agent.voice in VOICES


def test_unknown_agent_is_a_404_naming_the_known_ones() -> None:
    """Asking for an agent that does not exist lists the valid ids."""
    with pytest.raises(NotFoundError, match="elena, marcus, sage"):
        load_catalog().get("bob")


def _write(tmp_path: Path, body: str) -> str:
    path = tmp_path / "agents.toml"
    path.write_text(
        '[defaults.transcription]\nmodel = "m"\n[defaults.turn_detection]\ntype = "server_vad"\n'
        + body
    )
    return str(path)


def test_operator_file_can_override_voice_inheritance(tmp_path: Path) -> None:
    """An explicit voice wins over voice_from in an operator's file."""
    path = _write(
        tmp_path,
        '[agents.a]\nname="A"\nvoice="ash"\ninstructions="x"\n'
        '[agents.b]\nname="B"\nvoice_from="a"\nvoice="coral"\ninstructions="y"\n',
    )
    assert load_catalog(path).get("b").voice == "coral"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[agents.a]\nname="A"\nvoice="robot"\ninstructions="x"\n', "unknown voice"),
        ('[agents.a]\nname="A"\nvoice_from="zz"\ninstructions="x"\n', "unknown 'zz'"),
        (
            (
                '[agents.a]\nname="A"\nvoice_from="b"\ninstructions="x"\n'
                '[agents.b]\nname="B"\nvoice_from="a"\ninstructions="y"\n'
            ),
            "loops",
        ),
        ('[agents.a]\nname="A"\nvoice="ash"\ninstructions="  "\n', "empty instructions"),
        ('[agents.a]\nname="A"\nvoice="ash"\ninstructions="x"\ncolour="red"\n', "invalid"),
    ],
)
def test_bad_agent_files_stop_start_up_with_a_clear_message(
    tmp_path: Path, body: str, message: str
) -> None:
    """Invalid voices, inheritance loops, empty instructions and unknown keys are rejected."""
    with pytest.raises(ConfigurationError, match=message):
        load_catalog(_write(tmp_path, body))


def test_missing_agents_file_is_named_in_the_error(tmp_path: Path) -> None:
    """A path that cannot be read is reported with the path."""
    with pytest.raises(ConfigurationError, match=r"nope\.toml"):
        load_catalog(str(tmp_path / "nope.toml"))


def test_the_emulator_enforces_the_same_voice_list_the_catalog_offers() -> None:
    """One voice list: the emulator accepts exactly the voices agents may be given."""
    from engram_voice.emulator import schemas  # noqa: PLC0415 - the emulator is a dev tool

    assert schemas.VOICES is VOICES
