"""Bloomreach catalog state: accepted deletions and scripted per-item errors. No I/O."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

MALFORMED = "Malformed item id. Item id should be a string"
SLASH = "Malformed item id. Item id should not contain '/'"


@dataclass(frozen=True, slots=True)
class ItemAnswer:
    success: bool
    error: str | None = None


class BloomState:
    def __init__(self) -> None:
        self._errors: dict[str, dict[str, str]] = {}
        self._deleted: dict[str, list[str]] = {}

    def set_item_error(self, catalog_id: str, item_ids: Iterable[str], message: str) -> None:
        """Deleting these items of this catalog answers success: false with ``message``."""
        errors = self._errors.setdefault(catalog_id, {})
        for item_id in item_ids:
            errors[item_id] = message

    def deleted(self, catalog_id: str) -> list[str]:
        """Item ids accepted for deletion from this catalog, in order of acceptance."""
        return list(self._deleted.get(catalog_id, ()))

    def delete(self, catalog_id: str, elements: list[object]) -> list[ItemAnswer]:
        errors = self._errors.get(catalog_id, {})
        deleted = self._deleted.setdefault(catalog_id, [])
        answers = []
        for element in elements:
            answer = _judge(element, errors)
            if answer.success and isinstance(element, dict):
                deleted.append(element["item_id"])
            answers.append(answer)
        return answers

    def reset(self) -> None:
        self._errors.clear()
        self._deleted.clear()


def _judge(element: object, errors: dict[str, str]) -> ItemAnswer:
    item_id = element.get("item_id") if isinstance(element, dict) else None
    if not isinstance(item_id, str) or not item_id:
        return ItemAnswer(False, MALFORMED)
    if "/" in item_id:
        return ItemAnswer(False, SLASH)
    message = errors.get(item_id)
    return ItemAnswer(message is None, message)
