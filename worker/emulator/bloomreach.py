"""Bloomreach catalog state: items, accepted deletions and scripted per-item errors. No I/O."""

from __future__ import annotations

from collections.abc import Iterable

from worker.emulator.catalog import MALFORMED, OK, SLASH, CatalogItems, ItemAnswer, id_answer

__all__ = ["MALFORMED", "SLASH", "BloomState", "ItemAnswer"]


class BloomState:
    def __init__(self) -> None:
        self._errors: dict[str, dict[str, str]] = {}
        self._deleted: dict[str, list[str]] = {}
        self.catalog = CatalogItems()  # items and properties, written by update and upsert

    def set_item_error(self, catalog_id: str, item_ids: Iterable[str], message: str) -> None:
        """Deleting, updating or upserting these items of this catalog answers success: false
        with ``message`` (under ``errors._global``)."""
        errors = self._errors.setdefault(catalog_id, {})
        for item_id in item_ids:
            errors[item_id] = message

    def deleted(self, catalog_id: str) -> list[str]:
        """Item ids accepted for deletion from this catalog, in order of acceptance."""
        return list(self._deleted.get(catalog_id, ()))

    def delete(self, catalog_id: str, elements: list[object]) -> list[ItemAnswer]:
        """A deleted item no longer exists; a missing item still answers success (docs)."""
        errors = self._errors.get(catalog_id, {})
        deleted = self._deleted.setdefault(catalog_id, [])
        answers = []
        for element in elements:
            answer = id_answer(element, errors) or OK
            if answer.success and isinstance(element, dict):
                deleted.append(element["item_id"])
                self.catalog.remove(catalog_id, element["item_id"])
            answers.append(answer)
        return answers

    def upsert(self, catalog_id: str, elements: list[object]) -> list[ItemAnswer]:
        return self.catalog.upsert(catalog_id, elements, self._errors.get(catalog_id, {}))

    def partial_update(self, catalog_id: str, elements: list[object]) -> list[ItemAnswer]:
        return self.catalog.partial_update(catalog_id, elements, self._errors.get(catalog_id, {}))

    def reset(self) -> None:
        self._errors.clear()
        self._deleted.clear()
        self.catalog.reset()
