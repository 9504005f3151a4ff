"""Typed reading of configuration from a string mapping, collecting every problem.

Feature packages build their settings structs with an :class:`EnvReader`; after all
groups are read, :meth:`EnvReader.raise_if_invalid` stops start-up with one message
that lists every bad variable at once.
"""

from __future__ import annotations

from collections.abc import Mapping

from engram_voice.errors import ConfigurationError

__all__ = ["EnvReader"]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


class EnvReader:
    """Reads typed values from an environment-like mapping and records problems."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        self.problems: list[str] = []

    def raw(self, name: str) -> str | None:
        """Return the stripped value of ``name``, or None when unset or blank."""
        value = self._env.get(name)
        if value is None or not value.strip():
            return None
        return value.strip()

    def text(self, name: str, default: str) -> str:
        """Return a string setting or its default."""
        return self.raw(name) or default

    def optional(self, name: str) -> str | None:
        """Return a string setting that may be absent."""
        return self.raw(name)

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        """Return a setting that must be one of ``choices`` (case-insensitive)."""
        value = (self.raw(name) or default).lower()
        if value not in choices:
            self.problems.append(f"{name}={value!r} must be one of {', '.join(choices)}")
            return default
        return value

    def integer(self, name: str, default: int, *, minimum: int, maximum: int) -> int:
        """Return an integer setting within ``[minimum, maximum]``."""
        text = self.raw(name)
        if text is None:
            return default
        try:
            value = int(text)
        except ValueError:
            self.problems.append(f"{name}={text!r} is not an integer")
            return default
        if not minimum <= value <= maximum:
            self.problems.append(f"{name}={value} must be between {minimum} and {maximum}")
            return default
        return value

    def number(self, name: str, default: float, *, minimum: float, maximum: float) -> float:
        """Return a number setting within ``[minimum, maximum]``."""
        text = self.raw(name)
        if text is None:
            return default
        try:
            value = float(text)
        except ValueError:
            self.problems.append(f"{name}={text!r} is not a number")
            return default
        if not minimum <= value <= maximum:
            self.problems.append(f"{name}={value} must be between {minimum} and {maximum}")
            return default
        return value

    def flag(self, name: str, *, default: bool) -> bool:
        """Return a boolean setting (1/true/yes/on or 0/false/no/off)."""
        text = self.raw(name)
        if text is None:
            return default
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered not in _FALSE:
            self.problems.append(f"{name}={text!r} is not a boolean (true/false)")
        return False

    def items(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        """Return a comma-separated list setting with blanks removed."""
        text = self.raw(name)
        if text is None:
            return default
        return tuple(part.strip() for part in text.split(",") if part.strip())

    def require(self, name: str, why: str) -> str:
        """Return a setting that must be present, recording ``why`` when it is not."""
        value = self.raw(name)
        if value is None:
            self.problems.append(f"{name} is required {why}")
            return ""
        return value

    def fail(self, message: str) -> None:
        """Record a problem that involves several settings."""
        self.problems.append(message)

    def raise_if_invalid(self) -> None:
        """Stop start-up with one message listing every configuration problem."""
        if self.problems:
            listing = "\n  - ".join(self.problems)
            raise ConfigurationError(f"invalid configuration:\n  - {listing}")
