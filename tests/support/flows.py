"""WeChat-side steps tests take through the simulator's HTTP interface, as an administrator would."""

from __future__ import annotations

from typing import Any

import httpx

__all__ = ["approve_authorization", "approve_over_sockets", "push_ticket"]


async def push_ticket(sim: httpx.AsyncClient, component_appid: str) -> dict[str, Any]:
    """Have the simulator push a fresh verify ticket now; returns its report (status, body, …)."""
    response = await sim.post(f"/sim/components/{component_appid}/push-ticket")
    response.raise_for_status()
    report: dict[str, Any] = response.json()
    return report


async def approve_authorization(
    sim: httpx.AsyncClient,
    component_appid: str,
    component_secret: str,
    authorizer_appid: str,
    func_ids: list[int],
    *,
    kind: str = "official_account",
    nick_name: str | None = None,
    principal_name: str = "ACME Co., Ltd.",
) -> dict[str, Any]:
    """An administrator authorizes the component: pre-auth code, approval, and the ``authorized`` push.

    The pre-auth code is made with a component token of the test's own, as the authorization page
    would be opened from a link; the gateway learns of the authorization from the push alone.
    """
    component = (await sim.get(f"/sim/components/{component_appid}")).json()
    token = (
        await sim.post(
            "/cgi-bin/component/api_component_token",
            json={
                "component_appid": component_appid,
                "component_appsecret": component_secret,
                "component_verify_ticket": component["latest_ticket"],
            },
        )
    ).json()["component_access_token"]
    pre_auth_code = (
        await sim.post(
            "/cgi-bin/component/api_create_preauthcode",
            params={"component_access_token": token},
            json={"component_appid": component_appid},
        )
    ).json()["pre_auth_code"]
    response = await sim.post(
        f"/sim/pre-auth-codes/{pre_auth_code}/approve",
        json={
            "authorizer_appid": authorizer_appid,
            "func_ids": func_ids,
            "kind": kind,
            "nick_name": nick_name or f"Account {authorizer_appid}",
            "principal_name": principal_name,
        },
    )
    response.raise_for_status()
    approval: dict[str, Any] = response.json()
    return approval


def approve_over_sockets(
    sim: str,
    component_appid: str,
    component_secret: str,
    authorizer_appid: str,
    func_ids: list[int],
    *,
    kind: str = "official_account",
    **profile: str,
) -> None:
    """``approve_authorization`` for a simulator on a real socket (URL ``sim``), for synchronous tests."""
    component = httpx.get(f"{sim}/sim/components/{component_appid}").json()
    token = httpx.post(
        f"{sim}/cgi-bin/component/api_component_token",
        json={
            "component_appid": component_appid,
            "component_appsecret": component_secret,
            "component_verify_ticket": component["latest_ticket"],
        },
    ).json()["component_access_token"]
    code = httpx.post(
        f"{sim}/cgi-bin/component/api_create_preauthcode",
        params={"component_access_token": token},
        json={"component_appid": component_appid},
    ).json()["pre_auth_code"]
    approval: dict[str, object] = {"nick_name": authorizer_appid, "principal_name": "ACME", **profile}
    approval |= {"authorizer_appid": authorizer_appid, "func_ids": func_ids, "kind": kind}
    httpx.post(f"{sim}/sim/pre-auth-codes/{code}/approve", json=approval).raise_for_status()
