"""Building blocks of the AsyncAPI document (``worker.contract``): references, AMQP
bindings, messages, the settings' default names."""

from __future__ import annotations

from typing import Any

from worker.settings import Settings

REF = "#/components/schemas/{model}"
AMQP_BINDING = "0.3.0"


def _default(field: str) -> str:
    value = Settings.model_fields[field].default
    assert isinstance(value, str)
    return value


def _ref(path: str) -> dict[str, str]:
    return {"$ref": f"#/{path}"}


def _amqp(**fields: Any) -> dict[str, Any]:
    return {"amqp": {**fields, "bindingVersion": AMQP_BINDING}}


def _amqp_channel(kind: str, **fields: Any) -> dict[str, Any]:
    return _amqp(**{"is": kind}, **fields)


def _message(name: str, title: str, payload: dict[str, Any], **more: Any) -> dict[str, Any]:
    base = {"name": name, "title": title, "contentType": "application/json", "payload": payload}
    return base | more


def _message_refs(names: tuple[str, ...]) -> dict[str, Any]:
    return {name: _ref(f"components/messages/{name}") for name in names}
