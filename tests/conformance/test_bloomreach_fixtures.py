"""Bloomreach catalogs: the production integration's request forms replayed against the emulator.

No official client for the Engagement catalog endpoints exists on the package registries; the
closest thing is RudderStack's Bloomreach catalog destination. ``bloomreach/*.json`` holds its
request forms (method, path, headers with Basic auth, bodies for bulk update, partial update
and bulk-delete), each naming the file of ``rudderlabs/rudder-transformer`` (and the commit)
it is taken from. Each is sent as that integration sends it (its header values, its
``JSON.stringify`` body) and the answer is checked against the reference pages' shape: 200
with a list holding one element per request element, in order, ``success`` and ``queued`` as
booleans or the strings "True"/"False" the docs also print, and ``errors`` (a field name ->
list of messages) on the elements that failed; then the catalog's state is read back.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from worker.emulator import Emulator, EmulatorConfig

FIXTURES = sorted((Path(__file__).resolve().parent / "bloomreach").glob("*.json"))
CATALOG = "test-catalog-id"
BOOLEAN_FORMS = {True: (True, "True"), False: (False, "False")}


def load(path: Path) -> dict[str, Any]:
    fixture: dict[str, Any] = json.loads(path.read_text())
    return fixture


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorConfig()) as emulator:
        yield emulator


def materialize(fixture: dict[str, Any], config: EmulatorConfig, base_url: str) -> httpx.Request:
    """The fixture's request with the emulator's project and credentials filled in the way
    the integration builds them (``base64Convertor(`${apiKey}:${apiSecret}`)``)."""
    request = fixture["request"]
    path = request["path"].format(projectToken=config.bloomreach_project_id, catalogID=CATALOG)
    pair = f"{config.bloomreach_key_id}:{config.bloomreach_secret}".encode()
    basic = "Basic " + base64.b64encode(pair).decode()
    headers = {
        name: basic if value == "Basic {base64(apiKey:apiSecret)}" else value
        for name, value in request["headers"].items()
    }
    body = json.dumps(request["body"]).encode()  # JSON.stringify: compact, as sent
    return httpx.Request(request["method"], base_url + path, headers=headers, content=body)


def check_shape(answers: Any, sent: int) -> None:
    """The reference pages' answer: one element per request element."""
    assert isinstance(answers, list) and len(answers) == sent, answers
    for element in answers:
        assert set(element) <= {"success", "queued", "errors"}, element
        success = element["success"]
        assert success in (True, False, "True", "False"), element
        ok = success in BOOLEAN_FORMS[True]
        assert element["queued"] in BOOLEAN_FORMS[ok], element
        if not ok:
            errors = element["errors"]
            assert isinstance(errors, dict) and errors, element
            assert all(isinstance(m, str) for ms in errors.values() for m in ms), element


def lenient(element: dict[str, Any]) -> dict[str, Any]:
    """An answer element with the string booleans read as booleans (as the worker does)."""
    return {
        k: (v in ("True", True) if k in ("success", "queued") else v) for k, v in element.items()
    }


@pytest.mark.parametrize("string_booleans", [False, True], ids=["booleans", "strings"])
@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
async def test_the_integrations_request_is_answered_as_the_reference_shows(
    emu: Emulator, path: Path, string_booleans: bool
) -> None:
    """The request form replays to 200 and the documented per-item list; the catalog shows it."""
    fixture = load(path)
    assert fixture["source"]["repository"] == "rudderlabs/rudder-transformer"
    emu.config.bloomreach_string_booleans = string_booleans
    seed = fixture.get("seed", {})
    if "fields" in seed:
        emu.bloomreach.catalog.set_fields(CATALOG, seed["fields"])
    emu.bloomreach.catalog.seed(CATALOG, {i["item_id"]: i["properties"] for i in seed["items"]})
    async with httpx.AsyncClient() as client:
        response = await client.send(materialize(fixture, emu.config, emu.base_url))
    expected = fixture["expected"]
    assert response.status_code == expected["status"], response.text
    assert response.headers["Content-Type"].startswith("application/json")
    answers = response.json()
    check_shape(answers, len(fixture["request"]["body"]))
    if string_booleans:
        assert all(a["success"] in ("True", "False") for a in answers)
    assert [lenient(a) for a in answers] == expected["answers"]
    assert emu.bloomreach.catalog.items(CATALOG) == expected["items_after"]


async def test_every_form_of_the_integration_has_a_fixture() -> None:
    """Bulk update (PUT), partial update (POST) and bulk-delete (DELETE with id strings)."""
    forms = {
        (load(p)["request"]["method"], load(p)["request"]["path"].rsplit("/", 1)[1])
        for p in FIXTURES
    }
    assert {("PUT", "items"), ("POST", "partial-update"), ("DELETE", "bulk-delete")} <= forms


async def test_a_wrong_basic_credential_is_refused_whole(emu: Emulator) -> None:
    """The integration's Basic header with another secret: 401, no per-item list."""
    wrong = emu.config.model_copy(update={"bloomreach_secret": "x"})
    request = materialize(load(FIXTURES[0]), wrong, emu.base_url)
    async with httpx.AsyncClient() as client:
        response = await client.send(request)
    assert response.status_code == 401
    assert not isinstance(response.json(), list)
