"""No secret leaves the gateway where it should not (issue 8 §5).

Canaries are planted in every secret the gateway holds: the components' appsecrets, message tokens and
EncodingAESKeys, the clients' keys, a subscriber's webhook secret and the at-rest key. Every access token,
verify ticket, JS-SDK ticket and authorization code WeChat (the simulator) issues during the test is
harvested as it is minted, its refresh tokens from its state; gateway tokens and the auditor's session
token as the gateway hands them out. The app is then exercised broadly, error paths and
upstream faults included, with every logger captured at DEBUG, and searched: every log record, every
response the gateway gave (to clients, to browsers and to WeChat's pushes), the OpenAPI schema, the
catalog, its CSV, the audit log and what subscribers received. Last, every table is read raw.

A secret shows up in exactly the places that exist to hand it out, and nowhere else: the authorizer token
in ``GET /v1/authorizers/{appid}/access-token``, the JS-SDK ticket in ``…/jsapi-ticket``, a gateway token
in ``/wx/cgi-bin/token`` and the session token in the ``Set-Cookie`` of the sign-in. Each is allowed only
in its own response; those responses are still searched for every other secret.

The simulator stands for WeChat, which knows every token: its own log records are not searched.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
import secrets
import string
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import yaml
from sqlalchemy import select

from gateway.crypto import MessageCrypto, SecretBox
from gateway.http.sessions import SESSION_COOKIE
from gateway.registry.model import Registry, parse_registry
from gateway.simulator.state import World as SimWorld
from gateway.simulator.tokens import TokenBook
from gateway.store.tables import metadata
from tests.conftest import CLIENT_KEYS, PLATFORM_SECRETS, REGISTRY_YAML, registry_environ, wechat_crypto
from tests.support.flows import push_ticket
from tests.support.subscriber import Subscriber, served_subscriber
from tests.support.world import FINANCE, MINI, OA, RETAIL, World

NEW = "wxe0000000000005"  # onboarded during the test
GROUP_OPEN = "wx0pen0000000001"
WRONG_KEY = "canary-wrong-client-key-" + secrets.token_hex(8)
SIMULATOR_LOGGERS = "gateway.simulator"


def _alnum(prefix: str, length: int) -> str:
    alphabet = string.ascii_letters + string.digits
    return prefix + "".join(secrets.choice(alphabet) for _ in range(length - len(prefix)))


@dataclass
class Canaries:
    """Every secret of the test, by what it is, and what may show each one where."""

    planted: dict[str, str]  # name -> value: in the registry, the environment, the client keys
    issued: dict[str, set[str]] = field(default_factory=dict)  # kind -> values WeChat or the gateway issued

    def add(self, kind: str, value: str) -> None:
        self.issued.setdefault(kind, set()).add(value)

    def all(self) -> dict[str, str]:
        """value -> a name for it (the name, not the value, goes in assertion messages)."""
        found = {value: name for name, value in self.planted.items()}
        for kind, values in self.issued.items():
            found |= {value: f"{kind} #{i}" for i, value in enumerate(sorted(values))}
        return found

    def hits(self, text: str, allowed: frozenset[str] = frozenset()) -> list[str]:
        """The names of the secrets ``text`` shows, but those in ``allowed``."""
        return sorted(name for value, name in self.all().items() if value not in allowed and value in text)


@pytest.fixture
def canaries(monkeypatch: pytest.MonkeyPatch) -> Canaries:
    """Canary secrets in the test platforms and clients (the simulator's components take them too), and
    harvesting of what the simulator issues."""
    planted: dict[str, str] = {}
    for platform_id, values in PLATFORM_SECRETS.items():
        canary = {
            "secret": f"canary-appsecret-{platform_id}-{secrets.token_hex(8)}",
            "token": _alnum(f"canaryTok{platform_id}", 32),
            "aes_key": _alnum(f"canaryAes{platform_id}", 43),
        }
        for what, value in canary.items():
            monkeypatch.setitem(values, what, value)
            planted[f"{platform_id} {what}"] = value
    for client_id in list(CLIENT_KEYS):
        key = f"canary-client-key-{client_id}-{secrets.token_urlsafe(12)}"
        planted[f"client key {client_id}"] = key
    planted["webhook secret"] = f"canary-webhook-secret-{secrets.token_hex(8)}"
    planted["wrong client key"] = WRONG_KEY
    found = Canaries(planted)

    def harvest(owner: type, name: str, kind: str, pick: Callable[[Any], str]) -> None:
        original = getattr(owner, name)

        def recording(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            found.add(kind, pick(result))
            return result

        monkeypatch.setattr(owner, name, recording)

    harvest(TokenBook, "mint", "access token", lambda token: token.value)
    harvest(SimWorld, "issue_ticket", "verify ticket", lambda issued: issued[0])
    harvest(SimWorld, "ticket", "jsapi ticket", lambda ticket: ticket.ticket)
    harvest(SimWorld, "approve", "authorization code", lambda approval: approval.auth_code)
    return found


@pytest.fixture
def at_rest_key(canaries: Canaries) -> bytes:
    key = secrets.token_bytes(32)
    canaries.planted["GATEWAY_SECRET_KEY"] = base64.b64encode(key).decode()
    canaries.planted["GATEWAY_SECRET_KEY (hex)"] = key.hex()
    return key


@pytest.fixture
def secret_box(at_rest_key: bytes) -> SecretBox:
    """The at-rest key, a canary too."""
    return SecretBox(at_rest_key)


@pytest.fixture
def subscriber(canaries: Canaries) -> Iterator[tuple[Subscriber, str]]:
    """crm's subscriber, on a loopback socket, with the canary webhook secret."""
    with served_subscriber(canaries.planted["webhook secret"]) as served:
        yield served


@pytest.fixture
def registry(
    canaries: Canaries,
    subscriber: tuple[Subscriber, str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> Registry:
    """The test registry with the canaries in it, and a subscription for crm. Logging at DEBUG from here
    on: the world the test runs in is built after this fixture, and its building is searched too."""
    caplog.set_level(logging.DEBUG)
    # Every logger, whatever an earlier test in this process set it to (the CLI quiets some).
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and logger.level != logging.NOTSET:
            caplog.set_level(logging.DEBUG, logger=name)
    document = REGISTRY_YAML
    for client_id, key in list(CLIENT_KEYS.items()):
        canary = canaries.planted[f"client key {client_id}"]
        document = document.replace(
            hashlib.sha256(key.encode()).hexdigest(), hashlib.sha256(canary.encode()).hexdigest()
        )
        monkeypatch.setitem(CLIENT_KEYS, client_id, canary)
    subscription = {"client": "crm", "url": subscriber[1] + "/inbox", "secret": "${CRM_WEBHOOK_SECRET}"}
    document += yaml.safe_dump({"subscriptions": [subscription]})
    environ = registry_environ() | {"CRM_WEBHOOK_SECRET": canaries.planted["webhook secret"]}
    return parse_registry(document, source="canaries.yaml", environ=environ)


@dataclass(frozen=True)
class Seen:
    """A response the gateway gave, as text, and the secrets it may show by design."""

    what: str
    text: str
    allowed: frozenset[str]


class Responses:
    """Every response of the gateway to the test's client, read whole, with the secret each hands out."""

    def __init__(self, canaries: Canaries) -> None:
        self.seen: list[Seen] = []
        self._canaries = canaries

    async def __call__(self, response: httpx.Response) -> None:
        await response.aread()
        request = response.request
        headers = "\n".join(f"{name}: {value}" for name, value in response.headers.multi_items())
        text = f"{response.status_code} {response.reason_phrase}\n{headers}\n\n{response.text}"
        what = f"{request.method} {request.url.path} -> {response.status_code}"
        self.seen.append(Seen(what, text, self._handed_out(request, response)))

    def _handed_out(self, request: httpx.Request, response: httpx.Response) -> frozenset[str]:
        """What this response exists to hand out, harvested here; nothing for any other response."""
        path = request.url.path
        if path == "/catalog/login" and SESSION_COOKIE in response.cookies:
            return self._issued("session token", response.cookies[SESSION_COOKIE])
        if path == "/wx/cgi-bin/token":
            kind, member = "gateway token", "access_token"
        elif path.startswith("/v1/authorizers/") and path.endswith("/access-token"):
            kind, member = "authorizer token handed out", "access_token"
        elif path.startswith("/v1/authorizers/") and path.endswith("/jsapi-ticket"):
            kind, member = "jsapi ticket handed out", "ticket"
        else:
            return frozenset()
        # Refusals on /wx come with 200 too (WeChat's shape): only a value handed out counts.
        body = response.json() if response.status_code == 200 else {}
        return self._issued(kind, body[member]) if member in body else frozenset()

    def _issued(self, kind: str, value: str) -> frozenset[str]:
        self._canaries.add(kind, value)
        return frozenset({value})


def log_text(record: logging.LogRecord) -> str:
    """All a log record carries: the line it formats to (exception and stack included) and every
    attribute (its arguments, and any extra fields a structured logger adds)."""
    return logging.Formatter("%(name)s %(levelname)s %(message)s").format(record) + "\n" + repr(vars(record))


def bearer(client_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {CLIENT_KEYS[client_id]}"}


async def exercise(world: World, subscriber: Subscriber) -> None:
    """Everything a day brings, good and bad, through every door of the gateway."""
    gateway = world.gateway

    # Token vending, scopes and refusals.
    for appid in (OA, MINI):
        assert (await world.token(appid)).status_code == 200
    assert (await world.token(OA, kind="jsapi-ticket")).status_code == 200
    assert (await world.token(OA, client="limited")).status_code == 200
    assert (await world.token(MINI, client="limited")).status_code == 403
    assert (await world.token(OA, client="audit")).status_code == 403
    for headers in ({"Authorization": f"Bearer {WRONG_KEY}"}, {"Authorization": WRONG_KEY}, {}):
        answer = await gateway.get(f"/v1/authorizers/{OA}/access-token", headers=headers)
        assert answer.status_code == 401

    # The proxy: a gateway token, calls, refusals.
    token = await gateway.get(
        "/wx/cgi-bin/token",
        params={"grant_type": "client_credential", "appid": OA, "secret": CLIENT_KEYS["crm"]},
    )
    gateway_token = token.json()["access_token"]
    users = await gateway.get("/wx/cgi-bin/user/get", params={"access_token": gateway_token})
    assert users.json()["total"] >= 1
    menu = {"button": [{"type": "click", "name": "Hi", "key": "hi"}]}
    await gateway.post("/wx/cgi-bin/menu/create", params={"access_token": gateway_token}, json=menu)
    await gateway.get("/wx/cgi-bin/user/get", headers=bearer("crm") | {"X-Authorizer-Appid": OA})
    authorizer_token = (await world.token(OA)).json()["access_token"]
    for refused in (WRONG_KEY, authorizer_token, CLIENT_KEYS["crm"], gateway_token + "x"):
        answer = await gateway.get("/wx/cgi-bin/user/get", params={"access_token": refused})
        assert answer.json()["errcode"] != 0
    for secret in (WRONG_KEY, CLIENT_KEYS["audit"]):
        answer = await gateway.get(
            "/wx/cgi-bin/token", params={"grant_type": "client_credential", "appid": OA, "secret": secret}
        )
        assert answer.json()["errcode"] != 0
    # Component APIs answer with refresh tokens: they come through the proxy blanked.
    component = "/wx/component/retail/cgi-bin/component"
    listing = {"component_appid": RETAIL["appid"], "offset": 0, "count": 10}
    authorizers = await gateway.post(
        f"{component}/api_get_authorizer_list", headers=bearer("ops"), json=listing
    )
    assert {item["refresh_token"] for item in authorizers.json()["list"]} == {""}
    assert (
        await gateway.post(f"{component}/api_get_authorizer_list", headers=bearer("crm"))
    ).status_code == 200
    info = await gateway.post(
        f"{component}/api_get_authorizer_info",
        headers=bearer("ops"),
        json={"component_appid": RETAIL["appid"], "authorizer_appid": OA},
    )
    assert info.json()["authorization_info"]["authorizer_refresh_token"] == ""
    assert info.json()["authorizer_info"]["nick_name"]  # the rest passes as it came

    # Onboarding: a link, the administrator's approval, the landing page, binding.
    link = await gateway.post(
        "/v1/platforms/retail/authorization-links", json={}, headers=bearer("onboarding")
    )
    query = {k: v[0] for k, v in parse_qs(urlsplit(link.json()["pc_url"]).query).items()}
    approval = await world.sim.post(
        f"/sim/pre-auth-codes/{query['pre_auth_code']}/approve",
        json={
            "authorizer_appid": NEW,
            "func_ids": [1, 2, 24],
            "redirect_uri": query["redirect_uri"],
            "kind": "official_account",
            "nick_name": "New Account",
            "principal_name": "ACME Co., Ltd.",
        },
    )
    landing = urlsplit(approval.json()["redirect_url"])
    assert (await gateway.get(f"{landing.path}?{landing.query}")).status_code == 200
    await world.services.authorizations.process_pending()
    assert (
        await gateway.get("/wechat/retail/authorized", params={"auth_code": "queryauthcode@@@bogus"})
    ).status_code >= 400
    await world.sim.post(
        "/sim/open-accounts",
        json={
            "open_appid": GROUP_OPEN,
            "principal_name": "ACME Co., Ltd.",
            "verified": True,
            "created_by_api": False,
        },
    )
    await gateway.post(f"/v1/authorizers/{NEW}/open-binding", headers=bearer("onboarding"))
    await gateway.post(f"/v1/authorizers/{MINI}/open-binding", headers=bearer("onboarding"))

    # A user message, forwarded to the subscriber (who fails once).
    subscriber.status = 500
    relayed = await world.sim.post(
        f"/sim/components/{RETAIL['appid']}/messages",
        json={"authorizer_appid": OA, "fields": {"MsgType": "text", "Content": "hello"}},
    )
    assert relayed.status_code == 200
    await wait_for(lambda: len(subscriber.received) >= 1)
    subscriber.status = 200
    await wait_for(lambda: any(d.status == 200 for d in subscriber.received))

    # Catalog sync, the catalog, its CSV, the audit log, deliveries, health and the schema.
    await world.services.catalog_sync.run()
    await world.services.audit.flush()
    for path in ("/v1/catalog", "/v1/catalog.csv", "/v1/audit-log", "/v1/deliveries"):
        assert (await gateway.get(path, headers=bearer("ops"))).status_code == 200, path
        await gateway.get(path, headers={"Authorization": f"Bearer {WRONG_KEY}"})
    for path in ("/healthz", "/readyz", "/metrics", "/schema/openapi.json", "/schema/openapi.yaml"):
        await gateway.get(path)

    # The auditors' pages, signed in, then out.
    await sign_in(gateway, WRONG_KEY)
    await sign_in(gateway, CLIENT_KEYS["crm"])
    signed_in = await sign_in(gateway, CLIENT_KEYS["audit"])
    assert signed_in.status_code == 303
    for path in ("/catalog", "/catalog?q=acme", "/catalog/export.csv", "/catalog/audit", f"/catalog/{OA}"):
        assert (await gateway.get(path)).status_code == 200, path
    page = await gateway.get("/catalog")
    await gateway.post("/catalog/logout", data={"_csrf_token": csrf_token(page.text)})

    # Bad pushes, fresh but forged: a wrong signature, a message under another key, not base64, garbage.
    crypto = wechat_crypto("retail")
    forger = MessageCrypto(RETAIL["token"], _alnum("forgedAes", 43), RETAIL["appid"])
    ticket = b"<xml><AppId>x</AppId><InfoType>component_verify_ticket</InfoType></xml>"
    for path in ("/wechat/retail/events", f"/wechat/retail/messages/{OA}"):
        for encrypt, signed_by in (
            (crypto.encrypt(ticket), None),
            (forger.encrypt(ticket), crypto),
            ("!!not-base64", crypto),
        ):
            timestamp, nonce = str(int(time.time())), secrets.token_hex(4)
            signature = signed_by.sign(timestamp, nonce, encrypt) if signed_by else "0" * 40
            params = {
                "timestamp": timestamp,
                "nonce": nonce,
                "msg_signature": signature,
                "encrypt_type": "aes",
            }
            answer = await gateway.post(
                path, params=params, content=f"<xml><Encrypt>{encrypt}</Encrypt></xml>"
            )
            assert 400 <= answer.status_code < 500, answer.text
        await gateway.post(path, params=params, content=b"\x00garbage<xml")
        await gateway.post(path, content=b"")

    # Upstream faults: on a proxied call, then on token renewals with every token expired. 61023 comes
    # late and hits OA only: it leaves the authorization waiting for its administrator.
    for fault in ({"errcode": 40001}, {"errcode": -1}, {"http_status": 502}, {"malformed": True}):
        await world.fault(endpoint="user/get", **fault)
        await gateway.get("/wx/cgi-bin/user/get", params={"access_token": gateway_token})
        await world.sim.delete("/sim/faults")
    for fault in (
        {"endpoint": "api_component_token", "errcode": 61006},
        {"endpoint": "api_authorizer_token", "errcode": -1},
        {"endpoint": "api_authorizer_token", "http_status": 503},
        {"endpoint": "api_authorizer_token", "malformed": True},
        {"endpoint": "*", "http_status": 500},
        {"endpoint": "api_authorizer_token", "errcode": 61023, "key": OA},
        {"endpoint": "api_authorizer_token", "errcode": 45009},
    ):
        await world.expire_everything()
        await world.fault(**fault)
        await world.token(OA)
        await world.token(MINI, kind="jsapi-ticket")
        await gateway.get("/wx/cgi-bin/user/get", params={"access_token": gateway_token})
        await world.services.tokens.renew_due()
        await world.sim.delete("/sim/faults")
        for values in (RETAIL, FINANCE):  # after a refused ticket, the gateway waits for the next
            await push_ticket(world.sim, values["appid"])
    await world.fault(endpoint="*", http_status=500)
    await world.services.catalog_sync.run()
    await world.sim.delete("/sim/faults")
    await world.services.audit.flush()


def csrf_token(html: str) -> str:
    """The CSRF token of a page's form."""
    match = re.search(r'name="_csrf_token" value="([^"]+)"', html)
    assert match, "no form with a CSRF token"
    return match.group(1)


async def sign_in(gateway: httpx.AsyncClient, key: str) -> httpx.Response:
    form = await gateway.get("/catalog/login")
    return await gateway.post("/catalog/login", data={"key": key, "_csrf_token": csrf_token(form.text)})


async def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_no_secret_leaks_anywhere(
    stocked: World,
    canaries: Canaries,
    subscriber: tuple[Subscriber, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = stocked
    responses = Responses(canaries)
    world.gateway.event_hooks["response"].append(responses)
    stop = asyncio.Event()
    worker = asyncio.create_task(world.services.deliveries.run_worker(stop))
    try:
        await exercise(world, subscriber[0])
    finally:
        stop.set()
        await worker
    # No authorization was approved twice: the refresh tokens in force are every one WeChat issued.
    for authorization in (await world.sim.get("/sim/state")).json()["authorizations"]:
        canaries.add("refresh token", authorization["refresh_token"])
    assert {"access token", "verify ticket", "jsapi ticket", "authorization code", "refresh token"} <= set(
        canaries.issued
    )
    assert {"authorizer token handed out", "gateway token", "session token"} <= set(canaries.issued)

    leaks: list[str] = []
    records = [*caplog.get_records("setup"), *caplog.get_records("call")]
    assert any(r.levelno == logging.DEBUG for r in records)  # DEBUG was on
    for record in records:
        if record.name.startswith(SIMULATOR_LOGGERS):
            continue
        leaks += [f"log {record.name} {record.levelname}: {hit}" for hit in canaries.hits(log_text(record))]
    for seen in responses.seen:
        leaks += [f"response {seen.what}: {hit}" for hit in canaries.hits(seen.text, seen.allowed)]
    # The gateway's answers to WeChat's pushes and relayed messages.
    for log in ("/sim/pushes", "/sim/relays"):
        answers = (await world.sim.get(log)).text
        leaks += [f"answer to WeChat ({log}): {hit}" for hit in canaries.hits(answers)]
    for delivery in subscriber[0].received:
        received = f"{delivery.headers}\n{delivery.body.decode(errors='replace')}"
        leaks += [f"delivery to subscriber: {hit}" for hit in canaries.hits(received)]
    assert not leaks, "\n".join(leaks)

    # The documents named in the issue were among the responses searched.
    searched = {seen.what for seen in responses.seen}
    for document in (
        "/schema/openapi.json",
        "/v1/catalog",
        "/v1/catalog.csv",
        "/v1/audit-log",
        "/catalog/export.csv",
    ):
        assert any(what.startswith(f"GET {document} -> 200") for what in searched), document

    # The database holds no secret in plaintext: every table read raw.
    raw: list[str] = []
    async with world.services.store.engine.connect() as conn:
        for table in metadata.sorted_tables:
            rows = (await conn.execute(select(table))).all()
            raw += [f"{table.name}: {hit}" for hit in canaries.hits(repr(rows))]
    assert not raw, "\n".join(raw)
