"""Schemathesis against the gateway's own OpenAPI document (``/schema/openapi.json``), the whole ``/v1`` API.

Requests are generated from the schema, valid and invalid (``GenerationMode.NEGATIVE``), and sent with the
key of every client of the test registry, a key no client holds, a malformed ``Authorization`` header or
none. Every answer must be no 5xx and match the schema: a documented status code, content type, headers
and body. The gateway runs in-process against the simulator with tickets pushed and an official account
authorized, so that the routes that call WeChat get as far as WeChat.

Generated cases: 600 valid + 400 invalid requests (``max_examples`` below).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.crypto import SecretBox
from gateway.registry.model import Registry
from tests.conftest import CLIENT_KEYS
from tests.support.flows import push_ticket
from tests.support.world import FINANCE, OA, RETAIL, World, open_world

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

# Every client's key (half the cases: most routes answer 401 before anything else), then the wrong ones.
AUTHORIZATIONS = st.one_of(
    st.sampled_from([f"Bearer {key}" for key in CLIENT_KEYS.values()]),
    st.sampled_from(["Bearer not-a-client-key", "Bearer ", "Basic Y3JtOmtleQ==", "bearer crm-test-key", ""])
    | st.none(),
)


@pytest.fixture
async def world(registry: Registry, sqlite_url: str, secret_box: SecretBox) -> AsyncIterator[World]:
    """The gateway and the simulator, tickets pushed, OA authorized on retail (sets 1, 2, 24)."""
    async with open_world(registry, sqlite_url, secret_box) as opened:
        for values in (RETAIL, FINANCE):
            assert (await push_ticket(opened.sim, values["appid"]))["body"] == "success"
        await opened.authorize("retail", OA, [1, 2, 24])
        yield opened


@pytest.fixture
async def v1_cases(world: World) -> dict[GenerationMode, st.SearchStrategy[schemathesis.Case]]:
    """Requests to every ``/v1`` operation of the schema the gateway serves, valid and invalid."""
    document = (await world.gateway.get("/schema/openapi.json")).json()
    assert any(path.startswith("/v1/") for path in document["paths"])
    schema = schemathesis.openapi.from_dict(document).include(path_regex="^/v1/")
    # Generated appids and platform ids are never ones the gateway knows: some cases name those it does,
    # so that the routes get past their lookups.
    known = {"appid": OA, "platform": "retail"}
    return {
        mode: st.one_of(
            schema.as_strategy(generation_mode=mode),
            *(
                schemathesis.openapi.from_dict(document)
                .include(path_regex="^/v1/.*" + re.escape("{" + name + "}"))
                .as_strategy(generation_mode=mode, path_parameters={name: value})
                for name, value in known.items()
            ),
        )
        for mode in GenerationMode
    }


async def call(world: World, case: schemathesis.Case, authorization: str | None) -> httpx.Response:
    """Send ``case`` through the in-process client, as a client of the gateway would."""
    request = case.as_transport_kwargs(base_url=str(world.gateway.base_url))
    headers = {k: v for k, v in request["headers"].items() if k.lower() != "authorization"}
    if authorization is not None:
        headers["Authorization"] = authorization
    if request.get("cookies"):  # httpx takes cookies per client, not per request
        headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in request["cookies"].items())
    body: dict[str, Any] = {}
    if "json" in request:
        body["json"] = request["json"]
    elif "data" in request:
        body["content"] = request["data"]
    return await world.gateway.request(
        request["method"],
        request["url"],
        params=request.get("params"),
        headers=headers,
        **body,
    )


FUZZ = settings(
    deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


async def check(world: World, case: schemathesis.Case, authorization: str | None) -> None:
    """No 5xx, and the answer is the schema's."""
    response = await call(world, case, authorization)
    case.validate_response(response, checks=CHECKS)


@settings(FUZZ, max_examples=600)
@given(data=st.data(), authorization=AUTHORIZATIONS)
async def test_valid_requests_are_answered_as_the_schema_says(
    world: World,
    v1_cases: dict[GenerationMode, st.SearchStrategy[schemathesis.Case]],
    data: st.DataObject,
    authorization: str | None,
) -> None:
    await check(world, data.draw(v1_cases[GenerationMode.POSITIVE], label="case"), authorization)


# Only some operations can be sent invalid (a body, a bounded parameter): the others' cases are filtered.
@settings(
    FUZZ, max_examples=400, suppress_health_check=[*FUZZ.suppress_health_check, HealthCheck.filter_too_much]
)
@given(data=st.data(), authorization=AUTHORIZATIONS)
async def test_invalid_requests_are_answered_as_the_schema_says(
    world: World,
    v1_cases: dict[GenerationMode, st.SearchStrategy[schemathesis.Case]],
    data: st.DataObject,
    authorization: str | None,
) -> None:
    await check(world, data.draw(v1_cases[GenerationMode.NEGATIVE], label="case"), authorization)
