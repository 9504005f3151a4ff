"""Check wire data against the official ``openai`` SDK's realtime models, strictly.

The SDK's pydantic models accept unknown fields, so validation alone would let an
emulator drift by adding fields Azure never sends. These helpers validate and then
also reject every field the model does not declare (unless explicitly allowed).
"""

from __future__ import annotations

import typing
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from openai.types.realtime import ClientSecretCreateParams, RealtimeServerEvent
from pydantic import BaseModel, TypeAdapter

__all__ = [
    "SERVER_EVENT_MODELS",
    "undeclared_fields",
    "validate_client_secret_params",
    "validate_model",
    "validate_server_event",
]

M = TypeVar("M", bound=BaseModel)


def _event_models() -> dict[str, type[BaseModel]]:
    union = typing.get_args(RealtimeServerEvent)[0]
    models: dict[str, type[BaseModel]] = {}
    for model in typing.get_args(union):
        (event_type,) = typing.get_args(model.model_fields["type"].annotation)
        models[event_type] = model
    return models


SERVER_EVENT_MODELS = _event_models()
_PARAMS = TypeAdapter(ClientSecretCreateParams)


def undeclared_fields(value: Any, path: str = "$") -> Iterator[str]:
    """Yield the path of every field a validated model received but does not declare."""
    if isinstance(value, BaseModel):
        for name in value.model_extra or {}:
            yield f"{path}.{name}"
        for name in type(value).model_fields:
            yield from undeclared_fields(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from undeclared_fields(item, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from undeclared_fields(item, f"{path}.{key}")


def validate_model(model: type[M], data: Any, *, allow_extra: Iterable[str] = ()) -> M:
    """Validate ``data`` as ``model`` and fail on any field the model does not declare."""
    parsed = model.model_validate(data)
    extra = sorted(set(undeclared_fields(parsed)) - {f"$.{name}" for name in allow_extra})
    assert not extra, f"{model.__name__} does not declare {extra}"
    return parsed


def validate_server_event(event: dict[str, Any], *, allow_extra: Iterable[str] = ()) -> BaseModel:
    """Validate one data-channel event against the SDK model for its ``type``."""
    model = SERVER_EVENT_MODELS.get(event.get("type", ""))
    assert model is not None, f"the SDK knows no server event {event.get('type')!r}"
    return validate_model(model, event, allow_extra=allow_extra)


def validate_client_secret_params(body: dict[str, Any]) -> None:
    """Fail unless ``body`` is a ``ClientSecretCreateParams`` with no undeclared keys."""
    assert _PARAMS.validate_python(body) == body, "body has keys the SDK does not declare"
