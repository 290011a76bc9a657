"""clear_quota on an administrator's word (POST /v1/platforms/{id}/clear-quota): WeChat's 45009 breaker
lifted, ten clears a month, refusals explained, everything audited, never called automatically."""

from __future__ import annotations

from tests.conftest import CLIENT_KEYS
from tests.support.world import OA, RETAIL, World

ADMIN = {"Authorization": f"Bearer {CLIENT_KEYS['ops']}"}


async def clear(world: World, body: object = None, key: str = "ops", platform: str = "retail") -> dict:  # type: ignore[type-arg]
    headers = {"Authorization": f"Bearer {CLIENT_KEYS[key]}"}
    response = await world.gateway.post(f"/v1/platforms/{platform}/clear-quota", json=body, headers=headers)
    return {"status": response.status_code} | response.json()


async def test_clearing_the_platform_quota_lifts_the_breaker(ready: World) -> None:
    await ready.expire_everything()
    await ready.fault(endpoint="api_authorizer_token", errcode=45009, key=RETAIL["appid"])
    blocked = await ready.token(OA)
    assert blocked.json()["error"]["code"] == "wechat_quota_exhausted"
    assert await ready.calls("clear_quota/v2") == 0  # the gateway never clears on its own

    cleared = await clear(ready)

    assert cleared == {"status": 200, "platform": "retail", "authorizer_appid": None, "cleared": True}
    assert (await ready.token(OA)).status_code == 200
    await ready.services.audit.flush()
    audit = await ready.gateway.get("/v1/audit-log", params={"action": "quota_cleared"}, headers=ADMIN)
    assert [(e["actor"], e["platform"]) for e in audit.json()["items"]] == [("ops", "retail")]


async def test_clearing_an_authorizer_quota(ready: World) -> None:
    cleared = await clear(ready, {"authorizer_appid": OA})
    assert (cleared["status"], cleared["authorizer_appid"]) == (200, OA)

    unknown = await clear(ready, {"authorizer_appid": "wxe0000000000099"})
    assert (unknown["status"], unknown["error"]["code"]) == (404, "authorizer_unknown")


async def test_refusals(ready: World) -> None:
    assert (await clear(ready, key="crm"))["status"] == 403
    assert (await clear(ready, platform="nowhere"))["error"]["code"] == "platform_unknown"
    bad = await clear(ready, {"authorizer_appid": "gh_123"})
    assert (bad["status"], bad["error"]["message"].split(":")[0]) == (422, "authorizer_appid")
    unknown_field = await clear(ready, {"appid": OA})
    assert unknown_field["status"] == 422 and "appid" in unknown_field["error"]["message"]


async def test_ten_clears_a_month_then_48006_is_explained(ready: World) -> None:
    for _ in range(10):
        assert (await clear(ready))["status"] == 200
    used_up = await clear(ready)
    assert (used_up["status"], used_up["error"]["code"]) == (409, "quota_clears_used_up")
    assert "ten quota clears a month" in used_up["error"]["message"]
    assert await ready.calls("clear_quota/v2") == 11  # each sent once, never retried
