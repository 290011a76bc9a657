"""The OpenAPI document (``/schema``): the client-key security scheme of ``/v1``, operation ids a person
can read, every refusal of ``/v1`` by status with the codes it carries, and ``/wx`` as WeChat's SDKs meet
it: WeChat's answers passed through, and the gateway's own refusals in WeChat's errcode shape.

Nothing secret is in it: the document is built from types and words, never from the registry.

``/schema`` (and ``/schema/redoc``) is the document as a page, Redoc's, whose script is served from the
package (``gateway/http/static/redoc.standalone.js``: npm's ``redoc`` 2.5.4, ``bundles/``, unchanged),
never from a CDN: the gateway runs where the internet may be out of reach, and a docs page should not tell a
third party who reads it. The page's Content-Security-Policy keeps the browser from loading anything
elsewhere (Redoc's footer would fetch its maker's logo; refused, Redoc hides it). ``/schema/openapi.json``
and ``/schema/openapi.yaml`` are the document itself.
"""

from __future__ import annotations

import re
from typing import Any, Literal, cast

import msgspec
from litestar import MediaType, Router
from litestar.datastructures import ResponseHeader
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import JsonRenderPlugin, RedocRenderPlugin, YamlRenderPlugin
from litestar.openapi.spec import Components, Reference, SecurityRequirement, SecurityScheme
from litestar.types import Method
from litestar.types.internal_types import PathParameterDefinition

from gateway import __version__
from gateway.errors import BindingRefused, PushRejected, Refused
from gateway.http.errors import PROBLEM_JSON, STATUS
from gateway.http.guards import CLIENT_KEY_SCHEME

__all__ = [
    "BINDING_CODES",
    "GATEWAY_TOKEN",
    "PUSH_ERRORS",
    "PUSH_REFUSALS",
    "V1_ERRORS",
    "V1_REFUSALS",
    "WX_FORWARDED",
    "WX_TOKEN",
    "WxRefusal",
    "WxToken",
    "openapi_config",
]

# The codes of `BindingRefused`: WeChat's refusals of open/bind and open/create in words, and the plan's.
BINDING_CODES = {
    "already_bound": "the account is already bound to an open account",
    "principal_mismatch": "the account and the open account do not have the same principal",
    "principal_unknown": "the account's principal is not known yet (run a catalog sync)",
    "open_account_not_api_created": "the open account was not created through the API",
    "open_account_full": "the open account holds as many accounts as WeChat allows",
    "open_account_shared": "the open account holds several principals' accounts",
    "open_account_exists": "the principal already has an open account",
    "wechat_refused": "WeChat refused the binding",
    "binding_conflict": "the binding rules forbid it",
}
# What Litestar itself refuses (the renderers give them these codes), and the gateway's own faults.
_FRAMEWORK = {
    400: {"invalid_request": "the body is not JSON, or not of the shape the route takes"},
    404: {"not_found": "no such route"},
    413: {"body_too_large": "the request body is larger than the route accepts"},
    500: {"internal_error": "the gateway failed; its log says why"},
    503: {"store_unavailable": "the gateway's database is unreachable; Retry-After says when to try again"},
}


def _refusals(kinds: list[type[Refused]]) -> dict[int, dict[str, str]]:
    """Status -> code -> meaning, for ``kinds`` (their status as the renderer gives it, `STATUS`)."""
    table: dict[int, dict[str, str]] = {}
    for kind in kinds:
        status = next(STATUS[ancestor] for ancestor in kind.__mro__ if ancestor in STATUS)
        codes = BINDING_CODES if kind is BindingRefused else {kind.code: kind.title}
        table.setdefault(status, {}).update(codes)
    return table


def _kinds(root: type[Refused]) -> list[type[Refused]]:
    """``root``'s subclasses that name a code of their own (or, `BindingRefused`, take one)."""
    found = []
    for kind in root.__subclasses__():
        if "code" in vars(kind) or kind is BindingRefused:
            found.append(kind)
        found += _kinds(kind)
    return found


_ANSWERED = [kind for kind in _kinds(Refused) if not issubclass(kind, PushRejected)]
V1_REFUSALS: dict[int, dict[str, str]] = {
    status: {**_refusals(_ANSWERED).get(status, {}), **_FRAMEWORK.get(status, {})}
    for status in sorted({*_refusals(_ANSWERED), *_FRAMEWORK})
}
"""Every refusal of ``/v1``, by status: each code it carries and what it means (``error.code`` in the
body says which); made from the domain errors, so a new one is documented as it is added."""
PUSH_REFUSALS: dict[int, dict[str, str]] = {
    **_refusals(_kinds(PushRejected)),
    503: _FRAMEWORK[503],
}
"""What WeChat's pushes to the event and message URLs may be refused with (WeChat retries; nothing else
reads these answers)."""


def _refusal(status: int, codes: dict[str, str], *, problem: bool) -> ResponseSpec:
    """A status's response: the house's error (problem details on ``/v1``, the bare ``error`` member on
    the push URLs) with its codes enumerated, and their meanings."""
    name = "Refusal" if problem else "PushRefusal"
    error = msgspec.defstruct(
        f"{name}{status}Error",
        [("code", Literal.__getitem__(tuple(codes))), ("message", str)],
        frozen=True,
    )
    fields: list[tuple[str, Any]] = [("error", error)]
    if problem:  # RFC 9457
        fields = [("type", str), ("title", str), ("status", int), ("detail", str), *fields]
    body = msgspec.defstruct(f"{name}{status}", fields, frozen=True)
    meanings = "; ".join(f"`{code}`: {meaning}" for code, meaning in codes.items())
    return ResponseSpec(
        data_container=body,
        description=meanings,
        generate_examples=False,
        media_type=PROBLEM_JSON if problem else MediaType.JSON,
    )


V1_ERRORS = {status: _refusal(status, codes, problem=True) for status, codes in V1_REFUSALS.items()}
"""Declared on every /v1 route, so that the document (and the clients generated from it) know each
refusal's shape and codes."""
PUSH_ERRORS = {status: _refusal(status, codes, problem=False) for status, codes in PUSH_REFUSALS.items()}
"""Declared on the URLs WeChat pushes to."""


class WxRefusal(msgspec.Struct, frozen=True):
    """A refusal in WeChat's own shape, as its SDKs expect it."""

    errcode: int
    errmsg: str


class WxToken(msgspec.Struct, frozen=True):
    """A gateway token, in the shape of WeChat's ``cgi-bin/token``."""

    access_token: str
    expires_in: int


_WX_REFUSALS = {
    400: "errcode 47001: the request could not be read",
    404: "errcode 40066: not a WeChat API path",
    413: "errcode 40006: the request body is larger than the route accepts",
    429: "errcode 45009: the client is past the gateway's rate limit; Retry-After says when to try again",
    502: "errcode -1: WeChat cannot be reached, or keeps failing (its breaker is open)",
    503: "errcode -1: the platform has no verify ticket yet, or the gateway's database is unreachable "
    "(Retry-After)",
    504: "errcode -1: WeChat did not answer in time",
}
_WX_ERRORS = {
    status: ResponseSpec(data_container=WxRefusal, description=meaning, generate_examples=False)
    for status, meaning in _WX_REFUSALS.items()
}
WX_FORWARDED = {
    200: ResponseSpec(
        data_container=None,
        description="WeChat's answer, byte for byte with its status and content type: JSON for most APIs, "
        "the file for a media download. The gateway's own refusals (an unknown or expired gateway token "
        "40001, a scope or permission set missing 48001, an authorizer revoked 61003 or to authorize "
        "again 61023, an API path refused 40066) are `{errcode, errmsg}` with HTTP 200, as WeChat "
        "answers its own.",
    ),
    **_WX_ERRORS,
}
"""The responses of the forwarded calls."""
WX_TOKEN = {
    200: ResponseSpec(
        data_container=cast(Any, WxToken | WxRefusal),
        description="A gateway token for the authorizer, valid for `expires_in` seconds; or a refusal in "
        "WeChat's shape with HTTP 200: 40002 a grant_type other than client_credential, 41002 no appid, "
        "41004 no secret, 40125 a secret that is no client key, 40013 an authorizer not known, 48001 "
        "the scope `proxy` missing or an authorizer the client may not act for, 61003 revoked, 61023 "
        "to authorize again, 47001 a stable_token body that is not the JSON object expected, 43002 a "
        "stable_token request that is not a POST",
        generate_examples=False,
    ),
    **{status: spec for status, spec in _WX_ERRORS.items() if status in (400, 413, 429, 503)},
}
"""The responses of ``cgi-bin/token`` and ``cgi-bin/stable_token``."""

GATEWAY_TOKEN: list[SecurityRequirement] = [{"gatewayToken": []}]
"""The security requirement of the forwarded ``/wx`` calls."""
_GATEWAY_TOKEN_SCHEME = SecurityScheme(
    type="apiKey",
    name="access_token",
    security_scheme_in="query",
    description="A gateway token from `/wx/cgi-bin/token` or `/wx/cgi-bin/stable_token`, where WeChat's "
    "SDKs put WeChat's: the gateway puts the real token in its place.",
)

_WORD = re.compile(r"[^A-Za-z0-9]+")

REDOC_JS = "/static/redoc.standalone.js"
_FAVICON = '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">'
# Redoc runs an inline init script, styles itself inline (styled-components) and searches in a blob: worker.
DOCS_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src blob:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _operation_id(handler: HTTPRouteHandler, method: Method, _: list[str | PathParameterDefinition]) -> str:
    """The handler's name in camelCase (``access_token`` -> ``accessToken``); a handler of several
    methods gets the method after it (``forwardPost``)."""
    first, *rest = _WORD.split(handler.handler_name.rsplit(".", 1)[-1])
    name = first + "".join(word.capitalize() for word in rest)
    return name + method.capitalize() if len(handler.http_methods - {"OPTIONS", "HEAD"}) > 1 else name


def openapi_config() -> OpenAPIConfig:
    """The document's settings, served under ``/schema``."""
    schemes: dict[str, SecurityScheme | Reference] = {
        "clientKey": CLIENT_KEY_SCHEME,
        "gatewayToken": _GATEWAY_TOKEN_SCHEME,
    }
    components = Components(security_schemes=schemes)
    return OpenAPIConfig(
        title="Group Gateway",
        description="`/v1`: the internal apps' API, authenticated by client key. `/wx`: WeChat's API "
        "through the gateway, for WeChat's SDKs (gateway tokens in, refusals in WeChat's shape). "
        "`/wechat`: what WeChat calls.",
        version=__version__,
        path="/schema",
        components=components,
        operation_id_creator=_operation_id,
        render_plugins=[
            RedocRenderPlugin(path=["/", "/redoc"], js_url=REDOC_JS, google_fonts=False, favicon=_FAVICON),
            JsonRenderPlugin(),
            YamlRenderPlugin(),
        ],
        openapi_router=Router(
            "/schema",
            route_handlers=[],
            response_headers=[ResponseHeader(name="Content-Security-Policy", value=DOCS_CSP)],
            include_in_schema=False,
        ),
    )
