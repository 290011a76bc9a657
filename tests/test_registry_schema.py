"""The registry's JSON Schema: ``gateway schema registry`` prints what docs/registry.schema.json ships,
made from the Structs, and the example registry (and the tests' own) validate against it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from gateway.cli.main import main
from tests.conftest import REGISTRY_YAML

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "docs" / "registry.schema.json"
EXAMPLE = ROOT / "config" / "registry.example.yaml"


def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SHIPPED.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_shipped_schema_is_what_the_command_prints(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "registry"]) == 0
    printed = capsys.readouterr().out
    assert printed == SHIPPED.read_text(encoding="utf-8"), (
        "docs/registry.schema.json is stale: gateway schema registry > docs/registry.schema.json"
    )


@pytest.mark.parametrize(
    "text", [EXAMPLE.read_text(encoding="utf-8"), REGISTRY_YAML], ids=["example", "tests"]
)
def test_registries_validate(text: str) -> None:
    validator().validate(yaml.safe_load(text))


def _example() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    return doc


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda d: d["platforms"][0].update(component_secret="x"), ["platforms", 0]),  # a misspelt key
        (lambda d: d["clients"][0].update(scopes="token"), ["clients", 0, "scopes"]),  # not a list
        (lambda d: d["clients"][0].update(scopes=["tokens"]), ["clients", 0, "scopes", 0]),  # no such scope
        (lambda d: d.pop("group"), []),  # required
    ],
)
def test_faults_are_found_where_they_are(change: Any, where: list[object]) -> None:
    doc = _example()
    change(doc)
    errors = list(validator().iter_errors(doc))
    assert errors, "the schema accepted a faulty registry"
    assert any(list(e.absolute_path) == where for e in errors), [list(e.absolute_path) for e in errors]


def test_secrets_are_strings_that_say_so() -> None:
    platform = json.loads(SHIPPED.read_text(encoding="utf-8"))["$defs"]["Platform"]["properties"]
    assert platform["component_appsecret"]["type"] == "string"
    assert "${VAR}" in platform["component_appsecret"]["description"]
