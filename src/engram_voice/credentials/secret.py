"""A wrapper that keeps secret strings out of reprs, logs and error messages."""

from __future__ import annotations

from typing import Final

__all__ = ["Secret"]

_MASK: Final = "Secret('**********')"


class Secret:
    """Holds a secret string; printing or formatting it never shows the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret value, for the one place that must send it."""
        return self._value

    def __repr__(self) -> str:
        return _MASK

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return _MASK

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)
