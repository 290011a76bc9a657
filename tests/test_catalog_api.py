"""The catalog API (`/v1/catalog`, `/v1/catalog.csv`) and `/v1/audit-log`, over authorizations made in the
simulator (the ``stocked`` world)."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest

from gateway.catalog.service import BINDINGS, KINDS, STATUSES
from gateway.store.deliveries import DELIVERY_STATUSES
from tests.conftest import CLIENT_KEYS
from tests.support.world import MINI, OA, OTHER, World


def auth(client: str = "audit") -> dict[str, str]:
    return {"Authorization": f"Bearer {CLIENT_KEYS[client]}"}


async def catalog(world: World, **params: Any) -> dict[str, Any]:
    response = await world.gateway.get("/v1/catalog", params=params, headers=auth())
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_one_row_per_authorizer_across_components(stocked: World) -> None:
    body = await catalog(stocked)
    assert body["total"] == 3
    assert body["next_cursor"] is None
    rows = {row["authorizer_appid"]: row for row in body["items"]}
    oa = rows[OA]
    assert oa["status"] == "active"
    assert oa["kind"] == "official_account"
    assert oa["name"] == f"Account {OA}"
    assert [(p["platform"], p["func_ids"], p["status"]) for p in oa["platforms"]] == [
        ("finance", [15], "active"),
        ("retail", [1, 2, 24], "active"),
    ]
    assert rows[MINI]["kind"] == "mini_program"
    assert rows[MINI]["principal_name"] == "Shop Co"
    assert rows[OTHER]["status"] == "revoked"
    assert rows[OTHER]["platforms"][0]["revoked_at"] is not None
    assert rows[OTHER]["token_health"] == "none"
    assert oa["binding"] == "unknown"  # nobody asked yet


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"platform": "finance"}, {OA, OTHER}),
        ({"kind": "mini_program"}, {MINI}),
        ({"status": "revoked"}, {OTHER}),
        ({"status": "active"}, {OA, MINI}),
        ({"q": "shop"}, {MINI}),
        ({"q": "GONE"}, {OTHER}),
        ({"q": "0000000001"}, {OA}),
        ({"q": "%"}, set()),
        ({"binding": "unknown", "platform": "retail"}, {OA, MINI}),
        ({"binding": "bound"}, set()),
    ],
)
async def test_filters(stocked: World, params: dict[str, str], expected: set[str]) -> None:
    body = await catalog(stocked, **params)
    assert {row["authorizer_appid"] for row in body["items"]} == expected
    assert body["total"] == len(expected)


async def test_keyset_pages_are_stable_and_complete(stocked: World) -> None:
    seen: list[str] = []
    cursor = None
    while True:
        body = await catalog(stocked, limit=1, **({"cursor": cursor} if cursor else {}))
        assert body["total"] == 3
        seen += [row["authorizer_appid"] for row in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted([OA, MINI, OTHER])


@pytest.mark.parametrize(
    ("params", "status", "named"),
    [
        ({"kind": "robot"}, 422, "kind"),
        ({"status": "gone"}, 422, "status"),
        ({"binding": "maybe"}, 422, "binding"),
        ({"platform": "nope"}, 422, "platform"),
        ({"limit": "501"}, 422, "limit"),
        ({"limit": "abc"}, 422, "limit"),
        ({"cursor": "!!!"}, 400, "cursor"),
        ({"cursor": "djI6eA"}, 400, "cursor"),
    ],
)
async def test_bad_filters_name_themselves(
    stocked: World, params: dict[str, str], status: int, named: str
) -> None:
    response = await stocked.gateway.get("/v1/catalog", params=params, headers=auth())
    assert response.status_code == status
    assert named in response.json()["error"]["message"]


@pytest.mark.parametrize("text", ["\x00", "retail\x00", "a\x1fb"])
@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/v1/catalog", "q"),
        ("/v1/catalog.csv", "q"),
        ("/v1/audit-log", "actor"),
        ("/v1/audit-log", "action"),
        ("/v1/audit-log", "authorizer_appid"),
        ("/v1/audit-log", "platform"),
        ("/v1/deliveries", "client"),
    ],
)
async def test_control_characters_in_text_filters_are_refused_by_name(
    stocked: World, path: str, name: str, text: str
) -> None:
    # On PostgreSQL a NUL failed the query (503, or a broken CSV); on SQLite "\x00" matched every row.
    response = await stocked.gateway.get(path, params={name: text}, headers=auth("ops"))
    assert response.status_code == 422, response.text
    assert f"{name}: must not contain control characters" in response.text


async def test_catalog_needs_the_catalog_scope(stocked: World) -> None:
    assert (await stocked.gateway.get("/v1/catalog")).status_code == 401
    assert (await stocked.gateway.get("/v1/catalog", headers=auth("crm"))).status_code == 403
    assert (await stocked.gateway.get("/v1/catalog.csv", headers=auth("crm"))).status_code == 403


async def test_csv_has_the_same_rows_and_defuses_formulas(stocked: World) -> None:
    response = await stocked.gateway.get("/v1/catalog.csv", params={"platform": "finance"}, headers=auth())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert {row["authorizer_appid"] for row in rows} == {OA, OTHER}
    other = next(row for row in rows if row["authorizer_appid"] == OTHER)
    assert other["name"] == "Old = Account"
    assert other["status"] == "revoked"
    oa = next(row for row in rows if row["authorizer_appid"] == OA)
    assert oa["platforms"] == "finance:15:active;retail:1|2|24:active"


async def test_binding_shows_once_checked(stocked: World) -> None:
    await stocked.sim.post(
        "/sim/open-accounts",
        json={"open_appid": "wx0pen0000000001", "principal_name": "ACME Co., Ltd.", "verified": True},
    )
    response = await stocked.gateway.post(f"/v1/authorizers/{OA}/open-binding", headers=auth("onboarding"))
    assert response.json()["state"] == "newly_bound", response.text
    row = next(r for r in (await catalog(stocked))["items"] if r["authorizer_appid"] == OA)
    assert (row["binding"], row["open_appid"]) == ("bound", "wx0pen0000000001")
    assert [r["authorizer_appid"] for r in (await catalog(stocked, binding="bound"))["items"]] == [OA]


async def test_audit_log_lists_what_happened_newest_first(stocked: World) -> None:
    await stocked.gateway.get(f"/v1/authorizers/{OA}/access-token", headers=auth("crm"))
    await stocked.services.audit.flush()
    response = await stocked.gateway.get("/v1/audit-log", params={"authorizer_appid": OA}, headers=auth())
    assert response.status_code == 200
    items = response.json()["items"]
    assert items[0]["action"] == "token.issued"
    assert items[0]["actor"] == "crm"
    assert [i["id"] for i in items] == sorted((i["id"] for i in items), reverse=True)
    assert "authorization.granted" in {i["action"] for i in items}
    page = (await stocked.gateway.get("/v1/audit-log", params={"limit": 1}, headers=auth())).json()
    older = (
        await stocked.gateway.get(
            "/v1/audit-log", params={"limit": 1, "cursor": page["next_cursor"]}, headers=auth()
        )
    ).json()
    assert older["items"][0]["id"] < page["items"][0]["id"]
    assert (await stocked.gateway.get("/v1/audit-log", headers=auth("crm"))).status_code == 403


async def test_the_schema_lists_the_query_parameters_each_page_reads(world: World) -> None:
    # Declared in the handlers' signatures: Litestar validates them and lists them. An empty choice is
    # no filter (the pages' forms send one).
    document = (await world.gateway.get("/schema/openapi.json")).json()

    def params(path: str) -> dict[str, dict[str, Any]]:
        listed = document["paths"][path]["get"].get("parameters", [])
        assert all(p["in"] == "query" and not p["required"] for p in listed)
        return {p["name"]: p["schema"] for p in listed}

    def integer(schema: dict[str, Any]) -> bool:
        return schema.get("type") == "integer" or {"type": "integer"} in schema.get("oneOf", [])

    filters = {"platform", "kind", "status", "binding", "q"}
    page = params("/v1/catalog")
    assert set(page) == filters | {"limit", "cursor"}
    assert page["kind"]["enum"] == [*KINDS, ""] and page["binding"]["enum"] == [*BINDINGS, ""]
    assert page["status"]["enum"] == [*STATUSES, ""] and page["q"]["maxLength"] == 200
    assert (page["limit"]["type"], page["limit"]["minimum"], page["limit"]["maximum"]) == ("integer", 1, 500)
    assert set(params("/v1/catalog.csv")) == filters
    audit = params("/v1/audit-log")
    pages = {"since", "until", "limit", "cursor"}
    assert set(audit) == {"actor", "action", "authorizer_appid", "platform"} | pages
    assert integer(audit["cursor"]) and audit["cursor"]["minimum"] == 1
    deliveries = params("/v1/deliveries")
    assert set(deliveries) == {"status", "client", "limit", "cursor"}
    assert deliveries["status"]["enum"] == [*DELIVERY_STATUSES, ""]


@pytest.mark.parametrize(
    ("path", "params", "said"),
    [
        ("/v1/catalog", {"limit": "0"}, "limit: must be a whole number from 1 to 500"),
        (
            "/v1/catalog",
            {"kind": "robot", "limit": "x"},
            "kind: must be one of official_account, mini_program",
        ),
        ("/v1/catalog", {"q": "x" * 201}, "q: must be at most 200 characters"),
        ("/v1/audit-log", {"since": "yesterday"}, "since: must be a whole number from 0 to"),
        ("/v1/deliveries", {"status": "lost"}, "status: must be one of pending, delivered, failed"),
    ],
)
async def test_refusals_name_the_parameter_and_what_it_must_be(
    stocked: World, path: str, params: dict[str, str], said: str
) -> None:
    response = await stocked.gateway.get(path, params=params, headers=auth("ops"))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_request"
    assert said in response.json()["error"]["message"]
    for value in params.values():
        assert len(value) < 2 or value not in response.text  # what was sent is never echoed


async def test_a_bad_cursor_alone_is_400(stocked: World) -> None:
    response = await stocked.gateway.get("/v1/audit-log", params={"cursor": "0"}, headers=auth())
    assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_cursor")
    both = await stocked.gateway.get("/v1/audit-log", params={"cursor": "x", "limit": "0"}, headers=auth())
    assert (both.status_code, both.json()["error"]["code"]) == (422, "invalid_request")
