import pytest

from engram_voice.emulator.script import (
    DEFAULT_AGENT_NAME,
    agent_name,
    assistant_line,
    greeting_line,
    user_line,
)


@pytest.mark.parametrize(
    ("instructions", "name"),
    [
        ("You are Elena, one of Engram's agents.", "Elena"),
        ("\nYou are Sage, one of Engram's agents and a storyteller.", "Sage"),
        ("Speak calmly. Your name is Marcus.", "Marcus"),
        ("You're Ada; keep answers short.", "Ada"),
        ("You are a helpful, witty, and friendly AI.", DEFAULT_AGENT_NAME),
        ("Be brief.", DEFAULT_AGENT_NAME),
        ("", DEFAULT_AGENT_NAME),
        (None, DEFAULT_AGENT_NAME),
    ],
)
def test_the_agent_is_named_by_its_instructions(instructions, name):
    """The agent's display name comes from "You are <Name>", with a neutral fallback."""
    assert agent_name(instructions) == name


def test_lines_are_deterministic_and_name_the_agent():
    """The same turn always says the same thing, and the first exchange names the agent."""
    assert user_line(1, "Elena") == user_line(1, "Elena")
    assert "Elena" in user_line(1, "Elena")
    assert "Elena" in assistant_line(1, "Elena")
    assert "Marcus" in greeting_line("Marcus")


def test_every_turn_says_something_new():
    """Transcripts of different turns differ, also after the script wraps around."""
    users = [user_line(turn, "Elena") for turn in range(1, 25)]
    answers = [assistant_line(turn, "Elena") for turn in range(1, 25)]

    assert len(set(users)) == 24
    assert len(set(answers)) == 24
