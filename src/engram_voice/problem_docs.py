"""OpenAPI declarations that Litestar cannot infer, so the schema matches what is sent.

Routes list the statuses they can answer with; each becomes a ``ResponseSpec`` whose body
is :class:`ProblemDetails` (the shape ``errors.problem_response`` builds) in
``application/problem+json``. Routes that read their raw body declare its type with
:func:`raw_body_operation`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema

from engram_voice.errors import PROBLEM_JSON

__all__ = [
    "FieldError",
    "ProblemDetails",
    "json_body_schema",
    "problem_responses",
    "raw_body_operation",
]

_MEANINGS: dict[int, str] = {
    400: "Invalid request (problem+json; `errors` names each field)",
    401: "Missing, expired or forged credential (problem+json, `WWW-Authenticate: Bearer`)",
    403: "Authenticated but not allowed (problem+json)",
    404: "Unknown resource, e.g. an unknown agent (problem+json)",
    413: "Body or a field over its limit (problem+json)",
    429: "Rate limited (problem+json, `Retry-After` in seconds)",
    502: "Azure refused the service's credential (problem+json, no upstream body)",
    503: "Unavailable now: Azure throttling/failing or storage down (problem+json, `Retry-After`)",
    504: "Azure or the service's credential did not answer in time (problem+json)",
}


class FieldError(msgspec.Struct, frozen=True):
    """One invalid field of a 400/413 answer."""

    field: str | None
    message: str | None


class ProblemDetails(msgspec.Struct, frozen=True):
    """An RFC 9457 problem document with the stable machine-readable ``code``."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    instance: str | None = None
    errors: list[FieldError] | None = None


def problem_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """Return the OpenAPI response declarations for ``statuses`` as problem+json bodies."""
    return {
        status: ResponseSpec(
            data_container=ProblemDetails,
            description=_MEANINGS[status],
            media_type=PROBLEM_JSON,
            generate_examples=False,
        )
        for status in statuses
    }


def _camel_to_snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


_SCHEMA_FIELDS = frozenset(f.name for f in dataclasses.fields(Schema))
_RENAMED = {"anyOf": "any_of", "oneOf": "one_of", "allOf": "all_of"}


def _convert(name: str, raw: Any, defs: dict[str, Any]) -> Any:
    """Convert one keyword's value: nested schemas recursively, ``type`` to its enum."""
    if name == "type":
        return OpenAPIType(raw)
    if name == "properties":
        return {k: _to_schema(v, defs) for k, v in raw.items()}
    if name == "items":
        return _to_schema(raw, defs)
    if name in {"any_of", "one_of", "all_of"}:
        return [_to_schema(v, defs) for v in raw]
    return raw


def _to_schema(node: dict[str, Any], defs: dict[str, Any]) -> Schema:
    """Convert one msgspec JSON Schema node (refs inlined) into Litestar's ``Schema``."""
    if "$ref" in node:
        return _to_schema(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
    values: dict[str, Any] = {}
    for key, raw in node.items():
        name = _RENAMED.get(key, _camel_to_snake(key))
        if name in _SCHEMA_FIELDS:
            values[name] = _convert(name, raw, defs)
    return Schema(**values)


def json_body_schema(struct: type[msgspec.Struct]) -> Schema:
    """Return the OpenAPI schema of a request body typed by ``struct`` (limits included)."""
    document = msgspec.json.schema(struct)
    return _to_schema(document, document.get("$defs", {}))


def raw_body_operation(struct: type[msgspec.Struct], *media_types: str) -> type[Operation]:
    """Return an Operation class declaring ``struct`` as the body of a raw-body route.

    Routes that read ``request.body()`` themselves (for speed, or to accept ``text/plain``
    from sendBeacon) have no ``data`` parameter, so Litestar cannot see their body type.
    """
    schema = json_body_schema(struct)

    @dataclasses.dataclass
    class RawBodyOperation(Operation):
        def __post_init__(self) -> None:
            self.request_body = RequestBody(
                content={media: OpenAPIMediaType(schema=schema) for media in media_types},
                required=True,
                description=schema.description,
            )

    return RawBodyOperation
