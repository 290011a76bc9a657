"""The authorization event URL through HTTP, with pushes encrypted by wechatpy as WeChat would send them."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import AsyncTestClient, TestClient
from sqlalchemy import text
from wechatpy.crypto import WeChatCrypto

from gateway.crypto import MessageCrypto, SecretBox
from gateway.http.app import create_app
from gateway.registry.model import Registry
from gateway.store import Store, create_engine
from gateway.xml import Authorized, build_xml, parse_xml
from tests.conftest import PLATFORM_SECRETS, make_settings, wechat_crypto

Client = AsyncTestClient  # type: ignore[type-arg]


class Harness:
    """The app plus a direct view of its database, to prove what was (not) stored."""

    def __init__(self, client: Client, store: Store) -> None:
        self.client = client
        self.store = store

    async def counts(self) -> tuple[int, int]:
        async with self.store.engine.connect() as conn:
            pushes = (await conn.execute(text("SELECT count(*) FROM component_pushes"))).scalar_one()
            tickets = (await conn.execute(text("SELECT count(*) FROM component_tickets"))).scalar_one()
        return pushes, tickets


@pytest.fixture
async def harness(registry: Registry, database_url: str, secret_box: SecretBox) -> AsyncIterator[Harness]:
    app = create_app(make_settings(database_url, secret_box), registry)
    engine = create_engine(database_url)
    async with AsyncTestClient(app=app) as client:
        yield Harness(client, Store(engine, secret_box))
    await engine.dispose()


def ticket_xml(platform_id: str, ticket: str = "ticket@@@abc", create_time: int | None = None) -> str:
    return build_xml(
        {
            "AppId": PLATFORM_SECRETS[platform_id]["appid"],
            "CreateTime": create_time or int(time.time()),
            "InfoType": "component_verify_ticket",
            "ComponentVerifyTicket": ticket,
        }
    )


def wechatpy_push(
    platform_id: str,
    xml: str,
    *,
    nonce: str = "1320562132",
    timestamp: str | None = None,
    envelope_appid: str | None = None,
) -> tuple[dict[str, str], bytes]:
    """Query and body of a push, encrypted and signed by wechatpy (an independent implementation); the
    timestamp is now unless given (the gateway refuses one outside its window)."""
    timestamp = timestamp or str(int(time.time()))
    values = PLATFORM_SECRETS[platform_id]
    reply = WeChatCrypto(values["token"], values["aes_key"], values["appid"]).encrypt_message(
        xml, nonce, timestamp
    )
    fields = {child.tag: child.text or "" for child in parse_xml(reply)}
    appid = envelope_appid if envelope_appid is not None else values["appid"]
    body = f"<xml><AppId><![CDATA[{appid}]]></AppId><Encrypt><![CDATA[{fields['Encrypt']}]]></Encrypt></xml>"
    query = {
        "signature": "ignored-by-the-gateway",
        "timestamp": timestamp,
        "nonce": nonce,
        "encrypt_type": "aes",
        "msg_signature": fields["MsgSignature"],
    }
    return query, body.encode()


def signed_push(
    crypto: MessageCrypto, plaintext: bytes, *, appid: str, token: str | None = None
) -> tuple[dict[str, str], bytes]:
    """A push of arbitrary plaintext, correctly signed: for faults only the decrypted content shows."""
    encrypt = crypto.encrypt(plaintext)
    now = str(int(time.time()))
    sign = crypto.sign(now, "42", encrypt)
    body = f"<xml><AppId><![CDATA[{appid}]]></AppId><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    return {
        "timestamp": now,
        "nonce": "42",
        "encrypt_type": "aes",
        "msg_signature": sign,
    }, body.encode()


async def test_ticket_push_is_stored_and_answered_success(harness: Harness) -> None:
    query, body = wechatpy_push("retail", ticket_xml("retail", "ticket@@@first"))
    response = await harness.client.post("/wechat/retail/events", params=query, content=body)
    assert (response.status_code, response.text) == (200, "success")
    stored = await harness.store.ticket("retail")
    assert stored is not None
    assert stored.ticket == "ticket@@@first"

    ready = (await harness.client.get("/readyz")).json()
    assert ready["status"] == "ready"
    by_id = {p["id"]: p for p in ready["platforms"]}
    assert by_id["retail"]["ticket_age_s"] is not None
    assert by_id["retail"]["ticket_age_s"] < 60
    assert by_id["retail"]["problem"] is None
    assert by_id["finance"] == {
        "id": "finance",
        "ticket_age_s": None,
        "component_token_expires_in": None,
        "problem": "no component_verify_ticket received yet",
    }


async def test_a_push_seen_twice_is_acknowledged_and_processed_once(harness: Harness) -> None:
    query, body = wechatpy_push("retail", ticket_xml("retail", "ticket@@@once"))
    receipts = []
    for _ in range(3):
        response = await harness.client.post("/wechat/retail/events", params=query, content=body)
        assert (response.status_code, response.text) == (200, "success")
        receipts.append(await harness.store.ticket_receipts())
    # The stored ticket is the push's replay guard: the retries did not even touch when it was received.
    assert receipts[0] == receipts[1] == receipts[2] != {}
    assert await harness.counts() == (0, 1)


async def test_the_body_wechatpy_builds_without_appid_is_accepted(harness: Harness) -> None:
    values = PLATFORM_SECRETS["finance"]
    now = str(int(time.time()))
    reply = WeChatCrypto(values["token"], values["aes_key"], values["appid"]).encrypt_message(
        ticket_xml("finance", "ticket@@@bare"), "777", now
    )
    fields = {child.tag: child.text or "" for child in parse_xml(reply)}
    query = {"timestamp": now, "nonce": "777", "msg_signature": fields["MsgSignature"]}
    response = await harness.client.post("/wechat/finance/events", params=query, content=reply.encode())
    assert (response.status_code, response.text) == (200, "success")
    stored = await harness.store.ticket("finance")
    assert stored is not None
    assert stored.ticket == "ticket@@@bare"


async def test_single_url_form_finds_the_platform_by_appid(harness: Harness) -> None:
    query, body = wechatpy_push("finance", ticket_xml("finance", "ticket@@@shared"))
    response = await harness.client.post("/wechat/events", params=query, content=body)
    assert (response.status_code, response.text) == (200, "success")
    assert await harness.store.ticket("retail") is None
    stored = await harness.store.ticket("finance")
    assert stored is not None
    assert stored.ticket == "ticket@@@shared"


async def test_authorization_events_are_recorded_for_onboarding(harness: Harness) -> None:
    xml = build_xml(
        {
            "AppId": PLATFORM_SECRETS["retail"]["appid"],
            "CreateTime": 1700000000,
            "InfoType": "authorized",
            "AuthorizerAppid": "wxa0000000000001",
            "AuthorizationCode": "queryauthcode@@@x",
            "AuthorizationCodeExpiredTime": 1700003600,
            "PreAuthCode": "preauthcode@@@y",
        }
    )
    query, body = wechatpy_push("retail", xml)
    assert (await harness.client.post("/wechat/retail/events", params=query, content=body)).text == "success"
    pending = await harness.store.pending_authorization_events()
    assert [(p.platform_id, p.event) for p in pending] == [
        (
            "retail",
            Authorized(
                "wxc0mp000000001",
                1700000000,
                "wxa0000000000001",
                "queryauthcode@@@x",
                1700003600,
                "preauthcode@@@y",
            ),
        )
    ]


def _hostile_cases() -> dict[str, tuple[str, dict[str, str], bytes, int, str]]:
    """name -> (path, query, body, status, error code)."""
    query, body = wechatpy_push("retail", ticket_xml("retail"))
    retail = wechat_crypto("retail")
    retail_appid = PLATFORM_SECRETS["retail"]["appid"]
    cases: dict[str, tuple[str, dict[str, str], bytes, int, str]] = {
        "bad signature": (
            "/wechat/retail/events",
            {**query, "msg_signature": "0" * 40},
            body,
            403,
            "signature_invalid",
        ),
        "signature of another platform": (
            "/wechat/finance/events",
            query,
            body.replace(retail_appid.encode(), PLATFORM_SECRETS["finance"]["appid"].encode()),
            403,
            "signature_invalid",
        ),
        "signature not hex": (
            "/wechat/retail/events",
            {**query, "msg_signature": "z" * 40},
            body,
            400,
            "invalid_parameter",
        ),
        "timestamp not digits": (
            "/wechat/retail/events",
            {**query, "timestamp": "soon"},
            body,
            400,
            "invalid_parameter",
        ),
        "plaintext mode": (
            "/wechat/retail/events",
            {**query, "encrypt_type": "raw"},
            body,
            400,
            "invalid_parameter",
        ),
        "unknown platform": ("/wechat/nope/events", query, body, 404, "platform_unknown"),
        "unknown appid, shared URL": (
            "/wechat/events",
            query,
            body.replace(retail_appid.encode(), b"wxunknown0000001"),
            404,
            "platform_unknown",
        ),
        "no appid, shared URL": (
            "/wechat/events",
            query,
            body.replace(f"<AppId><![CDATA[{retail_appid}]]></AppId>".encode(), b""),
            400,
            "invalid_xml",
        ),
        "envelope appid of another platform": (
            "/wechat/retail/events",
            query,
            body.replace(retail_appid.encode(), PLATFORM_SECRETS["finance"]["appid"].encode()),
            400,
            "appid_mismatch",
        ),
        "not xml": ("/wechat/retail/events", query, b"hello", 400, "invalid_xml"),
        "empty body": ("/wechat/retail/events", query, b"", 400, "invalid_xml"),
        "xxe": (
            "/wechat/retail/events",
            query,
            b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml><Encrypt>&e;</Encrypt></xml>',
            400,
            "invalid_xml",
        ),
        "billion laughs": (
            "/wechat/retail/events",
            query,
            b'<!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
            b"<xml><Encrypt>&b;</Encrypt></xml>",
            400,
            "invalid_xml",
        ),
        "oversized": (
            "/wechat/retail/events",
            query,
            b"<xml><Encrypt>" + b"A" * 70_000 + b"</Encrypt></xml>",
            413,
            "body_too_large",
        ),
    }
    for name in ("msg_signature", "timestamp", "nonce"):
        cases[f"missing {name}"] = (
            "/wechat/retail/events",
            {k: v for k, v in query.items() if k != name},
            body,
            400,
            "missing_parameter",
        )
    other_appid = MessageCrypto(
        PLATFORM_SECRETS["retail"]["token"], PLATFORM_SECRETS["retail"]["aes_key"], "wxsomeoneelse001"
    )
    signed = {
        "trailing appid of another account": (other_appid, ticket_xml("retail").encode(), "appid_mismatch"),
        "decrypted xml with a dtd": (
            retail,
            b'<!DOCTYPE xml [<!ENTITY t "x">]><xml><AppId>wxc0mp000000001</AppId></xml>',
            "invalid_event",
        ),
        "decrypted text not xml": (retail, b"just text", "invalid_event"),
        "decrypted appid of another platform": (retail, ticket_xml("finance").encode(), "appid_mismatch"),
        # Values a database column cannot hold must be refused before they reach it.
        "create time past 64 bits": (
            retail,
            ticket_xml("retail", create_time=10**20).encode(),
            "invalid_event",
        ),
        "authorizer appid too long": (
            retail,
            build_xml(
                {
                    "AppId": retail_appid,
                    "CreateTime": 1,
                    "InfoType": "unauthorized",
                    "AuthorizerAppid": "wx" + "a" * 100,
                }
            ).encode(),
            "invalid_event",
        ),
        "info type too long": (
            retail,
            build_xml({"AppId": retail_appid, "CreateTime": 1, "InfoType": "x" * 100}).encode(),
            "invalid_event",
        ),
        "decrypted event without ticket": (
            retail,
            build_xml(
                {"AppId": retail_appid, "CreateTime": 1, "InfoType": "component_verify_ticket"}
            ).encode(),
            "invalid_event",
        ),
    }
    for name, (crypto, plaintext, code) in signed.items():
        q, b = signed_push(crypto, plaintext, appid=retail_appid)
        cases[name] = ("/wechat/retail/events", q, b, 400, code)
    encrypt = "not*base64"
    cases["encrypt not base64"] = (
        "/wechat/retail/events",
        {
            "timestamp": query["timestamp"],
            "nonce": "2",
            "msg_signature": retail.sign(query["timestamp"], "2", encrypt),
        },
        f"<xml><Encrypt>{encrypt}</Encrypt></xml>".encode(),
        400,
        "decrypt_failed",
    )
    return cases


HOSTILE = _hostile_cases()


@pytest.mark.parametrize("case", HOSTILE.values(), ids=HOSTILE.keys())
async def test_hostile_pushes_get_a_precise_4xx_and_store_nothing(
    harness: Harness, case: tuple[str, dict[str, str], bytes, int, str]
) -> None:
    path, query, body, status, code = case
    response = await harness.client.post(path, params=query, content=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]
    assert await harness.counts() == (0, 0)


async def test_healthz_and_schema_keep_secrets_out(harness: Harness) -> None:
    assert (await harness.client.get("/healthz")).json() == {"status": "ok"}
    schema = (await harness.client.get("/schema/openapi.json")).text
    assert "/wechat/{platform}/events" in schema
    for values in PLATFORM_SECRETS.values():
        for name in ("secret", "token", "aes_key"):
            assert values[name] not in schema


async def test_readyz_is_503_when_the_database_is_down(registry: Registry, secret_box: SecretBox) -> None:
    settings = make_settings("postgresql+asyncpg://postgres@127.0.0.1:1/nowhere", secret_box)
    async with AsyncTestClient(app=create_app(settings, registry, migrate=False)) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    body = msgspec.json.decode(response.content)
    assert body["status"] == "not_ready"
    assert {p["problem"] for p in body["platforms"]} == {"database unavailable"}


def test_mutated_pushes_never_fail_the_gateway_and_store_nothing_when_refused(
    registry: Registry, sqlite_url: str, secret_box: SecretBox
) -> None:
    """Random damage to a valid push: always a 2xx or 4xx, and a refusal stores nothing."""
    database = sqlite_url.removeprefix("sqlite+aiosqlite:///")

    def counts() -> tuple[object, ...]:
        """The rows of the push log, and the stored tickets with the pushes they came from."""
        with sqlite3.connect(database) as conn:
            return (
                conn.execute("SELECT count(*) FROM component_pushes").fetchone()[0],
                conn.execute(
                    "SELECT platform_id, create_time, received_at, msg_signature, nonce"
                    " FROM component_tickets ORDER BY platform_id"
                ).fetchall(),
            )

    fields = st.sampled_from(["msg_signature", "timestamp", "nonce", "encrypt_type", "body"])
    damage = st.one_of(
        st.tuples(st.just("replace"), st.text(max_size=80)),
        st.tuples(st.just("flip"), st.integers(min_value=0, max_value=10_000)),
        st.tuples(st.just("truncate"), st.integers(min_value=0, max_value=10_000)),
        st.tuples(st.just("bytes"), st.binary(max_size=300)),
    )

    with TestClient(app=create_app(make_settings(sqlite_url, secret_box), registry)) as client:

        @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(field=fields, how=damage, nonce=st.integers(min_value=1, max_value=10**12))
        def check(field: str, how: tuple[str, object], nonce: int) -> None:
            query, body = wechatpy_push("retail", ticket_xml("retail"), nonce=str(nonce))
            original = query.get(field, "").encode() if field != "body" else body
            kind, arg = how
            if kind == "replace":
                damaged = str(arg).encode()
            elif kind == "bytes":
                damaged = bytes(arg)  # type: ignore[call-overload]
            elif kind == "flip" and original:
                i = int(arg) % len(original)  # type: ignore[call-overload]
                damaged = original[:i] + bytes([original[i] ^ 0x01]) + original[i + 1 :]
            else:
                damaged = original[: int(arg) % (len(original) or 1)]  # type: ignore[call-overload]
            if field == "body":
                body = damaged
            else:
                query[field] = damaged.decode("utf-8", "replace")
            before = counts()
            response = client.post("/wechat/retail/events", params=query, content=body)
            assert response.status_code < 500, response.text
            if response.status_code != 200:
                assert counts() == before
                assert response.json()["error"]["code"]

        check()
