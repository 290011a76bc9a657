"""The OpenAPI document the gateway serves (``/schema/openapi.json``): its security schemes, readable
operation ids, ``/wx`` as WeChat's SDKs meet it, every refusal code of ``/v1`` enumerated, and no secret."""

from __future__ import annotations

import ast
import base64
import os
import re
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from gateway.binding.service import _REFUSALS as _WECHAT_BINDING_REFUSALS
from gateway.errors import BindingRefused, PushRejected, Refused
from gateway.http.app import create_app
from gateway.http.errors import PROBLEM_JSON, STATUS
from gateway.http.openapi import BINDING_CODES, PUSH_REFUSALS, V1_REFUSALS
from gateway.registry.model import Registry
from gateway.settings import Settings
from tests.conftest import CLIENT_KEYS, PLATFORM_SECRETS
from tests.support.asgi import running

GATEWAY = Path(__file__).resolve().parent.parent / "gateway"
Document = dict[str, Any]


@pytest.fixture
async def document(gateway: AsyncTestClient[Litestar]) -> Document:
    """The document, as served."""
    response = await gateway.get("/schema/openapi.json")
    assert response.status_code == 200
    parsed: Document = response.json()
    return parsed


def operations(document: Document) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in ("get", "put", "post", "delete", "patch")
    ]


def test_v1_is_behind_the_client_key_and_nothing_else_is(document: Document) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["clientKey"]["type"] == "http" and schemes["clientKey"]["scheme"] == "bearer"
    assert (schemes["gatewayToken"]["type"], schemes["gatewayToken"]["in"]) == ("apiKey", "query")
    assert schemes["gatewayToken"]["name"] == "access_token"
    for method, path, operation in operations(document):
        if path.startswith(("/v1/", "/wx/component/")):
            assert operation["security"] == [{"clientKey": []}], (method, path)
        elif path.startswith("/wx/") and "cgi-bin" not in path:
            assert operation["security"] == [{"gatewayToken": []}], (method, path)
        else:
            assert "security" not in operation, (method, path)


def test_operation_ids_are_unique_and_readable(document: Document) -> None:
    ids = [operation["operationId"] for _, _, operation in operations(document)]
    assert len(ids) == len(set(ids))
    for operation_id in ids:
        assert re.fullmatch(r"[a-z][a-zA-Z]{2,30}", operation_id), operation_id
    named = {(m, p): o["operationId"] for m, p, o in operations(document)}
    assert named["get", "/v1/authorizers/{appid}/access-token"] == "accessToken"
    assert named["get", "/v1/catalog.csv"] == "catalogCsv"
    assert named["post", "/wx/{api}"] == "forwardPost"


def test_wx_documents_its_real_answers(document: Document) -> None:
    refusal = document["components"]["schemas"]["WxRefusal"]
    assert set(refusal["required"]) == {"errcode", "errmsg"}
    for method, path, operation in operations(document):
        if not path.startswith("/wx/"):
            continue
        responses = operation["responses"]
        assert "201" not in responses, (method, path)  # what a POST handler says by default
        assert "200" in responses
        for status in ("413", "429", "503"):
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/WxRefusal"}, (method, path, status)
        assert "45009" in responses["429"]["description"]
        if "cgi-bin" in path:
            options = responses["200"]["content"]["application/json"]["schema"]["oneOf"]
            assert {"$ref": "#/components/schemas/WxToken"} in options
            assert {"$ref": "#/components/schemas/WxRefusal"} in options
        else:
            assert "byte for byte" in responses["200"]["description"]
            assert {"404", "502", "504"} <= set(responses)


def codes_of(document: Document, response: dict[str, Any], media_type: str) -> list[str]:
    ref = response["content"][media_type]["schema"]["$ref"].rsplit("/", 1)[-1]
    body = document["components"]["schemas"][ref]
    detail = document["components"]["schemas"][body["properties"]["error"]["$ref"].rsplit("/", 1)[-1]]
    code = detail["properties"]["code"]
    codes: list[str] = code["enum"] if "enum" in code else [code["const"]]  # one code: a constant
    return codes


def test_every_refusal_of_v1_enumerates_its_codes(document: Document) -> None:
    for method, path, operation in operations(document):
        if not path.startswith("/v1/"):
            continue
        responses = operation["responses"]
        assert {int(status) for status in responses} - {200} == set(V1_REFUSALS), (method, path)
        for status, codes in V1_REFUSALS.items():
            response = responses[str(status)]
            assert codes_of(document, response, PROBLEM_JSON) == list(codes), (method, path, status)
            for code in codes:
                assert f"`{code}`" in response["description"]
    for _, path, operation in operations(document):
        if path.endswith(("/events", "/messages/{appid}")):
            for status, codes in PUSH_REFUSALS.items():
                response = operation["responses"][str(status)]
                assert codes_of(document, response, "application/json") == list(codes), (path, status)


def _calls(name: str, path: Path) -> list[ast.Call]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == name]


def test_every_code_a_refusal_carries_is_documented_at_its_status() -> None:
    def kinds(root: type[Refused]) -> list[type[Refused]]:
        return [k for sub in root.__subclasses__() for k in (sub, *kinds(sub))]

    sources = [p for p in GATEWAY.rglob("*.py") if p.name != "errors.py" or p.parent != GATEWAY]
    for kind in kinds(Refused):
        documented = PUSH_REFUSALS if issubclass(kind, PushRejected) else V1_REFUSALS
        status = next(STATUS[ancestor] for ancestor in kind.__mro__ if ancestor in STATUS)
        if kind.code != Refused.code:
            assert kind.code in documented[status], f"{kind.__name__}: {status} {kind.code}"
        elif kind is not BindingRefused:  # a kind without a code is never raised as itself
            raised = [p for p in sources if _calls(kind.__name__, p)]
            assert not raised, f"{kind.__name__} raised in {raised}"
    # The codes a binding refusal takes: WeChat's refusals in words, and every code written out.
    written = {code for code, _ in _WECHAT_BINDING_REFUSALS.values()}
    for call in _calls("BindingRefused", GATEWAY / "binding" / "service.py"):
        written |= {c.value for c in ast.walk(call.args[0]) if isinstance(c, ast.Constant)}
    written |= {"wechat_refused"}  # the fallback of a refusal not in the table
    assert written <= set(BINDING_CODES) <= set(V1_REFUSALS[409])


async def test_the_document_holds_no_secret(registry: Registry, sqlite_url: str) -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    settings = Settings.from_environ({"GATEWAY_SECRET_KEY": key, "GATEWAY_DATABASE_URL": sqlite_url})
    async with running(create_app(settings, registry, background=False)) as gateway:
        text = (await gateway.get("/schema/openapi.json")).text
    secrets = [key, base64.b64decode(key).hex(), *CLIENT_KEYS.values()]
    secrets += [client.key_sha256 for client in registry.clients]
    for values in PLATFORM_SECRETS.values():
        secrets += [values["secret"], values["token"], values["aes_key"]]
    assert '"paths"' in text
    for secret in secrets:
        assert secret not in text
