"""The registry's JSON Schema, made from its Structs (`gateway.registry.model`), for editors and CI.

``gateway schema registry`` prints it and ``docs/registry.schema.json`` ships it (a test holds the two
equal). It says what types can: keys, types, required fields, unknown keys refused. What only the loader
checks (appid shapes, key lengths, duplicates, pins naming known platforms) still needs
``gateway check-config``. A ``${VAR}`` is a string before it is resolved, so it validates wherever a
string does.
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.registry.model import Registry, Secret

__all__ = ["registry_json_schema"]

_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def registry_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a registry file."""
    schema = msgspec.json.schema(Registry, schema_hook=_secret_as_string)
    return {
        "$schema": _DIALECT,
        "title": "Group Gateway registry",
        "description": "config/registry.yaml: the group, its components (platforms) and its clients. "
        "`gateway check-config FILE` checks what a schema cannot.",
        **schema,
    }


def _secret_as_string(kind: type) -> dict[str, Any]:
    if kind is Secret:
        return {"type": "string", "description": "a secret: write it as ${VAR}, never in the file"}
    raise NotImplementedError(kind)
