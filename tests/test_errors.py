"""Domain errors and their two renderers: services say what happened (`gateway.errors`), and only the HTTP
layer decides how it reads: RFC 9457 problem details on ``/v1`` (``WWW-Authenticate`` on a 401), WeChat's
``{"errcode", "errmsg"}`` on ``/wx``, the bare ``error`` member on WeChat's push URLs."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar, Router, get
from litestar.handlers import HTTPRouteHandler
from litestar.testing import TestClient

import gateway.errors
from gateway.errors import (
    AuthorizationRevoked,
    AuthorizerUnknown,
    BindingRefused,
    DeliveryUnknown,
    Forbidden,
    InvalidCursor,
    InvalidInput,
    NoLiveAuthorization,
    PermissionSetMissing,
    PlatformUnknown,
    PushAppIdMismatch,
    PushEventInvalid,
    PushMessageInvalid,
    PushParameterInvalid,
    PushParameterMissing,
    PushRejected,
    PushSignatureInvalid,
    PushTimestampStale,
    PushTooLarge,
    PushUndecryptable,
    PushXmlInvalid,
    QuotaClearsUsedUp,
    QuotaExhausted,
    RateLimited,
    ReauthorizationRequired,
    Refused,
    RegistryRefused,
    TicketMissing,
    Unauthenticated,
    WeChatRefused,
    WeChatTimedOut,
    WeChatUnavailable,
)
from gateway.http.errors import (
    HOUSE_HANDLERS,
    PROBLEM_JSON,
    PUSH_HANDLERS,
    WECHAT_HANDLERS,
    problem_type,
    status_of,
)
from tests.conftest import CLIENT_KEYS
from tests.support.world import OA, OTHER, World

GATEWAY = Path(__file__).resolve().parent.parent / "gateway"

# Every refusal, as a service raises it: its code, its status in the house shape, and on /wx WeChat's
# errcode with the status it comes with. The answers clients and SDKs already depend on.
REFUSALS: list[tuple[Refused, str, int, tuple[int, int]]] = [
    (Unauthenticated("the client key is not known"), "unauthenticated", 401, (40001, 200)),
    (Forbidden("client 'crm' does not hold the scope 'bind'"), "forbidden", 403, (48001, 200)),
    (
        InvalidInput("appid", "must be 'wx' followed by letters and digits"),
        "invalid_request",
        422,
        (40013, 200),
    ),
    (InvalidCursor(), "invalid_cursor", 400, (40013, 200)),
    (PlatformUnknown("nope"), "platform_unknown", 404, (40013, 200)),
    (DeliveryUnknown("01J0"), "delivery_unknown", 404, (-1, 502)),
    (AuthorizerUnknown(OA, "no platform holds an authorization"), "authorizer_unknown", 404, (40013, 200)),
    (AuthorizationRevoked(OA, "revoked"), "authorization_revoked", 410, (61003, 200)),
    (ReauthorizationRequired(OA, "61023"), "reauthorization_required", 409, (61023, 200)),
    (PermissionSetMissing(OA, "no platform holds set 24"), "permission_set_missing", 409, (48001, 200)),
    (BindingRefused("principal_mismatch", "not the same principal"), "principal_mismatch", 409, (-1, 502)),
    (TicketMissing("retail", "no ticket yet"), "ticket_missing", 503, (-1, 503)),
    (QuotaExhausted("retail", "45009"), "wechat_quota_exhausted", 503, (45009, 200)),
    (QuotaClearsUsedUp("48006"), "quota_clears_used_up", 409, (-1, 502)),
    (WeChatUnavailable("WeChat cannot be reached"), "wechat_unavailable", 503, (-1, 502)),
    (WeChatTimedOut("WeChat did not answer in time"), "wechat_unavailable", 503, (-1, 504)),
    (WeChatRefused("WeChat refused the clear"), "wechat_error", 502, (-1, 502)),
    (RateLimited("crm", 2.5), "rate_limited", 429, (45009, 429)),
    (RegistryRefused("registry.yaml: clients[0]: not valid", None), "registry_refused", 409, (-1, 502)),
    (PushTooLarge("push bodies are limited"), "body_too_large", 413, (-1, 502)),
    (PushParameterMissing("nonce"), "missing_parameter", 400, (-1, 502)),
    (PushParameterInvalid("nonce", "nonce must be printable"), "invalid_parameter", 400, (-1, 502)),
    (PushTimestampStale("outside the window"), "stale_timestamp", 400, (-1, 502)),
    (PushXmlInvalid("DTD refused"), "invalid_xml", 400, (-1, 502)),
    (PushAppIdMismatch("another appid"), "appid_mismatch", 400, (-1, 502)),
    (PushSignatureInvalid("msg_signature does not match"), "signature_invalid", 403, (-1, 502)),
    (PushUndecryptable("bad padding"), "decrypt_failed", 400, (-1, 502)),
    (PushEventInvalid("no InfoType"), "invalid_event", 400, (-1, 502)),
    (PushMessageInvalid("no MsgType"), "invalid_message", 400, (-1, 502)),
]
# Bases that are never raised themselves.
ABSTRACT = {Refused, NoLiveAuthorization, PushRejected}


def _refusal_classes() -> set[type[Refused]]:
    return {
        value
        for value in vars(gateway.errors).values()
        if isinstance(value, type) and issubclass(value, Refused) and value not in ABSTRACT
    }


def test_every_refusal_is_pinned_here() -> None:
    assert {type(error) for error, *_ in REFUSALS} == _refusal_classes()


@pytest.mark.parametrize(("error", "code", "status", "wechat"), REFUSALS, ids=lambda v: type(v).__name__)
def test_the_same_refusal_in_both_shapes(
    error: Refused, code: str, status: int, wechat: tuple[int, int]
) -> None:
    """One route on a house router and one on a WeChat one raise the same error: each router words it."""

    def raising() -> HTTPRouteHandler:
        @get("/raise", sync_to_thread=False)
        def handler() -> None:
            raise error

        return handler

    app = Litestar(
        [
            Router("/v1", route_handlers=[raising()], exception_handlers=HOUSE_HANDLERS),
            Router("/wx", route_handlers=[raising()], exception_handlers=WECHAT_HANDLERS),
            Router("/wechat", route_handlers=[raising()], exception_handlers=PUSH_HANDLERS),
        ],
        logging_config=None,
    )
    with TestClient(app) as client:
        house, wx, push = (client.get(f"{prefix}/raise") for prefix in ("/v1", "/wx", "/wechat"))

    assert status_of(error) == status
    assert (house.status_code, house.headers["content-type"]) == (status, PROBLEM_JSON)
    assert house.json() == {
        "type": problem_type(code),
        "title": error.title,
        "status": status,
        "detail": error.message,
        "error": {"code": code, "message": error.message},
    }
    assert house.headers.get("www-authenticate") == ("Bearer" if status == 401 else None)

    errcode, wx_status = wechat
    assert (wx.status_code, wx.headers["content-type"]) == (wx_status, "application/json")
    assert wx.json()["errcode"] == errcode
    assert "www-authenticate" not in wx.headers

    assert (push.status_code, push.headers["content-type"]) == (status, "application/json")
    assert push.json() == {"error": {"code": code, "message": error.message}}

    if isinstance(error, RateLimited):
        assert house.headers["retry-after"] == wx.headers["retry-after"] == "3"
        assert wx.json()["errmsg"].startswith("reach max api rate limit")
    else:
        assert wx.json()["errmsg"] == error.message


def test_refusals_carry_no_http() -> None:
    """A status, a header or a response has no place in a domain error: the HTTP layer decides them."""
    for cls in _refusal_classes() | ABSTRACT:
        for klass in cls.__mro__:
            assert not {"status", "status_code", "headers"} & set(vars(klass)), klass
        assert "status" not in inspect.signature(cls).parameters, cls
    for error, *_ in REFUSALS:
        assert not {"status", "status_code", "headers"} & set(vars(error)), type(error)


def _http_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [
        f"{n.module}.{a.name}"
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and n.module
        for a in n.names
    ]
    return [name for name in names if name.startswith(("litestar", "starlette", "http.HTTPStatus"))]


def test_only_the_http_layer_speaks_http() -> None:
    """Outside ``gateway/http`` (and the WeChat simulator, an app of its own) no module imports a web
    framework, its status codes or its HTTP exceptions: services raise domain errors."""
    strays = {
        str(path.relative_to(GATEWAY)): found
        for path in sorted(GATEWAY.rglob("*.py"))
        if path.relative_to(GATEWAY).parts[0] not in ("http", "simulator") and (found := _http_imports(path))
    }
    assert strays == {}


def test_services_raise_no_status() -> None:
    """No call to a refusal anywhere passes an HTTP status, and the old status-carrying error is gone."""
    refusals = {cls.__name__ for cls in _refusal_classes()}
    offenders = []
    for path in sorted(GATEWAY.rglob("*.py")):
        if "simulator" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Name) and node.id == "ApiError":
                offenders.append(f"{path.name}:{node.lineno} ApiError")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in refusals
                and any(isinstance(a, ast.Constant) and isinstance(a.value, int) for a in node.args)
            ):
                offenders.append(f"{path.name}:{node.lineno} {node.func.id} with a number")
    assert offenders == []


# --- the gateway's own routers ----------------------------------------------------------------------


def bearer(client: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {CLIENT_KEYS[client]}"}


async def test_v1_answers_problem_details(ready: World) -> None:
    response = await ready.gateway.get(f"/v1/authorizers/{OTHER}/access-token", headers=bearer("crm"))
    assert (response.status_code, response.headers["content-type"]) == (404, PROBLEM_JSON)
    problem: dict[str, Any] = response.json()
    assert problem == {
        "type": problem_type("authorizer_unknown"),
        "title": "Authorizer unknown",
        "status": 404,
        "detail": f"no platform holds an authorization for {OTHER}",
        "error": {"code": "authorizer_unknown", "message": f"no platform holds an authorization for {OTHER}"},
    }
    assert "www-authenticate" not in response.headers


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer not-a-key"}, {"Authorization": "Basic Y3JtOmtleQ=="}]
)
async def test_a_401_names_the_bearer_scheme(ready: World, headers: dict[str, str]) -> None:
    for path in (f"/v1/authorizers/{OA}/access-token", "/v1/catalog", f"/v1/authorizers/{OA}/open-binding"):
        method = "POST" if path.endswith("open-binding") else "GET"
        response = await ready.gateway.request(method, path, headers=headers)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["code"] == "unauthenticated"
    # Known but not allowed: 403, no challenge.
    refused = await ready.gateway.get("/v1/catalog", headers=bearer("crm"))
    assert refused.status_code == 403 and "www-authenticate" not in refused.headers


async def test_litestars_own_refusals_are_problem_details_too(ready: World) -> None:
    unknown = await ready.gateway.get("/v1/nowhere")
    malformed = await ready.gateway.post(
        "/v1/platforms/retail/authorization-links",
        content=b"{",
        headers=bearer("onboarding") | {"Content-Type": "application/json"},
    )
    for response, status, code in ((unknown, 404, "not_found"), (malformed, 400, "invalid_request")):
        assert (response.status_code, response.headers["content-type"]) == (status, PROBLEM_JSON)
        assert response.json()["type"] == problem_type(code)
        assert response.json()["error"]["code"] == code


async def test_a_revoked_authorizer_in_both_shapes(stocked: World) -> None:
    """`AuthorizationRevoked`, raised by the same routing for both: 410 on /v1, 61003 on /wx."""
    house = await stocked.gateway.get(f"/v1/authorizers/{OTHER}/access-token", headers=bearer("crm"))
    wx = await stocked.gateway.get(
        "/wx/cgi-bin/user/get", headers=bearer("crm") | {"X-Authorizer-Appid": OTHER}
    )
    assert (house.status_code, house.json()["error"]["code"]) == (410, "authorization_revoked")
    assert (wx.status_code, wx.json()["errcode"]) == (200, 61003)
    assert wx.json()["errmsg"] == house.json()["error"]["message"]
    assert await stocked.calls("cgi-bin/user/get") == 0


async def test_the_push_urls_keep_their_plain_json(ready: World) -> None:
    for path in ("/wechat/retail/events", "/wechat/events", f"/wechat/retail/messages/{OA}"):
        response = await ready.gateway.post(path, content=b"<xml/>")
        assert (response.status_code, response.headers["content-type"]) == (400, "application/json"), path
        assert response.json() == {
            "error": {"code": "missing_parameter", "message": "query parameter msg_signature is missing"}
        }


async def test_wx_itself_is_a_wechat_refusal(ready: World) -> None:
    for path in ("/wx", "/wx/"):
        response = await ready.gateway.get(path)
        assert (response.status_code, response.json()) == (404, {"errcode": 40066, "errmsg": "Not Found"})
