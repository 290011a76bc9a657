"""APIs called with an authorizer_access_token: each needs its permission set."""

from __future__ import annotations

import struct
import zlib

import pytest

from tests.simulator.helpers import RETAIL, Sim

OA = "wxa0000000000001"
MP = "wxb0000000000002"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("method", "path", "body", "query"),
    [
        ("GET", "/cgi-bin/user/get", None, {}),
        ("POST", "/cgi-bin/message/custom/send", {"touser": "o1", "msgtype": "text"}, {}),
        ("POST", "/cgi-bin/menu/create", {"button": [{"type": "view", "name": "a", "url": "https://a"}]}, {}),
        ("GET", "/cgi-bin/menu/get", None, {}),
        ("GET", "/cgi-bin/media/get", None, {"media_id": "x"}),
    ],
)
async def test_each_api_needs_its_permission_set(
    sim: Sim, method: str, path: str, body: object, query: dict[str, str]
) -> None:
    token = await sim.account(OA, [3])  # account service only
    assert await sim.errcode(path, body, token=token, method=method, **query) == 48001


async def test_followers_page_by_next_openid(sim: Sim) -> None:
    token = await sim.account(OA, [2], followers=10_005)
    first = await sim.wechat("/cgi-bin/user/get", token=token, method="GET")
    assert (first["total"], first["count"]) == (10_005, 10_000)
    openids = first["data"]["openid"]
    assert len(set(openids)) == 10_000
    assert all(len(o) == 28 and o.startswith("o") for o in openids)
    assert first["next_openid"] == openids[-1]

    second = await sim.wechat(
        "/cgi-bin/user/get", token=token, method="GET", next_openid=first["next_openid"]
    )
    assert second["count"] == 5
    assert not set(second["data"]["openid"]) & set(openids)
    end = await sim.wechat("/cgi-bin/user/get", token=token, method="GET", next_openid=second["next_openid"])
    assert end == {"total": 10_005, "count": 0, "next_openid": ""}
    assert await sim.errcode("/cgi-bin/user/get", token=token, method="GET", next_openid="o-nobody") == 40003


async def test_custom_messages_go_to_followers_and_are_recorded(sim: Sim) -> None:
    token = await sim.account(OA, [1, 2])
    openid = (await sim.wechat("/cgi-bin/user/get", token=token, method="GET"))["data"]["openid"][0]
    message = {"touser": openid, "msgtype": "text", "text": {"content": "你好"}}
    assert await sim.wechat("/cgi-bin/message/custom/send", message, token=token) == {
        "errcode": 0,
        "errmsg": "ok",
    }
    stranger = message | {"touser": "o-not-a-follower"}
    assert await sim.errcode("/cgi-bin/message/custom/send", stranger, token=token) == 40003
    recorded = (await sim.control("GET", "/messages"))["messages"]
    assert recorded == [
        {
            "component_appid": RETAIL.appid,
            "authorizer_appid": OA,
            "sent_at": int(sim.clock.now),
            "message": message,
        }
    ]


async def test_menu_create_then_get(sim: Sim) -> None:
    token = await sim.account(OA, [15])
    assert await sim.errcode("/cgi-bin/menu/get", token=token, method="GET") == 46003
    menu = {"button": [{"type": "click", "name": "Hi", "key": "HI"}]}
    assert (await sim.wechat("/cgi-bin/menu/create", menu, token=token))["errcode"] == 0
    assert await sim.wechat("/cgi-bin/menu/get", token=token, method="GET") == {"menu": menu}
    assert await sim.errcode("/cgi-bin/menu/create", {"button": []}, token=token) == 40016


async def test_jsapi_ticket_is_cached_until_expired(sim: Sim) -> None:
    token = await sim.account(OA, [1])
    first = await sim.wechat("/cgi-bin/ticket/getticket", token=token, method="GET", type="jsapi")
    assert (first["errcode"], first["errmsg"], first["expires_in"]) == (0, "ok", 7200)
    await sim.advance(100)
    again = await sim.wechat("/cgi-bin/ticket/getticket", token=token, method="GET", type="jsapi")
    assert (again["ticket"], again["expires_in"]) == (first["ticket"], 7100)
    assert (await sim.control("POST", "/expire", {"what": "jsapi", "appid": OA}))["count"] == 1
    fresh = await sim.wechat("/cgi-bin/ticket/getticket", token=token, method="GET", type="jsapi")
    assert fresh["ticket"] != first["ticket"]
    assert fresh["expires_in"] == 7200


async def test_wxa_code_is_a_valid_png_that_depends_on_the_path(sim: Sim) -> None:
    token = await sim.account(MP, [17], kind="mini_program")
    response = await sim.client.post(
        "/wxa/getwxacode", params={"access_token": token}, json={"path": "pages/a"}
    )
    assert response.headers["content-type"] == "image/png"
    png = response.content
    assert png[:8] == PNG_SIGNATURE
    chunks = {}
    offset = 8
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        kind, data = png[offset + 4 : offset + 8], png[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", png[offset + 8 + length : offset + 12 + length])
        assert crc == zlib.crc32(kind + data)
        chunks[kind] = data
        offset += 12 + length
    width, height, depth, color = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, color) == (8, 0)
    assert len(zlib.decompress(chunks[b"IDAT"])) == height * (width + 1)
    assert list(chunks)[-1] == b"IEND"

    other = await sim.client.post("/wxa/getwxacode", params={"access_token": token}, json={"path": "pages/b"})
    assert other.content[:8] == PNG_SIGNATURE
    assert other.content != png


async def test_wxa_code_is_for_mini_programs_with_set_17(sim: Sim) -> None:
    official = await sim.account(OA, [17])
    assert await sim.errcode("/wxa/getwxacode", {"path": "p"}, token=official) == 48001
    mini = await sim.account(MP, [18], kind="mini_program")
    assert await sim.errcode("/wxa/getwxacode", {"path": "p"}, token=mini) == 48001


async def test_media_upload_and_download_round_trip_byte_exact(sim: Sim) -> None:
    token = await sim.account(OA, [11])
    content = bytes(range(256)) * 40
    response = await sim.client.post(
        "/cgi-bin/media/upload",
        params={"access_token": token, "type": "image"},
        files={"media": ("photo.jpg", content, "image/jpeg")},
    )
    uploaded = response.json()
    assert uploaded["type"] == "image"
    assert uploaded["created_at"] == int(sim.clock.now)
    download = await sim.client.get(
        "/cgi-bin/media/get", params={"access_token": token, "media_id": uploaded["media_id"]}
    )
    assert download.status_code == 200
    assert download.content == content
    assert download.headers["content-type"] == "image/jpeg"
    assert 'filename="photo.jpg"' in download.headers["content-disposition"]

    await sim.advance(3 * 86400)
    token = await sim.account(OA, [11])
    gone = {"media_id": uploaded["media_id"]}
    assert await sim.errcode("/cgi-bin/media/get", token=token, method="GET", **gone) == 40007


async def test_media_upload_refusals(sim: Sim) -> None:
    token = await sim.account(OA, [11])
    files = {"media": ("a.bin", b"abc", "application/octet-stream")}
    wrong_type = await sim.client.post(
        "/cgi-bin/media/upload", params={"access_token": token, "type": "doc"}, files=files
    )
    assert wrong_type.json()["errcode"] == 40004
    no_file = await sim.client.post(
        "/cgi-bin/media/upload",
        params={"access_token": token, "type": "image"},
        files={"other": ("a", b"x", "image/png")},
    )
    assert no_file.json()["errcode"] == 41005
    assert await sim.errcode("/cgi-bin/media/get", token=token, method="GET", media_id="nope") == 40007


async def test_clear_quota_ten_a_month_and_only_for_the_tokens_account(sim: Sim) -> None:
    component = await sim.component_token()
    assert await sim.errcode("/cgi-bin/clear_quota", {"appid": OA}, token=component) == 40013
    for _ in range(10):
        ok = await sim.wechat("/cgi-bin/clear_quota", {"appid": RETAIL.appid}, token=component)
        assert ok == {"errcode": 0, "errmsg": "ok"}
    assert await sim.errcode("/cgi-bin/clear_quota", {"appid": RETAIL.appid}, token=component) == 48006
    await sim.advance(31 * 86400)  # a new month
    component = await sim.component_token()
    assert (await sim.wechat("/cgi-bin/clear_quota", {"appid": RETAIL.appid}, token=component))[
        "errcode"
    ] == 0


async def test_clear_quota_lifts_that_accounts_45009(sim: Sim) -> None:
    token = await sim.account(OA, [2])
    other = await sim.account(MP, [2], kind="mini_program")
    await sim.control("POST", "/faults", {"endpoint": "user/get", "errcode": 45009})  # everyone's quota
    await sim.control("POST", "/faults", {"endpoint": "menu/get", "errcode": 45009, "key": OA})
    assert await sim.errcode("/cgi-bin/user/get", token=token, method="GET") == 45009

    assert (await sim.wechat("/cgi-bin/clear_quota", {"appid": OA}, token=token))["errcode"] == 0
    assert "total" in await sim.wechat("/cgi-bin/user/get", token=token, method="GET")
    assert await sim.errcode("/cgi-bin/user/get", token=other, method="GET") == 45009
    faults = await sim.control("GET", "/faults")
    assert [(f["spec"]["endpoint"], f["exempt"]) for f in faults] == [("user/get", [OA])]
