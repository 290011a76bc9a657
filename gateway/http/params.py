"""Query parameters read by hand, so that a refusal names the parameter in the house error shape, and
their entries in the OpenAPI document, which Litestar cannot see in a handler that reads them itself."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from litestar.openapi.spec import Operation, Parameter, Schema
from litestar.openapi.spec.enums import OpenAPIType

from gateway.errors import InvalidCursor, InvalidInput

__all__ = ["number_param", "reads_query", "text_param", "whole_number"]


def whole_number(raw: str | None, name: str, default: int | None, low: int, high: int) -> int | None:
    """``raw`` as a whole number from ``low`` to ``high`` (``default`` when absent or empty); `InvalidInput`
    naming ``name`` otherwise (`InvalidCursor` for a numeric ``cursor``)."""
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        refusal = InvalidCursor if name == "cursor" else InvalidInput
        raise refusal(field=name, problem=f"must be a whole number from {low} to {high}")
    return int(raw)


def text_param(
    name: str, description: str, *, choices: Sequence[str] = (), max_length: int | None = None
) -> Parameter:
    """An optional string query parameter, one of ``choices`` when they are given."""
    schema = Schema(type=OpenAPIType.STRING, enum=list(choices) or None, max_length=max_length)
    return Parameter(name=name, param_in="query", schema=schema, description=description, required=False)


def number_param(name: str, description: str, low: int, high: int) -> Parameter:
    """An optional whole-number query parameter from ``low`` to ``high`` (read with `whole_number`)."""
    schema = Schema(type=OpenAPIType.INTEGER, minimum=low, maximum=high)
    return Parameter(name=name, param_in="query", schema=schema, description=description, required=False)


def reads_query(*params: Parameter) -> type[Operation]:
    """The ``operation_class`` of a route that reads ``params`` from the query itself: its operation in
    the OpenAPI document lists them, after any parameters Litestar found in the signature."""

    @dataclass
    class _ReadsQuery(Operation):
        def __post_init__(self) -> None:
            self.parameters = [*(self.parameters or ()), *params]

    return _ReadsQuery
