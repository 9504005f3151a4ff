"""The deterministic conversation the emulator plays: who the agent is and what is said.

The agent's display name comes from the session instructions the key was minted with
("You are Elena, ..."), so a transcript shows which agent configuration reached Azure.
"""

from __future__ import annotations

import re

__all__ = ["DEFAULT_AGENT_NAME", "agent_name", "assistant_line", "greeting_line", "user_line"]

DEFAULT_AGENT_NAME = "Assistant"
_NAME = re.compile(r"\b(?:you are|you're|your name is|i am)\s+([A-Z][\w'-]{0,39})", re.IGNORECASE)
_NOT_NAMES = frozenset({"a", "an", "the", "one", "my", "our", "your", "helpful", "friendly"})

_USER_LINES = (
    "Hi {agent}, can you hear me?",
    "I had a long day at work today.",
    "My sister Anna is visiting next weekend.",
    "We want to go hiking if the weather holds.",
    "Do you remember what I told you about my sister?",
    "I should also book a table for Saturday evening.",
    "Thanks, that helps me plan the weekend.",
    "Let's talk again tomorrow, {agent}.",
)
_ASSISTANT_LINES = (
    "Hi, this is {agent}. I can hear you clearly.",
    "That sounds tiring. What made today so long?",
    "How lovely that Anna is coming. How long will she stay?",
    "Hiking sounds great. I hope the weather holds for you both.",
    "Yes, you said Anna is visiting next weekend.",
    "Good idea. Would you like a reminder on Friday?",
    "I'm glad it helps. Enjoy the time with Anna.",
    "Talk to you tomorrow. This was {agent}, take care.",
)
_GREETING = "Hello, I'm {agent}. What would you like to talk about?"


def agent_name(instructions: str | None) -> str:
    """Return the agent's name from instructions like "You are Elena, ...", else a default."""
    for match in _NAME.finditer(instructions or ""):
        name = match.group(1)
        if name.lower() not in _NOT_NAMES and name[0].isupper():
            return name
    return DEFAULT_AGENT_NAME


def _line(lines: tuple[str, ...], turn: int, agent: str) -> str:
    text = lines[(turn - 1) % len(lines)].format(agent=agent)
    rounds = (turn - 1) // len(lines)
    return text if rounds == 0 else f"{text} (again, round {rounds + 1})"


def user_line(turn: int, agent: str) -> str:
    """Return what the user says in ``turn`` (1-based)."""
    return _line(_USER_LINES, turn, agent)


def assistant_line(turn: int, agent: str) -> str:
    """Return the agent's answer in ``turn`` (1-based); it names the agent on the first turn."""
    return _line(_ASSISTANT_LINES, turn, agent)


def greeting_line(agent: str) -> str:
    """Return what the agent says for a response the client requested itself."""
    return _GREETING.format(agent=agent)
