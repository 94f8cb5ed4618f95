"""One error vocabulary (worker/errors.py): every code the worker produces is an ``ErrorCode``,
and the metrics label each of them by name (worker/registry.py ``code_label``)."""

from __future__ import annotations

import ast
from pathlib import Path

import httpx
import pytest

from worker.apis.datocms.wire import parse_error
from worker.errors import ErrorCode, from_response, from_transport
from worker.messages import Invalid, parse_request
from worker.registry import APIS, KNOWN_CODES, code_label

WORKER = Path(__file__).resolve().parents[2] / "worker"
# Where a code is the argument at this position (or the ``code`` keyword).
CODE_ARGUMENT = {"ErrorInfo": 0, "ApiError": 0, "Invalid": 1, "Rejection": 2}


def production_files() -> list[Path]:
    return [
        path
        for path in WORKER.rglob("*.py")
        if "emulator" not in path.parts and path.name != "demo.py"
    ]


def code_arguments(tree: ast.AST) -> list[ast.expr]:
    found: list[ast.expr] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
            continue
        position = CODE_ARGUMENT.get(node.func.id)
        if position is None:
            continue
        if len(node.args) > position:
            found.append(node.args[position])
        found.extend(k.value for k in node.keywords if k.arg == "code")
    return found


def test_no_production_module_writes_a_code_as_a_bare_string() -> None:
    """Codes come from ``ErrorCode`` (or from the API's answer): a string literal where an
    error, an ``Invalid`` or a ``Rejection`` takes its code would bypass the vocabulary."""
    bare = []
    for path in production_files():
        for arg in code_arguments(ast.parse(path.read_text())):
            if isinstance(arg, ast.Constant | ast.JoinedStr):
                bare.append(f"{path.relative_to(WORKER.parent)}:{arg.lineno}")
    assert bare == []


def test_the_scan_sees_the_codes_it_checks() -> None:
    """The scan above finds code arguments (it would pass vacuously otherwise)."""
    found = [
        arg for path in production_files() for arg in code_arguments(ast.parse(path.read_text()))
    ]
    assert len(found) > 20


def test_every_worker_code_is_a_metrics_label_of_its_own() -> None:
    """Each ``ErrorCode`` (``internal_error`` among them) is labelled by name, not ``other``."""
    assert {code_label(code) for code in ErrorCode} == {str(code) for code in ErrorCode}
    assert code_label(ErrorCode.INTERNAL_ERROR) == "internal_error"


def test_the_label_set_is_the_worker_codes_and_the_apis_documented_ones() -> None:
    """Nothing else is labelled by name: codes produced nowhere are gone, unbounded API
    text (Bloomreach's per-item messages, ``http_<status>``) is ``other``."""
    apis = set().union(*(spec.known_codes for spec in APIS.values()))
    assert set(KNOWN_CODES) == {str(code) for code in ErrorCode} | apis
    assert "item_error" not in KNOWN_CODES and "shutdown" not in KNOWN_CODES
    assert code_label("http_502") == "other"
    assert code_label("Item cannot be deleted") == "other"
    assert code_label("ITEM_LOCKED") == "ITEM_LOCKED"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 429])
def test_answers_without_a_code_of_their_own_get_a_worker_code(status: int) -> None:
    """An error answer whose body says nothing the API's parser reads is named by status."""
    request = httpx.Request("POST", "http://api.test/x")
    for parse in (None, parse_error):
        error = from_response(httpx.Response(status, content=b"nope", request=request), parse)
        assert error.code in set(ErrorCode), (status, parse)


def test_transport_failures_get_worker_codes() -> None:
    request = httpx.Request("GET", "http://api.test/x")
    for exc in (
        httpx.ReadTimeout("slow", request=request),
        httpx.ConnectError("refused", request=request),
        httpx.RemoteProtocolError("bad", request=request),
    ):
        assert from_transport(exc).code in set(ErrorCode)


@pytest.mark.parametrize(
    "body",
    [
        b"x" * (16 * 1024 * 1024 + 1),
        b"not json",
        b"[1]",
        b'{"operation": 1}',
        b'{"operation": "nope", "target": "main", "ids": ["a"]}',
        b'{"operation": "datocms.items.publish", "target": "nope", "ids": ["a"]}',
        b'{"operation": "datocms.items.publish", "target": "shop", "ids": ["a"]}',
        b'{"operation": "bloomreach.catalog_items.delete", "target": "shop", "ids": ["a"]}',
        b'{"operation": "datocms.items.publish", "target": "main", "catalog_id": "c", '
        b'"ids": ["a"]}',
    ],
)
def test_messages_refused_as_a_whole_get_worker_codes(body: bytes) -> None:
    parsed = parse_request(body, None, {"main": "datocms", "shop": "bloomreach"})
    assert isinstance(parsed, Invalid)
    assert parsed.code in set(ErrorCode)


def test_refused_ids_get_a_worker_code() -> None:
    body = b'{"operation": "datocms.items.publish", "target": "main", "ids": ["a", "a,b", 3]}'
    parsed = parse_request(body, None, {"main": "datocms"})
    assert not isinstance(parsed, Invalid)
    assert {r.code for r in parsed.rejected} == {ErrorCode.INVALID_ID}
