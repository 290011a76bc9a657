"""Query parameters are declared in handler signatures (``Annotated[..., QueryParameter(...)]``), so that
Litestar parses, validates and lists them in the OpenAPI document; `invalid_parameters` words Litestar's
refusal in the house's terms: each parameter named with what it must be, never with the value sent (a
``stale`` value is a token). An empty choice (``?kind=``, as an HTML form sends it) means no filter."""

from __future__ import annotations

from typing import Any, Literal, get_args, get_origin

from litestar import Request
from litestar.exceptions import ValidationException
from litestar.params import ParameterKwarg
from litestar.typing import FieldDefinition

from gateway.errors import InvalidCursor, InvalidInput

__all__ = ["invalid_parameters"]


def invalid_parameters(request: Request[Any, Any, Any], exc: ValidationException) -> InvalidInput:
    """Litestar's validation refusal as the domain's: `InvalidCursor` when only ``cursor`` is wrong (a
    page token the caller did not get from us), `InvalidInput` naming the first parameter otherwise (the
    others follow in its message)."""
    details = [d for d in exc.extra if isinstance(d, dict)] if isinstance(exc.extra, list) else []
    faults: list[tuple[str, str]] = []  # (what is named, what is wrong)
    cursor_only = bool(details)
    for detail in details:
        key = str(detail.get("key") or "")
        declared = _declared(request, key) if key and detail.get("source") == "query" else None
        if declared is not None:
            name, declaration = declared
            faults.append((name, f"must be {_requirement(declaration)}"))
        else:  # a body's field: its path and msgspec's words
            faults.append((key or "body", str(detail.get("message"))))
        cursor_only = cursor_only and declared is not None and declared[0] == "cursor"
    if not faults:
        return InvalidInput("request", str(exc.detail))
    (field, problem), others = faults[0], faults[1:]
    problem = "; ".join([problem, *(f"{name}: {fault}" for name, fault in others)])
    return InvalidCursor(problem) if cursor_only else InvalidInput(field, problem)


def _declared(request: Request[Any, Any, Any], key: str) -> tuple[str, FieldDefinition] | None:
    """The query parameter Litestar calls ``key`` (the handler's argument): its name in the query and
    its declaration."""
    field = request.route_handler.parsed_fn_signature.parameters.get(key)
    if field is None:
        return None
    kwarg = field.kwarg_definition
    return (kwarg.name if isinstance(kwarg, ParameterKwarg) and kwarg.name else key), field


def _requirement(field: FieldDefinition) -> str:
    """What a value of ``field`` must be, in words, from its type and its constraints."""
    choices = [str(c) for c in _literals(field.annotation) if c not in ("", None)]
    if choices:
        return f"one of {', '.join(choices)}"
    kwarg = field.kwarg_definition if isinstance(field.kwarg_definition, ParameterKwarg) else None
    low = None if kwarg is None else kwarg.ge
    high = None if kwarg is None else kwarg.le
    if int in _types(field.annotation):
        if low is not None and high is not None:
            return f"a whole number from {low:.0f} to {high:.0f}"
        return "a whole number" + (f" of at least {low:.0f}" if low is not None else "")
    if kwarg is not None and kwarg.max_length is not None:
        return f"at most {kwarg.max_length} characters"
    return "valid"


def _literals(annotation: Any) -> list[Any]:
    """The values of every ``Literal`` in ``annotation`` (through unions and nested literals)."""
    if get_origin(annotation) is Literal:
        return [v for arg in get_args(annotation) for v in (_literals(arg) if get_origin(arg) else [arg])]
    return [v for arg in get_args(annotation) for v in _literals(arg)]


def _types(annotation: Any) -> set[Any]:
    """``annotation`` and the members of its unions."""
    return {annotation, *get_args(annotation)}
