"""Bloomreach catalog items and their properties, per catalog, and the per-item judgement of
bulk update and bulk partial update. No I/O.

Played from the Bloomreach Engagement reference ("Bulk update catalog items": ``PUT
.../catalogs/{catalog_id}/items``, "Bulk partial update catalog items": ``POST
.../items/partial-update``) and the bodies RudderStack's Bloomreach catalog destination sends
(``rudderlabs/rudder-transformer``, ``src/cdk/v2/destinations/bloomreach_catalog/``):
``[{"item_id": "...", "properties": {...}}]``, plus ``"upsert"`` for the partial update.
- bulk update creates the item or replaces it whole: properties not given are gone;
- partial update merges the given properties into the item; an item that does not exist
  fails per item unless ``upsert`` is true (then it is created). The error text is not
  documented: ``{"_global": ["Item does not exist"]}`` here;
- a property the catalog does not define fails that item. The reference pages print
  ``"errors": {"properties": {Fields ['device_id'] are not properly defined.}}`` (not valid
  JSON; booleans as "False"): played as ``{"properties": ["Fields ['device_id'] are not
  properly defined."]}``, the names as a Python list. Which fields a catalog defines is
  configurable (``set_fields``); by default any property is accepted;
- a property key that is empty or holds NUL, "." or "$" is a "catalog schema validation
  error" (the docs give no text): ``{"properties": ["Invalid property name '...'"]}``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

MALFORMED = "Malformed item id. Item id should be a string"
SLASH = "Malformed item id. Item id should not contain '/'"
DOES_NOT_EXIST = "Item does not exist"
NOT_AN_OBJECT = "Properties should be an object"
NOT_A_BOOLEAN = "Upsert should be a boolean"


@dataclass(frozen=True, slots=True)
class ItemAnswer:
    success: bool
    error: str | None = None
    field: str = "_global"  # the key of ``errors`` the message is listed under


OK = ItemAnswer(True)


def id_answer(element: object, errors: dict[str, str]) -> ItemAnswer | None:
    """The refusal of an element's ``item_id`` (malformed, or a scripted error), else None."""
    item_id = element.get("item_id") if isinstance(element, dict) else None
    if not isinstance(item_id, str) or not item_id:
        return ItemAnswer(False, MALFORMED)
    if "/" in item_id:
        return ItemAnswer(False, SLASH)
    message = errors.get(item_id)
    return None if message is None else ItemAnswer(False, message)


def not_defined(names: list[str]) -> ItemAnswer:
    return ItemAnswer(False, f"Fields {names!r} are not properly defined.", "properties")


def bad_key(properties: dict[str, Any]) -> ItemAnswer | None:
    for key in properties:
        if not key or any(char in key for char in "\0.$"):
            return ItemAnswer(False, f"Invalid property name {key!r}", "properties")
    return None


class CatalogItems:
    def __init__(self) -> None:
        self._items: dict[str, dict[str, dict[str, Any]]] = {}
        self._fields: dict[str, set[str]] = {}

    def seed(self, catalog_id: str, items: dict[str, dict[str, Any]]) -> None:
        """These items exist with exactly these properties."""
        catalog = self._items.setdefault(catalog_id, {})
        for item_id, properties in items.items():
            catalog[item_id] = dict(properties)

    def set_fields(self, catalog_id: str, fields: Iterable[str] | None) -> None:
        """The properties the catalog defines; None: any property is accepted (the default)."""
        if fields is None:
            self._fields.pop(catalog_id, None)
        else:
            self._fields[catalog_id] = set(fields)

    def items(self, catalog_id: str) -> dict[str, dict[str, Any]]:
        """A copy of the catalog's items and their properties."""
        return {key: dict(value) for key, value in self._items.get(catalog_id, {}).items()}

    def remove(self, catalog_id: str, item_id: str) -> None:
        self._items.get(catalog_id, {}).pop(item_id, None)

    def upsert(
        self, catalog_id: str, elements: list[object], errors: dict[str, str]
    ) -> list[ItemAnswer]:
        return [self._upsert_one(catalog_id, element, errors) for element in elements]

    def partial_update(
        self, catalog_id: str, elements: list[object], errors: dict[str, str]
    ) -> list[ItemAnswer]:
        return [self._partial_one(catalog_id, element, errors) for element in elements]

    def _upsert_one(self, catalog_id: str, element: object, errors: dict[str, str]) -> ItemAnswer:
        refused = id_answer(element, errors) or self._properties_answer(catalog_id, element)
        if refused is not None:
            return refused
        assert isinstance(element, dict)  # id_answer refused any other shape
        self._items.setdefault(catalog_id, {})[element["item_id"]] = dict(element["properties"])
        return OK

    def _partial_one(self, catalog_id: str, element: object, errors: dict[str, str]) -> ItemAnswer:
        refused = id_answer(element, errors) or self._properties_answer(catalog_id, element)
        if refused is not None:
            return refused
        assert isinstance(element, dict)
        upsert = element.get("upsert", False)
        if not isinstance(upsert, bool):
            return ItemAnswer(False, NOT_A_BOOLEAN, "upsert")
        catalog = self._items.setdefault(catalog_id, {})
        current = catalog.get(element["item_id"])
        if current is None and not upsert:
            return ItemAnswer(False, DOES_NOT_EXIST)
        catalog[element["item_id"]] = {**(current or {}), **element["properties"]}
        return OK

    def _properties_answer(self, catalog_id: str, element: object) -> ItemAnswer | None:
        properties = element.get("properties") if isinstance(element, dict) else None
        if not isinstance(properties, dict):
            return ItemAnswer(False, NOT_AN_OBJECT, "properties")
        fields = self._fields.get(catalog_id)
        unknown = [name for name in properties if fields is not None and name not in fields]
        return not_defined(unknown) if unknown else bad_key(properties)

    def reset(self) -> None:
        self._items.clear()
        self._fields.clear()
