"""The authorization page an administrator sees (mp.weixin.qq.com's componentloginpage), for the demo.

Plain HTML, no JavaScript: pick a seeded account (filtered by ``auth_type`` and ``biz_appid``), tick the
permission sets, approve; the browser is sent 303 to ``redirect_uri?auth_code=…&expires_in=…``.
Exclusive sets the account already granted to another component are shown but cannot be ticked.

As WeChat's, the page opens only when the browser comes from a page on the component's registered
授权发起页域名 (its Referer) and the redirect URI is on that domain too; otherwise it shows WeChat's own
words, "…授权入口页所在域名：空" when there is no Referer. Sources: the 授权发起页域名 section of
oplatform's Third-party_Platforms/2.0/operation/thirdparty/prepare.html, and the FAQ
Third-party_Platforms/2.0/troubleshooting/authorization_troubleshooting.html ("The domain name of the
authorized entry page is empty": the link cannot be opened by pasting it into a browser). Once inside,
moving between its own steps (a Referer from this page) needs no second check, as on WeChat's page.
"""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import urlencode, urlsplit

from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.response import Redirect

from gateway.simulator.control_routes import ApproveBody, authorize
from gateway.simulator.errors import ControlError
from gateway.simulator.pushes import Pusher
from gateway.simulator.state import Kind, World

__all__ = ["login_page_handlers"]

PAGE_PATH = "/cgi-bin/componentloginpage"
H5_PATH = "/wxaopen/safe/bindcomponent"  # the in-WeChat (H5) form of the same page
H5_PATH_LEGACY = "/safe/bindcomponent"  # its older address
PAGE_PATHS = (PAGE_PATH, H5_PATH, H5_PATH_LEGACY)
# WeChat's refusal, word for word as administrators report it (developers.weixin.qq.com community).
DOMAIN_REFUSAL = (
    "请确认授权入口页所在域名，与授权后回调页所在域名相同，并且，此两者都必须与申请第三方平台时填写的授权发起页域名相同。"
    "授权入口页所在域名：{}"
)

# What the page offers, by account kind (protocol §7; the common sets only).
SET_NAMES: dict[Kind, dict[int, str]] = {
    "official_account": {
        1: "Message management",
        2: "User management",
        3: "Account service",
        4: "Web service",
        6: "Multi-customer-service",
        7: "Broadcast and notifications",
        11: "Media assets",
        15: "Custom menu",
        24: "Open-platform account management",
        33: "Mini-program association",
    },
    "mini_program": {
        17: "Mini-program codes",
        18: "Development and data analysis",
        19: "Customer service",
        25: "Open-platform account management",
        30: "Basic info",
        31: "Verification-name check",
    },
}
AUTH_TYPE_KINDS: dict[str, tuple[Kind, ...]] = {
    "1": ("official_account",),
    "2": ("mini_program",),
    "3": ("official_account", "mini_program"),
}


@get(list(PAGE_PATHS), media_type="text/html")
async def show_login_page(request: Request[Any, Any, Any], world: NamedDependency[World]) -> Response[str]:
    """Step 1 lists the accounts that may authorize; step 2 (``authorizer_appid`` chosen) the sets."""
    query = {name: request.query_params[name] for name in request.query_params}
    component = world.components.get(query.get("component_appid", ""))
    if component is None:
        return _page("Authorization", "<p>unknown component_appid</p>", 400)
    if refusal := _entry_refused(request, component.config.auth_domain, query.get("redirect_uri", "")):
        return _page("Authorization", refusal, 403)
    try:
        code = world.pending_pre_auth_code(query.get("pre_auth_code", ""))
    except ControlError as exc:
        return _page("Authorization", f"<p>{escape(exc.detail)}</p>", exc.status)
    if code.component_appid != query.get("component_appid"):
        return _page("Authorization", "<p>component_appid does not match the pre-auth code</p>", 400)
    chosen = query.get("biz_appid") or query.get("authorizer_appid")
    if chosen:
        return _choose_sets(world, query, chosen)
    kinds = AUTH_TYPE_KINDS.get(query.get("auth_type", "3"), AUTH_TYPE_KINDS["3"])
    links = [
        f'<li><a href="{escape(PAGE_PATH + "?" + urlencode(query | {"authorizer_appid": appid}))}">'
        f"{escape(a.profile.nick_name)}</a> <code>{escape(appid)}</code> ({escape(a.kind)})</li>"
        for appid, a in world.authorizers.items()
        if a.kind in kinds
    ]
    listing = f"<ul>{''.join(links)}</ul>" if links else "<p>No seeded account of this type.</p>"
    intro = f"<p>Which account authorizes <code>{escape(code.component_appid)}</code>?</p>"
    return _page("Choose an account", intro + listing)


@post(PAGE_PATH, status_code=303)
async def approve_on_login_page(
    request: Request[Any, Any, Any], world: NamedDependency[World], pusher: NamedDependency[Pusher]
) -> Response[str]:
    """The administrator's approval: push the event, then send the browser to the redirect URI."""
    form = await request.form()
    choice = ApproveBody(
        authorizer_appid=str(form.get("authorizer_appid", "")),
        func_ids=[int(value) for value in form.getall("func_id", []) if str(value).isdigit()],
        redirect_uri=str(form.get("redirect_uri", "")) or None,
    )
    try:
        approved = await authorize(world, pusher, str(form.get("pre_auth_code", "")), choice)
    except ControlError as exc:
        return _page("Authorization failed", f"<p>{escape(exc.detail)}</p>", exc.status)
    if approved.redirect_url:
        return Redirect(approved.redirect_url, status_code=303)
    body = f"<p>Authorized. Authorization code: <code>{escape(approved.auth_code)}</code></p>"
    return _page("Authorized", body)


def login_page_handlers() -> list[Any]:
    """The page's two handlers; they need the ``world`` and ``pusher`` dependencies."""
    return [show_login_page, approve_on_login_page]


def _entry_refused(request: Request[Any, Any, Any], auth_domain: str | None, redirect_uri: str) -> str | None:
    """WeChat's words when the browser did not come from the registered domain (or the redirect URI is
    not on it); None when the page may open."""
    referer = request.headers.get("referer", "")
    came_from = urlsplit(referer)
    if came_from.netloc == request.headers.get("host") and came_from.path in PAGE_PATHS:
        return None  # a step inside this page
    entry = came_from.hostname or ""
    if (
        auth_domain
        and _on_domain(came_from.netloc, auth_domain)
        and _on_domain(urlsplit(redirect_uri).netloc, auth_domain)
    ):
        return None
    words = f"<p>{escape(DOMAIN_REFUSAL.format(entry or '空'))}</p>"
    if not auth_domain:
        words += "<p>(The simulator has no 授权发起页域名 for this component: give it auth_domain.)</p>"
    return words


def _on_domain(netloc: str, auth_domain: str) -> bool:
    """Whether ``netloc`` is on the registered domain: its host, or its host and port when the domain
    names one."""
    if not netloc:
        return False
    try:
        here, registered = urlsplit(f"//{netloc}"), urlsplit(f"//{auth_domain}")
        return here.hostname == registered.hostname and registered.port in (None, here.port)
    except ValueError:  # a port that is not a number
        return False


def _choose_sets(world: World, query: dict[str, str], appid: str) -> Response[str]:
    authorizer = world.authorizers.get(appid)
    if authorizer is None:
        return _page("Authorization", f"<p>No seeded account {escape(appid)}</p>", 404)
    component_appid = query["component_appid"]
    held = world.exclusive_elsewhere(appid, component_appid)
    current = world.authorizations.get((component_appid, appid))
    granted = set(current.func_ids) if current is not None and current.live else None
    boxes = []
    for func_id, name in SET_NAMES[authorizer.kind].items():
        checked = func_id not in held and (granted is None or func_id in granted)
        note = f" (granted to {escape(held[func_id])})" if func_id in held else ""
        boxes.append(
            f'<li><label><input type="checkbox" name="func_id" value="{func_id}"'
            f"{' checked' if checked else ''}{' disabled' if func_id in held else ''}> "
            f"{func_id} {escape(name)}{note}</label></li>"
        )
    hidden = "".join(
        f'<input type="hidden" name="{name}" value="{escape(value)}">'
        for name, value in (
            ("pre_auth_code", query["pre_auth_code"]),
            ("redirect_uri", query.get("redirect_uri", "")),
            ("authorizer_appid", appid),
        )
    )
    form = (
        f'<form method="post" action="{PAGE_PATH}">{hidden}<ul>{"".join(boxes)}</ul>'
        '<button type="submit">Authorize</button></form>'
    )
    intro = (
        f"<p><strong>{escape(authorizer.profile.nick_name)}</strong> authorizes "
        f"<code>{escape(component_appid)}</code> to:</p>"
    )
    return _page("Authorize", intro + form)


def _page(title: str, body: str, status: int = 200) -> Response[str]:
    html = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title></head>'
        f"<body><h1>{escape(title)}</h1>{body}</body></html>"
    )
    return Response(html, status_code=status, media_type="text/html")
