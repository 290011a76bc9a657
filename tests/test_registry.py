from __future__ import annotations

import contextlib
import copy
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import RegistryError
from gateway.registry.model import SCOPES, Secret, load_registry, parse_registry, principal_key

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "registry.example.yaml"

# Distinctive values, so a leak into a message or a repr is found by a plain substring search.
APPSECRET = "AppSecretLeakCanary0123456789"
TOKEN = "TokenLeakCanary42"
AES_KEY = "AesKeyLeakCanary" + "k" * 27
assert len(AES_KEY) == 43

ENV = {
    f"{name}_{part}": value
    for name in ("RETAIL", "FINANCE", "SERVICES")
    for part, value in (("APPSECRET", APPSECRET), ("TOKEN", TOKEN), ("AES_KEY", AES_KEY))
}

Doc = dict[str, Any]


def valid_doc() -> Doc:
    """A small valid registry, as the data YAML would give; tests mutate a fresh copy."""
    return copy.deepcopy(
        {
            "group": {"name": "ACME Group", "open_appid": "wx0pen0000000001"},
            "wechat": {"api_base": "http://127.0.0.1:8001/"},
            "platforms": [
                {
                    "id": "retail",
                    "name": "Retail",
                    "component_appid": "wxc0mp000000001",
                    "component_appsecret": "${RETAIL_APPSECRET}",
                    "token": "${RETAIL_TOKEN}",
                    "encoding_aes_key": "${RETAIL_AES_KEY}",
                },
                {
                    "id": "finance",
                    "name": "Finance",
                    "component_appid": "wxc0mp000000002",
                    "component_appsecret": "${FINANCE_APPSECRET}",
                    "token": "${FINANCE_TOKEN}",
                    "encoding_aes_key": "${FINANCE_AES_KEY}",
                },
            ],
            "clients": [
                {"id": "crm", "key_sha256": "A" * 64, "scopes": ["token", "proxy"], "authorizers": ["*"]},
                {
                    "id": "payments",
                    "key_sha256": "b" * 64,
                    "scopes": ["token"],
                    "authorizers": ["wxa0000000000001", "wxb0000000000002"],
                },
            ],
            "pins": {"wxb0000000000002": "finance"},
        }
    )


def dump(doc: object) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "registry.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def refused(tmp_path: Path, text: str, environ: dict[str, str] = ENV) -> RegistryError:
    path = write(tmp_path, text)
    with pytest.raises(RegistryError) as caught:
        load_registry(path, environ)
    error = caught.value
    assert str(error).startswith(f"{path}: ")
    assert error.source == str(path)
    return error


# -- loading ------------------------------------------------------------------------------------------


def test_example_file_loads() -> None:
    registry = load_registry(EXAMPLE, ENV)

    assert registry.group.open_appid == "wx0pen0000000001"
    assert registry.wechat.api_base == "http://127.0.0.1:8001"
    assert registry.wechat.authorization_page_base == "http://127.0.0.1:8001"  # the simulator's pages
    assert [p.id for p in registry.platforms] == ["retail", "finance", "services"]
    assert len(registry.clients) >= 4
    assert dict(registry.pins) == {"wxb0000000000002": "finance"}
    retail = registry.platform("retail")
    assert retail is not None
    assert retail.component_appsecret.reveal() == APPSECRET
    assert retail.token.reveal() == TOKEN
    assert retail.encoding_aes_key.reveal() == AES_KEY


def test_example_demo_keys_match_their_clients() -> None:
    registry = load_registry(EXAMPLE, ENV)

    for client_id in ("crm", "payments", "onboarding", "audit", "ops"):
        digest = hashlib.sha256(f"demo-{client_id}-key".encode()).hexdigest()
        client = registry.client_for_key_sha256(digest)
        assert client is not None
        assert client.id == client_id
    payments = registry.client("payments")
    assert payments is not None
    assert payments.authorizers == ("wxa0000000000001", "wxb0000000000002")
    assert registry.client("crm") is not None
    assert registry.client("crm").authorizers == ("*",)  # type: ignore[union-attr]


def test_lookups_and_normalization(tmp_path: Path) -> None:
    registry = load_registry(write(tmp_path, dump(valid_doc())), ENV)

    assert registry.wechat.api_base == "http://127.0.0.1:8001"  # trailing slash dropped
    doc = valid_doc()
    doc["wechat"]["authorization_page_base"] = "http://127.0.0.1:8001/"
    moved = load_registry(write(tmp_path, dump(doc)), ENV)
    assert moved.wechat.authorization_page_base == "http://127.0.0.1:8001"  # trailing slash dropped
    assert registry.client("crm").key_sha256 == "a" * 64  # type: ignore[union-attr]
    assert registry.client_for_key_sha256("A" * 64) is registry.client("crm")
    assert registry.client_for_key_sha256("c" * 64) is None
    assert registry.client("nope") is None
    assert registry.platform_by_appid("wxc0mp000000002") is registry.platform("finance")
    assert registry.platform_by_appid("wxother") is None
    assert registry.platform("nope") is None
    with pytest.raises(TypeError):
        registry.pins["wx1"] = "retail"  # type: ignore[index]


def test_defaults_for_optional_sections(tmp_path: Path) -> None:
    doc = valid_doc()
    del doc["wechat"], doc["pins"], doc["clients"][0]["authorizers"]

    registry = load_registry(write(tmp_path, dump(doc)), ENV)

    assert registry.wechat.api_base == "https://api.weixin.qq.com"
    assert registry.wechat.authorization_page_base is None  # WeChat's own pages
    assert dict(registry.pins) == {}
    assert registry.clients[0].authorizers == ("*",)
    assert registry.clients[0].rate_limit is None  # unlimited


def test_variable_inside_a_longer_string(tmp_path: Path) -> None:
    doc = valid_doc()
    doc["group"]["name"] = "ACME ${DIVISION} Group (${REGION})"
    doc["wechat"]["api_base"] = "http://${SIM_HOST}:8001"

    registry = load_registry(
        write(tmp_path, dump(doc)), {**ENV, "DIVISION": "Retail", "REGION": "EU", "SIM_HOST": "sim"}
    )

    assert registry.group.name == "ACME Retail Group (EU)"
    assert registry.wechat.api_base == "http://sim:8001"


def test_variable_values_are_not_expanded_again(tmp_path: Path) -> None:
    doc = valid_doc()
    doc["group"]["name"] = "${NAME}"

    registry = load_registry(write(tmp_path, dump(doc)), {**ENV, "NAME": "${UNSET}"})

    assert registry.group.name == "${UNSET}"


def test_environ_defaults_to_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)

    registry = load_registry(str(write(tmp_path, dump(valid_doc()))))

    assert registry.platforms[0].token.reveal() == TOKEN


def test_parse_registry_names_the_given_source() -> None:
    with pytest.raises(RegistryError) as caught:
        parse_registry("[]", source="inline.yaml", environ={})

    assert str(caught.value) == "inline.yaml: the registry must be a mapping, got list"


# -- refusals -----------------------------------------------------------------------------------------

Mutation = Callable[[Doc], object]


def _set(path: tuple[Any, ...], value: object) -> Mutation:
    def mutate(doc: Doc) -> None:
        node: Any = doc
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = value

    return mutate


def _delete(path: tuple[Any, ...]) -> Mutation:
    def mutate(doc: Doc) -> None:
        node: Any = doc
        for step in path[:-1]:
            node = node[step]
        del node[path[-1]]

    return mutate


def _append_platform(**changes: str) -> Mutation:
    def mutate(doc: Doc) -> None:
        doc["platforms"].append({**doc["platforms"][0], **changes})

    return mutate


def _subscribe(*subscriptions: dict[str, object]) -> Mutation:
    def mutate(doc: Doc) -> None:
        doc["subscriptions"] = [
            {"client": "crm", "url": "http://127.0.0.1:9000/inbox", "secret": "${RETAIL_TOKEN}"} | s
            for s in subscriptions
        ]

    return mutate


def _append_client(**changes: object) -> Mutation:
    def mutate(doc: Doc) -> None:
        doc["clients"].append({**doc["clients"][0], **changes})

    return mutate


REFUSALS: list[tuple[str, Mutation, str, str]] = [
    (
        "unknown top-level key",
        _set(("webhooks",), []),
        "",
        "Object contains unknown field `webhooks`",
    ),
    (
        "unknown nested key",
        _set(("platforms", 1, "colour"), "blue"),
        "platforms[1]",
        "Object contains unknown field `colour`",
    ),
    (
        "duplicate platform id",
        _append_platform(id="retail", component_appid="wxc0mp000000009"),
        "platforms[2].id",
        "duplicate platform id 'retail' (first at platforms[0].id)",
    ),
    (
        "duplicate component_appid",
        _append_platform(id="other"),
        "platforms[2].component_appid",
        "duplicate component_appid 'wxc0mp000000001' (first at platforms[0].component_appid)",
    ),
    (
        "duplicate client id",
        _append_client(key_sha256="c" * 64),
        "clients[2].id",
        "duplicate client id 'crm' (first at clients[0].id)",
    ),
    (
        "duplicate client key, either case",
        _append_client(id="other", key_sha256="a" * 64),
        "clients[2].key_sha256",
        "two clients share one key (first at clients[0].key_sha256)",
    ),
    (
        "AES key of the wrong length",
        _set(("platforms", 1, "encoding_aes_key"), AES_KEY[:-1]),
        "platforms[1].encoding_aes_key",
        "must be 43 characters, got 42",
    ),
    (
        "AES key with a bad character",
        _set(("platforms", 1, "encoding_aes_key"), AES_KEY[:-1] + "="),
        "platforms[1].encoding_aes_key",
        "must contain only letters and digits",
    ),
    (
        "unset variable",
        _set(("platforms", 1, "component_appsecret"), "${MISSING_APPSECRET}"),
        "platforms[1].component_appsecret",
        "environment variable MISSING_APPSECRET is not set",
    ),
    (
        "unset variable in a pin",
        _set(("pins", "wxb0000000000002"), "${PIN}"),
        "pins.wxb0000000000002",
        "environment variable PIN is not set",
    ),
    (
        "empty scopes",
        _set(("clients", 1, "scopes"), []),
        "clients[1].scopes",
        "a client needs at least one scope",
    ),
    (
        "unknown scope",
        _set(("clients", 1, "scopes"), ["token", "root"]),
        "clients[1].scopes[1]",
        f"unknown scope 'root' (valid: {', '.join(SCOPES)})",
    ),
    (
        "duplicate scope",
        _set(("clients", 1, "scopes"), ["token", "proxy", "token"]),
        "clients[1].scopes[2]",
        "duplicate scope 'token' (first at clients[1].scopes[0])",
    ),
    (
        "pin to an unknown platform",
        _set(("pins", "wx1234567890abcd"), "nope"),
        "pins.wx1234567890abcd",
        "pin to unknown platform 'nope'",
    ),
    (
        "pin key that is not an appid",
        _set(("pins", "gh_1234"), "retail"),
        "pins.gh_1234",
        "the key must be an appid: 'wx' followed by letters and digits",
    ),
    (
        "bad group appid",
        _set(("group", "open_appid"), "wx-0pen"),
        "group.open_appid",
        "must be an appid: 'wx' followed by letters and digits",
    ),
    (
        "bad component appid",
        _set(("platforms", 0, "component_appid"), "0pen0000000001"),
        "platforms[0].component_appid",
        "must be an appid: 'wx' followed by letters and digits",
    ),
    (
        "bad authorizer appid",
        _set(("clients", 1, "authorizers"), ["wxa0000000000001", "wx"]),
        "clients[1].authorizers[1]",
        "must be an appid: 'wx' followed by letters and digits",
    ),
    (
        "star among appids",
        _set(("clients", 1, "authorizers"), ["wxa0000000000001", "*"]),
        "clients[1].authorizers[1]",
        '"*" (all authorizers) must stand alone',
    ),
    (
        "no authorizers",
        _set(("clients", 1, "authorizers"), []),
        "clients[1].authorizers",
        'a client needs at least one authorizer, or "*" for all',
    ),
    (
        "duplicate authorizer",
        _set(("clients", 1, "authorizers"), ["wxa0000000000001", "wxa0000000000001"]),
        "clients[1].authorizers[1]",
        "duplicate authorizer 'wxa0000000000001' (first at clients[1].authorizers[0])",
    ),
    (
        "key_sha256 too short",
        _set(("clients", 1, "key_sha256"), "b" * 63),
        "clients[1].key_sha256",
        "must be 64 hex digits: the sha-256 of the client's key",
    ),
    (
        "key_sha256 not hex",
        _set(("clients", 1, "key_sha256"), "g" * 64),
        "clients[1].key_sha256",
        "must be 64 hex digits: the sha-256 of the client's key",
    ),
    (
        "rate limit of zero per second",
        _set(("clients", 1, "rate_limit"), {"per_second": 0, "burst": 5}),
        "clients[1].rate_limit.per_second",
        "must be a number of requests per second greater than 0",
    ),
    (
        "rate limit of infinity per second",
        _set(("clients", 1, "rate_limit"), {"per_second": float("inf"), "burst": 5}),
        "clients[1].rate_limit.per_second",
        "must be a number of requests per second greater than 0",
    ),
    (
        "rate limit with a burst of zero",
        _set(("clients", 1, "rate_limit"), {"per_second": 2.5, "burst": 0}),
        "clients[1].rate_limit.burst",
        "must be a whole number of requests, at least 1",
    ),
    (
        "rate limit with a fractional burst",
        _set(("clients", 1, "rate_limit"), {"per_second": 2, "burst": 1.5}),
        "clients[1].rate_limit.burst",
        "Expected `int`, got `float`",
    ),
    (
        "rate limit in words",
        _set(("clients", 1, "rate_limit"), {"per_second": "fast", "burst": 5}),
        "clients[1].rate_limit.per_second",
        "Expected `float`, got `str`",
    ),
    (
        "rate limit without a burst",
        _set(("clients", 1, "rate_limit"), {"per_second": 5}),
        "clients[1].rate_limit",
        "Object missing required field `burst`",
    ),
    (
        "rate limit with an unknown key",
        _set(("clients", 1, "rate_limit"), {"per_second": 5, "burst": 5, "per_day": 100}),
        "clients[1].rate_limit",
        "Object contains unknown field `per_day`",
    ),
    (
        "rate limit that is a number",
        _set(("clients", 1, "rate_limit"), 5),
        "clients[1].rate_limit",
        "Expected `object | null`, got `int`",
    ),
    (
        "bad platform id",
        _set(("platforms", 0, "id"), "Retail"),
        "platforms[0].id",
        "must be 1 to 64 of a-z, 0-9, '-' and '_', starting with a letter or digit",
    ),
    (
        "bad client id",
        _set(("clients", 0, "id"), "-crm"),
        "clients[0].id",
        "must be 1 to 64 of a-z, 0-9, '-' and '_', starting with a letter or digit",
    ),
    (
        "missing required field",
        _delete(("platforms", 1, "token")),
        "platforms[1]",
        "Object missing required field `token`",
    ),
    (
        "missing group appid",
        _delete(("group", "open_appid")),
        "group",
        "Object missing required field `open_appid`",
    ),
    ("missing platforms", _delete(("platforms",)), "", "Object missing required field `platforms`"),
    ("no platforms", _set(("platforms",), []), "platforms", "at least one platform is required"),
    (
        "wrong type",
        _set(("clients", 0, "scopes"), "token"),
        "clients[0].scopes",
        "Expected `array`, got `str`",
    ),
    (
        "wrong type of secret",
        _set(("platforms", 0, "token"), 12345),
        "platforms[0].token",
        "Expected `str`, got `int`",
    ),
    (
        "wrong type of pin target",
        _set(("pins", "wxb0000000000002"), 7),
        "pins",
        "Expected `str`, got `int` (in a value)",
    ),
    (
        "wrong type of pin key",
        _set(("pins", 7), "finance"),
        "pins",
        "Expected `str`, got `int` (in a key)",
    ),
    (
        "empty appsecret",
        _set(("platforms", 0, "component_appsecret"), ""),
        "platforms[0].component_appsecret",
        "must not be empty",
    ),
    ("empty token", _set(("platforms", 0, "token"), ""), "platforms[0].token", "must not be empty"),
    (
        "short token",
        _set(("platforms", 0, "token"), "ab"),
        "platforms[0].token",
        "must be 3 to 32 letters and digits",
    ),
    (
        "api_base not http",
        _set(("wechat", "api_base"), "ftp://example.com"),
        "wechat.api_base",
        "must be an http or https URL",
    ),
    (
        "api_base without host",
        _set(("wechat", "api_base"), "https://"),
        "wechat.api_base",
        "must be an http or https URL",
    ),
    (
        "api_base with a bad port",
        _set(("wechat", "api_base"), "http://127.0.0.1:port"),
        "wechat.api_base",
        "must be an http or https URL",
    ),
    (
        "api_base with a broken IPv6 address",
        _set(("wechat", "api_base"), "http://[::1:8001"),
        "wechat.api_base",
        "must be an http or https URL",
    ),
    (
        "authorization_page_base not http",
        _set(("wechat", "authorization_page_base"), "mp.weixin.qq.com"),
        "wechat.authorization_page_base",
        "must be an http or https URL",
    ),
    (
        "authorization_page_base with a fragment",
        _set(("wechat", "authorization_page_base"), "http://127.0.0.1:8001/#x"),
        "wechat.authorization_page_base",
        "must not have a query or a fragment",
    ),
    (
        "api_base with a query",
        _set(("wechat", "api_base"), "https://api.weixin.qq.com/?x=1"),
        "wechat.api_base",
        "must not have a query or a fragment",
    ),
    (
        "subscription of an unknown client",
        _subscribe({"client": "nobody"}),
        "subscriptions[0].client",
        "unknown client 'nobody': a subscription belongs to a client",
    ),
    (
        "subscription url that is not http",
        _subscribe({"url": "ftp://crm.internal/inbox"}),
        "subscriptions[0].url",
        "must be an http or https URL",
    ),
    (
        "subscription url with a fragment",
        _subscribe({"url": "https://crm.internal/inbox#x"}),
        "subscriptions[0].url",
        "must not have a fragment",
    ),
    (
        "subscription with an empty secret",
        _subscribe({"secret": ""}),
        "subscriptions[0].secret",
        "must not be empty",
    ),
    (
        "subscription with no secret",
        _subscribe({"secret": None}),
        "subscriptions[0].secret",
        "Expected `str`, got `null`",
    ),
    (
        "two subscriptions of one client to one url",
        _subscribe({}, {"types": ["text"]}),
        "subscriptions[1].url",
        "duplicate client and url 'crm http://127.0.0.1:9000/inbox' (first at subscriptions[0].url)",
    ),
    (
        "subscription to a bad authorizer",
        _subscribe({"authorizers": ["gh_123"]}),
        "subscriptions[0].authorizers[0]",
        "must be an appid: 'wx' followed by letters and digits",
    ),
    (
        "subscription with no types",
        _subscribe({"types": []}),
        "subscriptions[0].types",
        'a subscription needs at least one type, or "*" for all',
    ),
    (
        "subscription with a type that is no MsgType",
        _subscribe({"types": ["text", "Event CLICK"]}),
        "subscriptions[0].types[1]",
        'must be a MsgType (text, image, event …), event.<Event> (event.CLICK) or "*"',
    ),
    (
        "subscription with a star among types",
        _subscribe({"types": ["text", "*"]}),
        "subscriptions[0].types[1]",
        '"*" (all types) must stand alone',
    ),
    (
        "subscription naming one event twice",
        _subscribe({"types": ["event.CLICK", "event.click"]}),
        "subscriptions[0].types[1]",
        "duplicate type 'event.click' (first at subscriptions[0].types[0])",
    ),
    (
        "two reply subscriptions for one event",
        _subscribe(
            {"types": ["event.subscribe"], "reply": True},
            {"url": "http://127.0.0.1:9001/", "types": ["event"], "reply": True},
        ),
        "subscriptions[1].reply",
        "two reply subscriptions could answer the same message (the other is subscriptions[0])",
    ),
    (
        "two reply subscriptions sharing an authorizer",
        _subscribe(
            {"authorizers": ["wxa1", "wxa2"], "types": ["text"], "reply": True},
            {"url": "http://127.0.0.1:9001/", "authorizers": ["wxa2"], "reply": True},
        ),
        "subscriptions[1].reply",
        "two reply subscriptions could answer the same message (the other is subscriptions[0])",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "path", "problem"), [case[1:] for case in REFUSALS], ids=[case[0] for case in REFUSALS]
)
def test_refusal(tmp_path: Path, mutate: Mutation, path: str, problem: str) -> None:
    doc = valid_doc()
    mutate(doc)

    error = refused(tmp_path, dump(doc))

    assert (error.path, error.problem) == (path, problem)
    file = tmp_path / "registry.yaml"
    assert str(error) == (f"{file}: {path}: {problem}" if path else f"{file}: {problem}")


def test_reply_subscriptions_that_cannot_meet_are_accepted(tmp_path: Path) -> None:
    doc = valid_doc()
    _subscribe(
        {"types": ["text"], "reply": True},
        {"url": "http://127.0.0.1:9001/", "types": ["event.CLICK", "image"], "reply": True},
        {"url": "http://127.0.0.1:9002/", "authorizers": ["wxa1"], "types": ["event.CLICK"], "reply": True},
        {"url": "http://127.0.0.1:9003/", "types": ["*"]},
    )(doc)
    doc["subscriptions"][2]["types"] = ["voice"]
    path = tmp_path / "registry.yaml"
    path.write_text(dump(doc))

    registry = load_registry(path, ENV)

    first, second, third, everything = registry.subscriptions
    assert first.secret.reveal() == TOKEN and first.authorizers == ("*",)
    assert first.matches("wxa1", "text", "") and not first.matches("wxa1", "image", "")
    assert second.matches("wxa9", "event", "click") and not second.matches("wxa9", "event", "VIEW")
    assert not third.matches("wxa2", "voice", "") and third.matches("wxa1", "voice", "")
    assert everything.matches("wxa1", "event", "subscribe") and not everything.reply


def test_subscription_to_every_event_matches_each_event() -> None:
    doc = valid_doc()
    _subscribe({"types": ["event", "text"]})(doc)
    registry = parse_registry(dump(doc), source="inline.yaml", environ=ENV)

    (subscription,) = registry.subscriptions
    assert subscription.matches("wxa1", "event", "LOCATION")
    assert subscription.matches("wxa1", "text", "")
    assert not subscription.matches("wxa1", "image", "")


def test_first_fault_in_document_order_is_reported(tmp_path: Path) -> None:
    doc = valid_doc()
    doc["platforms"][0]["token"] = "${FIRST}"
    doc["platforms"][1]["token"] = "${SECOND}"
    doc["clients"][0]["scopes"] = []

    error = refused(tmp_path, dump(doc))

    assert (error.path, error.problem) == ("platforms[0].token", "environment variable FIRST is not set")


def test_unset_variable_message_names_path_and_variable(tmp_path: Path) -> None:
    environ = {k: v for k, v in ENV.items() if k != "FINANCE_AES_KEY"}

    error = refused(tmp_path, dump(valid_doc()), environ)

    assert str(error) == (
        f"{tmp_path / 'registry.yaml'}: platforms[1].encoding_aes_key: "
        "environment variable FINANCE_AES_KEY is not set"
    )


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just a string\n", "42\n"])
def test_refuses_a_top_level_that_is_not_a_mapping(tmp_path: Path, text: str) -> None:
    error = refused(tmp_path, text)

    assert error.path == ""
    assert error.problem.startswith("the registry must be a mapping, got ")


def test_refuses_invalid_yaml_with_its_position(tmp_path: Path) -> None:
    error = refused(tmp_path, "group:\n  name: ACME\n  open_appid: [wx1\nplatforms: []\n")

    assert error.path == ""
    assert error.problem.startswith("not valid YAML: line 4, column 10: ")


def test_refuses_a_key_given_twice(tmp_path: Path) -> None:
    text = dump(valid_doc()).replace(
        "  token: ${RETAIL_TOKEN}\n", "  token: ${RETAIL_TOKEN}\n  token: x\n", 1
    )

    error = refused(tmp_path, text)

    assert error.path == ""
    assert error.problem.startswith("not valid YAML: line ")
    assert error.problem.endswith(": duplicate key 'token'")


def test_yaml_merge_keys_may_be_overridden(tmp_path: Path) -> None:
    doc = valid_doc()
    first = doc["platforms"][0]
    text = dump({**doc, "platforms": []}).replace(
        "platforms: []\n",
        "platforms:\n"
        + "- &retail\n"
        + "".join(f"  {k}: {v}\n" for k, v in first.items())
        + "- <<: *retail\n  id: finance\n  component_appid: wxc0mp000000002\n",
    )

    registry = load_registry(write(tmp_path, text), ENV)

    assert [p.id for p in registry.platforms] == ["retail", "finance"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a: !!int not-a-number\n", "not valid YAML: a tagged value cannot be constructed"),
        (
            "a: !secret x\n",
            "not valid YAML: line 1, column 4: could not determine a constructor for the tag '!secret'",
        ),
        ("a: &x [*x]\n", "a YAML alias refers to the value that contains it"),
        ("a: b\x00\n", "not valid YAML: position 4: unacceptable character #x0000"),
    ],
)
def test_refuses_yaml_that_cannot_be_used(tmp_path: Path, text: str, problem: str) -> None:
    error = refused(tmp_path, text)

    assert error.problem == problem
    assert "not-a-number" not in str(error)


def test_refuses_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"

    with pytest.raises(RegistryError) as caught:
        load_registry(path, ENV)

    assert str(caught.value) == f"{path}: cannot read file: No such file or directory"
    assert caught.value.path == ""


def test_refuses_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "registry.yaml"
    path.write_bytes(b"group: \xff\n")

    with pytest.raises(RegistryError) as caught:
        load_registry(path, ENV)

    assert str(caught.value) == f"{path}: cannot read file: not UTF-8 text"


# -- secrets ------------------------------------------------------------------------------------------


def test_secret_is_masked_and_compares_by_value() -> None:
    secret = Secret("hunter2")

    assert secret.reveal() == "hunter2"
    assert repr(secret) == str(secret) == f"{secret}" == "Secret('****')"
    assert secret == Secret("hunter2")
    assert secret != Secret("hunter3")
    assert secret != "hunter2"
    assert hash(secret) == hash(Secret("hunter2"))
    assert Secret("ключ") == Secret("ключ")


def _secret_leaks(text: str) -> list[str]:
    # Prefixes too: a message quoting a truncated or extended secret still leaks it.
    canaries = (APPSECRET, TOKEN, AES_KEY, "LeakCanary")
    return [canary for canary in canaries if canary in text]


def test_registry_repr_shows_no_secret(tmp_path: Path) -> None:
    registry = load_registry(write(tmp_path, dump(valid_doc())), ENV)

    for shown in (repr(registry), str(registry), repr(registry.platforms), repr(registry.platforms[0])):
        assert "Secret('****')" in shown
        assert _secret_leaks(shown) == []


BAD_SECRETS: list[tuple[str, str]] = [
    ("encoding_aes_key", AES_KEY[:-1]),
    ("encoding_aes_key", AES_KEY + "k"),
    ("encoding_aes_key", AES_KEY[:-1] + "/"),
    ("token", TOKEN + "!"),
    ("token", TOKEN * 3),
    ("token", "${" + TOKEN + "}"),
]


@pytest.mark.parametrize(("field", "value"), BAD_SECRETS)
def test_invalid_secret_is_not_quoted_in_the_error(tmp_path: Path, field: str, value: str) -> None:
    doc = valid_doc()
    doc["platforms"][1][field] = "${BAD}"

    error = refused(tmp_path, dump(doc), {**ENV, "BAD": value})

    assert error.path == f"platforms[1].{field}"
    assert _secret_leaks(str(error)) == []


@pytest.mark.parametrize("field", ["component_appsecret", "token", "encoding_aes_key"])
def test_secret_of_the_wrong_type_is_not_quoted(tmp_path: Path, field: str) -> None:
    doc = valid_doc()
    doc["platforms"][0][field] = [TOKEN, {"k": AES_KEY}]

    error = refused(tmp_path, dump(doc))

    assert (error.path, error.problem) == (f"platforms[0].{field}", "Expected `str`, got `array`")


def test_refusals_quote_no_secret(tmp_path: Path) -> None:
    for _, mutate, _, _ in REFUSALS:
        doc = valid_doc()
        mutate(doc)
        with pytest.raises(RegistryError) as caught:
            parse_registry(dump(doc), source="registry.yaml", environ=ENV)
        assert _secret_leaks(str(caught.value)) == []


@pytest.mark.parametrize(
    ("mutate", "path", "problem"),
    [
        (
            _set(("clients", 1, "scopes"), ["${RETAIL_TOKEN}"]),
            "clients[1].scopes[0]",
            f"unknown scope '${{RETAIL_TOKEN}}' (valid: {', '.join(SCOPES)})",
        ),
        (
            _set(("platforms", 1, "id"), "${ID}"),
            "platforms[1].id",
            "duplicate platform id '${ID}' (first at platforms[0].id)",
        ),
        (
            _set(("clients", 1, "authorizers"), ["wx${ID}", "wx${ID}"]),
            "clients[1].authorizers[1]",
            "duplicate authorizer 'wx${ID}' (first at clients[1].authorizers[0])",
        ),
        (
            _set(("pins", "wxb0000000000002"), "${ID}x"),
            "pins.wxb0000000000002",
            "pin to unknown platform '${ID}x'",
        ),
    ],
)
def test_values_from_the_environment_are_quoted_as_spelled(
    tmp_path: Path, mutate: Mutation, path: str, problem: str
) -> None:
    doc = valid_doc()
    mutate(doc)

    error = refused(tmp_path, dump(doc), {**ENV, "ID": "retail"})

    assert (error.path, error.problem) == (path, problem)


def test_yaml_error_does_not_quote_the_line(tmp_path: Path) -> None:
    text = f"platforms:\n  - token: '{TOKEN}\n"

    error = refused(tmp_path, text)

    assert error.problem.startswith("not valid YAML: line ")
    assert _secret_leaks(str(error)) == []


# -- robustness ---------------------------------------------------------------------------------------


def _locations(node: object, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value in `node`, containers included."""
    found = [here] if here else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _locations(value, (*here, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _locations(value, (*here, index))
    return found


_LOCATIONS = _locations(valid_doc())

_junk = st.one_of(
    st.text(max_size=50),
    st.sampled_from(
        [
            "${RETAIL_TOKEN}",
            "${NOPE}",
            "*",
            "wx1",
            "retail",
            "token",
            "a" * 64,
            AES_KEY,
            "http://[x",
            "http://x:1",
        ]
    ),
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.lists(st.text(max_size=10), max_size=3),
    st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3),
)

_mutation = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(_LOCATIONS), _junk),
    st.tuples(st.just("delete"), st.sampled_from(_LOCATIONS), st.none()),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_mutation, min_size=1, max_size=4))
def test_mutated_documents_load_or_are_refused(mutations: list[tuple[str, tuple[Any, ...], object]]) -> None:
    doc = valid_doc()
    for action, path, value in mutations:
        node: Any = doc
        try:
            for step in path[:-1]:
                node = node[step]
            if action == "set":
                node[path[-1]] = value
            else:
                del node[path[-1]]
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced this location

    text = dump(doc)
    error: RegistryError | None = None
    try:
        parse_registry(text, source="registry.yaml", environ=ENV)
    except RegistryError as refusal:
        error = refusal
    if error is not None:
        assert str(error).startswith("registry.yaml: ")
        # A canary written literally into a non-secret field may be quoted; one from the environment never.
        assert _secret_leaks(str(error)) == [] or "LeakCanary" in text


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mangled_text_loads_or_is_refused(data: st.DataObject) -> None:
    text = dump(valid_doc())
    start = data.draw(st.integers(0, len(text)), label="start")
    end = data.draw(st.integers(start, min(len(text), start + 20)), label="end")
    insert = data.draw(st.text(alphabet=st.sampled_from(list(":-[]{}&*!|>'\"#%@`,? \n\tx1$")), max_size=8))

    with contextlib.suppress(RegistryError):
        parse_registry(text[:start] + insert + text[end:], source="registry.yaml", environ=ENV)


# -- group.binding (SPEC §2, §11) ---------------------------------------------------------------------


def _binding(**binding: Any) -> Mutation:
    def mutate(doc: Doc) -> None:
        doc["group"]["principal_name"] = "ACME Group Co., Ltd."
        doc["group"]["binding"] = binding

    return mutate


def _listed(*principals: str, open_appids: tuple[str, ...] = ()) -> list[dict[str, str]]:
    appids = open_appids or tuple(f"wx0pen00000000{i + 2:02d}" for i in range(len(principals)))
    return [{"open_appid": a, "principal_name": p} for a, p in zip(appids, principals, strict=True)]


BINDING_REFUSALS: list[tuple[str, Mutation, str, str]] = [
    (
        "an unknown mode",
        _binding(mode="everyone"),
        "group.binding.mode",
        "unknown mode 'everyone' (valid: group, per_principal)",
    ),
    (
        "binding without the group's principal",
        lambda doc: doc["group"].update(binding={"mode": "group"}),
        "group.principal_name",
        "is required with group.binding: each account's target open account follows its principal",
    ),
    (
        "an empty group principal",
        lambda doc: doc["group"].update(principal_name="  "),
        "group.principal_name",
        "must not be empty",
    ),
    (
        "a listed principal that is the group's",
        _binding(open_accounts=_listed("ACME Finance", " acme group co.,  ltd. ")),
        "group.binding.open_accounts[1].principal_name",
        "principal ' acme group co.,  ltd. ' already has an open account (at group.principal_name): "
        "one open account per principal",
    ),
    (
        "two listed open accounts of one principal",
        _binding(open_accounts=_listed("ACME Finance", "ACME Retail", "ACME Finance")),
        "group.binding.open_accounts[2].principal_name",
        "principal 'ACME Finance' already has an open account "
        "(at group.binding.open_accounts[0].principal_name): one open account per principal",
    ),
    (
        "a listed open account given twice",
        _binding(open_accounts=_listed("A", "B", open_appids=("wx0pen0000000002", "wx0pen0000000002"))),
        "group.binding.open_accounts[1].open_appid",
        "duplicate open_appid 'wx0pen0000000002' (first at group.binding.open_accounts[0].open_appid)",
    ),
    (
        "the group's open account listed again",
        _binding(open_accounts=_listed("ACME Finance", open_appids=("wx0pen0000000001",))),
        "group.binding.open_accounts[0].open_appid",
        "duplicate open_appid 'wx0pen0000000001' (first at group.open_appid)",
    ),
    (
        "a listed open_appid that is no appid",
        _binding(open_accounts=_listed("A", open_appids=("open-1",))),
        "group.binding.open_accounts[0].open_appid",
        "must be an appid: 'wx' followed by letters and digits",
    ),
    (
        "a listed principal left empty",
        _binding(open_accounts=_listed("")),
        "group.binding.open_accounts[0].principal_name",
        "must not be empty",
    ),
    (
        "an unknown key in a listed open account",
        _binding(open_accounts=[{"open_appid": "wx0pen0000000002", "principal_name": "A", "verified": True}]),
        "group.binding.open_accounts[0]",
        "Object contains unknown field `verified`",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "path", "problem"),
    [case[1:] for case in BINDING_REFUSALS],
    ids=[case[0] for case in BINDING_REFUSALS],
)
def test_binding_refusal(tmp_path: Path, mutate: Mutation, path: str, problem: str) -> None:
    doc = valid_doc()
    mutate(doc)
    error = refused(tmp_path, dump(doc))
    assert (error.path, error.problem) == (path, problem)


def test_binding_is_optional_and_read_whole(tmp_path: Path) -> None:
    plain = load_registry(write(tmp_path, dump(valid_doc())), ENV)
    assert plain.group.principal_name is None and plain.group.binding is None

    doc = valid_doc()
    _binding(mode="per_principal", open_accounts=_listed("Merchant A", "Merchant B"))(doc)
    registry = load_registry(write(tmp_path, dump(doc)), ENV)
    assert registry.group.principal_name == "ACME Group Co., Ltd."
    assert registry.group.binding is not None and registry.group.binding.mode == "per_principal"
    assert [(a.open_appid, a.principal_name) for a in registry.group.binding.open_accounts] == [
        ("wx0pen0000000002", "Merchant A"),
        ("wx0pen0000000003", "Merchant B"),
    ]
    defaults = valid_doc()
    _binding()(defaults)
    binding = load_registry(write(tmp_path, dump(defaults)), ENV).group.binding
    assert binding is not None and (binding.mode, binding.open_accounts) == ("group", ())


def test_principal_names_compare_across_full_width_and_ascii_brackets(tmp_path: Path) -> None:
    # WeChat and people type Chinese company names with either kind of bracket (and full-width spaces).
    assert principal_key("腾讯科技（深圳）有限公司") == principal_key("腾讯科技(深圳)有限公司")
    assert principal_key("ＡＣＭＥ\u3000Group") == principal_key("acme group")
    assert principal_key("腾讯科技(深圳)有限公司") != principal_key("腾讯科技(北京)有限公司")
    doc = valid_doc()
    _binding(open_accounts=_listed("腾讯科技（深圳）有限公司", "腾讯科技(深圳)有限公司"))(doc)
    error = refused(tmp_path, dump(doc))
    assert error.path == "group.binding.open_accounts[1].principal_name"
    assert "one open account per principal" in error.problem
