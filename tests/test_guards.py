"""The guards of ``/v1`` (`gateway.http.guards.Requires`): every route has one, and each refusal keeps its
status and code: 401 without a known key, 403 without the scope or outside the client's authorizers, 422
for an appid of the wrong shape; all before anything is looked up."""

from __future__ import annotations

from typing import Any

import pytest
from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.testing import AsyncTestClient

from gateway.http.guards import Requires
from tests.conftest import CLIENT_KEYS
from tests.support.world import OA

REPLAY = "/v1/deliveries/0123456789abcdef01234567/replay"
TEMPLATES = {
    REPLAY: "/v1/deliveries/{delivery_id:str}/replay",
    "/v1/platforms/retail/authorization-links": "/v1/platforms/{platform:str}/authorization-links",
    "/v1/platforms/retail/clear-quota": "/v1/platforms/{platform:str}/clear-quota",
}
# Every /v1 route: (method, path, JSON body, a client lacking the scope, the scope it lacks).
ROUTES = [
    ("GET", f"/v1/authorizers/{OA}/access-token", None, "audit", "token"),
    ("GET", f"/v1/authorizers/{OA}/jsapi-ticket", None, "onboarding", "token"),
    ("POST", "/v1/platforms/retail/authorization-links", {"auth_type": 3}, "crm", "onboard"),
    ("POST", f"/v1/authorizers/{OA}/open-binding", None, "crm", "bind"),
    ("GET", "/v1/catalog", None, "crm", "catalog"),
    ("GET", "/v1/catalog.csv", None, "onboarding", "catalog"),
    ("GET", "/v1/audit-log", None, "crm", "neither the scope 'catalog' nor 'admin'"),
    ("GET", "/v1/deliveries", None, "audit", "admin"),
    ("POST", REPLAY, None, "audit", "admin"),
    ("POST", "/v1/platforms/retail/clear-quota", None, "audit", "admin"),
    ("POST", "/v1/admin/registry/reload", None, "audit", "admin"),
]


def bearer(client: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {CLIENT_KEYS[client]}"}


async def call(
    gateway: AsyncTestClient[Litestar], method: str, path: str, body: Any, headers: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    response = await gateway.request(method, path, json=body, headers=headers)
    return response.status_code, response.json()["error"]


def test_every_v1_route_has_one_guard_and_is_tested_here(gateway: AsyncTestClient[Litestar]) -> None:
    served = set()
    for route in gateway.app.routes:
        for handler in route.route_handlers:
            if route.path.startswith("/v1/") and isinstance(handler, HTTPRouteHandler):
                guards = handler.resolve_guards()
                assert len(guards) == 1 and isinstance(guards[0], Requires), handler
                served |= {(m, route.path) for m in handler.http_methods if m != "OPTIONS"}
    tested = {(method, TEMPLATES.get(path, path).replace(OA, "{appid:str}")) for method, path, *_ in ROUTES}
    assert tested == served


@pytest.mark.parametrize(("method", "path", "body", "lacking", "scope"), ROUTES)
async def test_each_refusal_keeps_its_status_and_code(
    gateway: AsyncTestClient[Litestar], method: str, path: str, body: Any, lacking: str, scope: str
) -> None:
    status, error = await call(gateway, method, path, body, {})
    assert (status, error["code"]) == (401, "unauthenticated")
    assert "Authorization: Bearer" in error["message"]
    status, error = await call(gateway, method, path, body, {"Authorization": "Bearer not-a-client-key"})
    assert (status, error["code"], error["message"]) == (
        401,
        "unauthenticated",
        "the client key is not known",
    )
    status, error = await call(gateway, method, path, body, {"Authorization": "Basic Y3JtOmtleQ=="})
    assert (status, error["code"]) == (401, "unauthenticated")
    status, error = await call(gateway, method, path, body, bearer(lacking))
    assert (status, error["code"]) == (403, "forbidden")
    assert f"client '{lacking}'" in error["message"]
    assert scope in error["message"]


@pytest.mark.parametrize("kind", ["access-token", "jsapi-ticket"])
async def test_an_authorizer_outside_the_clients_list_is_403_before_any_lookup(
    gateway: AsyncTestClient[Litestar], kind: str
) -> None:
    # "limited" may act for OA only; whether the other appid exists is never said.
    for appid in ("wxb0000000000002", "wxnobody00000000", "not-an-appid"):
        status, error = await call(gateway, "GET", f"/v1/authorizers/{appid}/{kind}", None, bearer("limited"))
        assert (status, error["code"]) == (403, "forbidden")
        assert error["message"] == "client 'limited' may not act for this authorizer"


@pytest.mark.parametrize(
    ("method", "path", "client"),
    [
        ("GET", "/v1/authorizers/not-an-appid/access-token", "crm"),
        ("GET", "/v1/authorizers/wx-/jsapi-ticket", "crm"),
        ("POST", "/v1/authorizers/WXA0000000000001%20/open-binding", "onboarding"),
    ],
)
async def test_an_appid_of_the_wrong_shape_is_422(
    gateway: AsyncTestClient[Litestar], method: str, path: str, client: str
) -> None:
    status, error = await call(gateway, method, path, None, bearer(client))
    assert (status, error["code"]) == (422, "invalid_request")
    assert error["message"].startswith("appid:")


async def test_scopes_are_checked_before_what_is_asked_for_is_looked_up(
    gateway: AsyncTestClient[Litestar],
) -> None:
    # A platform and a delivery that do not exist: a client without the scope learns nothing of that.
    for method, path in (
        ("POST", "/v1/platforms/nowhere/clear-quota"),
        ("POST", "/v1/deliveries/ffffffffffffffffffffffff/replay"),
    ):
        assert (await call(gateway, method, path, None, bearer("crm")))[0] == 403
        assert (await call(gateway, method, path, None, bearer("ops")))[0] == 404
