"""The chart follows the catalog (issue 24): its ``kind`` values, the secrets each kind's
targets get, and its values schema are those of the worker's API areas."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pydantic import SecretStr

from worker.registry import AREAS

CHART = Path(__file__).resolve().parents[2] / "helm" / "bulkops"
BUILT_IN = [spec for spec in AREAS if spec.adapter_module.startswith("worker.apis.")]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _secret_fields(spec_index: int) -> dict[str, str]:
    """The target model's secret fields as the chart's helper maps them: KEY -> valuesField."""
    model = BUILT_IN[spec_index].target
    names = [n for n, f in model.model_fields.items() if f.annotation is SecretStr]
    return {name.upper(): _camel(name) for name in names}


def helper_secrets() -> dict[str, dict[str, str]]:
    """``bulkops.targetSecretFields``: kind -> {KEY: valuesField}, one block per kind."""
    tpl = (CHART / "templates" / "_helpers.tpl").read_text()
    block = tpl.split('define "bulkops.targetSecretFields"', 1)[1].split("{{- end }}\n{{- end }}")[
        0
    ]
    out: dict[str, dict[str, str]] = {}
    kind = None
    for line in block.splitlines():
        match = re.search(r'eq \.kind "([^"]+)"', line)
        if match:
            kind = match.group(1)
            out[kind] = {}
        elif "else }}" in line:
            kind = None
        elif kind is not None and re.fullmatch(r"[A-Z_]+: [A-Za-z]+", line.strip()):
            key, field = line.strip().split(": ")
            out[kind][key] = field
    return out


def test_the_chart_kinds_are_the_catalog_kinds() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    target = schema["properties"]["targets"]["additionalProperties"]
    kinds = [spec.kind for spec in BUILT_IN]
    assert target["properties"]["kind"]["enum"] == kinds
    conditions = [c["if"]["properties"]["kind"]["const"] for c in target["allOf"]]
    assert conditions == kinds
    assert list(helper_secrets()) == kinds


def test_each_kind_gets_the_secrets_of_its_target_model() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    properties = schema["properties"]["targets"]["additionalProperties"]["properties"]
    secrets = helper_secrets()
    for index, spec in enumerate(BUILT_IN):
        expected = _secret_fields(index)
        assert expected, spec.kind
        assert secrets[spec.kind] == expected
        assert set(expected.values()) <= set(properties)


def test_the_helper_refuses_a_kind_it_does_not_know() -> None:
    """No kind falls through to another API's secrets."""
    tpl = (CHART / "templates" / "_helpers.tpl").read_text()
    block = tpl.split('define "bulkops.targetSecretFields"', 1)[1].split("{{- end }}\n{{- end }}")[
        0
    ]
    assert re.search(r"\{\{- else \}\}\n\{\{- fail ", block)
