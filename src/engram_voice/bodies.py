"""The one way every route reads a JSON request body.

A :class:`BodyDecoder` turns raw bytes into a strict msgspec ``Struct`` and maps each way
a body can be wrong to the one error mapping: over the byte limit is ``413``; not UTF-8,
not JSON (``NaN``, truncated, trailing bytes, a lone surrogate escape), nested too deeply
or of the wrong shape is ``400 validation_failed`` with ``errors: [{field, message}]``
naming the field (``body`` when the body as a whole is at fault). Routes read
``request.body()`` and call :meth:`BodyDecoder.decode`; none uses Litestar's body parsing,
so every route refuses the same inputs in the same words.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import msgspec

from engram_voice.errors import (
    PayloadTooLargeError,
    ValidationError,
    msgspec_field,
    msgspec_reason,
)

__all__ = ["BodyDecoder"]

T = TypeVar("T", bound=msgspec.Struct)


def _body_error(message: str) -> ValidationError:
    return ValidationError(
        f"Invalid request: body: {message}",
        extra={"errors": [{"field": "body", "message": message}]},
    )


class BodyDecoder(Generic[T]):
    """Decode request bodies of one ``struct`` type with the service's limits and errors.

    ``length_limits_are_413`` decides whether a field over its declared maximum length
    (a list too long, a text too long) answers ``413`` (enrich: the limits are sizes) or
    ``400`` (mint: an over-long id is just malformed). ``check`` runs on the raw body and
    the decoded value for a rule a type cannot express cheaply; it raises an ``AppError``.
    """

    def __init__(
        self,
        struct: type[T],
        *,
        max_bytes: int,
        length_limits_are_413: bool = True,
        check: Callable[[bytes, T], None] | None = None,
    ) -> None:
        self._decoder = msgspec.json.Decoder(struct)
        self.max_bytes = max_bytes
        self._length_413 = length_limits_are_413
        self._check = check

    def decode(self, body: bytes) -> T:
        """Return the decoded body, or raise the 400/413 ``AppError`` that names the field."""
        if len(body) > self.max_bytes:
            raise PayloadTooLargeError(
                f"the body exceeds {self.max_bytes} bytes",
                extra={"errors": [{"field": "body", "message": f"over {self.max_bytes} bytes"}]},
            )
        if not body.isascii():  # the ASCII fast path costs nothing; the rest is checked once
            try:
                body.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _body_error(f"not valid UTF-8 (byte {exc.start})") from None
        try:
            decoded = self._decoder.decode(body)
        except msgspec.ValidationError as exc:
            raise self._field_error(str(exc)) from None
        except msgspec.DecodeError as exc:
            reason = str(exc).removeprefix("JSON is malformed: ")
            raise _body_error(f"not valid JSON: {reason}") from None
        except RecursionError:  # msgspec guards its own depth with the interpreter's limit
            raise _body_error("nested too deeply") from None
        if self._check is not None:
            self._check(body, decoded)
        return decoded

    def _field_error(self, message: str) -> ValidationError | PayloadTooLargeError:
        field = msgspec_field(message) or "body"
        reason = msgspec_reason(message)
        errors = [{"field": field, "message": reason}]
        if self._length_413 and "length <=" in message:
            return PayloadTooLargeError(
                f"{field} exceeds its limit: {reason}", extra={"errors": errors}
            )
        return ValidationError(f"Invalid request: {field}: {reason}", extra={"errors": errors})
