"""Which component serves an authorizer for which API (SPEC §5). Pure: no I/O.

Every WeChat API needs one of a few permission sets (``wechat-protocol.md`` §7, the ``funcscope_category``
ids of ``func_info``), and some sets are exclusive: an account grants open-account management (24, 25),
web service (4), code management (18) or plugins (40) to ONE component only. So one authorizer may be
served by different components for different APIs, and `choose_platform` decides, in this order:

1. a pin in the registry wins, whatever its permission sets (but it must hold a live authorization);
2. otherwise the first platform, in registry order, whose active grant holds one of the sets the API
   needs (`required_sets`); for token vending, for an API that needs no particular set and for a path
   the table does not know, the first active grant;
3. otherwise a refusal: `PermissionSetMissing` (live grants, none with a needed set), else the
   `NoLiveAuthorization` that says why none is live (`ReauthorizationRequired`, `AuthorizationRevoked`,
   `AuthorizerUnknown`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Literal

import msgspec

from gateway.errors import (
    AuthorizationRevoked,
    AuthorizerUnknown,
    NoLiveAuthorization,
    PermissionSetMissing,
    ReauthorizationRequired,
)

__all__ = [
    "API_PERMISSION_SETS",
    "MINI_PROGRAM_SETS",
    "OFFICIAL_ACCOUNT_SETS",
    "PERMISSION_SET_NAMES",
    "Grant",
    "Status",
    "choose_platform",
    "required_sets",
    "table_entry",
]

# API path (no leading "/", no query) → the permission sets of which ANY ONE allows the call. A key ending
# in "/" matches every path under it; an exact key beats a prefix, and the longest prefix wins.
# frozenset() means the API needs no particular set, only a live authorization.
#
# Sources, abbreviated beside each entry (D = https://developers.weixin.qq.com/doc):
#   [api]   the API's own page, "第三方调用 - 该接口所属的权限集 id 为: …" (D/service/api/…,
#           D/oplatform/openApi/…, D/miniprogram/dev/server/API/…), which names the sets exactly;
#   [OA]    D/oplatform/Third-party_Platforms/2.0/product/offical_account_authority.html, [MP] the same for
#           mini programs (miniprogram_authority.html): each set's name and description, no per-API list;
#   [§n]    wechat-protocol.md section n.
# "assumed" marks an entry taken from a set's description alone, where no page names the set for the API.
API_PERMISSION_SETS: Mapping[str, frozenset[int]] = MappingProxyType(
    {
        # [api] sendCustomMessage (D/service/api/customer/message/api_sendcustommessage): 1, 6, 19 (and
        # 100-101, sets of the newer service-account list this table does not route by).
        "cgi-bin/message/custom/send": frozenset({1, 6, 19}),
        # assumed: typing is documented beside custom/send (same customer-service message family).
        "cgi-bin/message/custom/typing": frozenset({1, 6, 19}),
        # assumed from [OA] 7 "群发与通知: 群发消息、文章管理、发送模板消息".
        "cgi-bin/message/mass/": frozenset({7}),
        "cgi-bin/message/template/": frozenset({7}),
        "cgi-bin/template/": frozenset({7}),
        # [api] getFans (D/service/api/usermanage/userinfo/api_getfans): 2 (and 100); tags assumed from
        # [OA] 2 "用户管理: 获取用户基本信息,进行用户分组管理".
        "cgi-bin/user/": frozenset({2}),
        "cgi-bin/tags/": frozenset({2}),
        # [api] createCustomMenu (D/service/api/custommenu/api_createcustommenu): 15; the other menu APIs
        # assumed alike ([OA] 15 菜单管理).
        "cgi-bin/menu/": frozenset({15}),
        "cgi-bin/get_current_selfmenu_info": frozenset({15}),
        # assumed from [OA] 11 "素材管理: 多媒体素材以及多媒体文件管理".
        "cgi-bin/media/": frozenset({11}),
        "cgi-bin/material/": frozenset({11}),
        # assumed from [OA] 3 "账号服务: … 生成带参二维码 …".
        "cgi-bin/qrcode/create": frozenset({3}),
        "cgi-bin/shorturl": frozenset({3}),
        # [api] getAccountBasicInfo (D/oplatform/openApi/miniprogram-management/basic-info-management/
        # api_getaccountbasicinfo): 3, 30.
        "cgi-bin/account/getaccountbasicinfo": frozenset({3, 30}),
        # assumed from [OA] 6 微信多客服, under both hosts' path spellings.
        "cgi-bin/customservice/": frozenset({6}),
        "customservice/": frozenset({6}),
        # assumed from [OA] 8 微信卡券.
        "card/": frozenset({8}),
        # [§6] open-platform account management, exclusive: 24 (official account) or 25 (mini program).
        "cgi-bin/open/create": frozenset({24, 25}),
        "cgi-bin/open/bind": frozenset({24, 25}),
        "cgi-bin/open/unbind": frozenset({24, 25}),
        "cgi-bin/open/get": frozenset({24, 25}),
        # [§6] getBindOpenAccount / getBindOpenAccountEntity: 3 or 30, not 24/25.
        "cgi-bin/open/have": frozenset({3, 30}),
        "cgi-bin/open/sameentity": frozenset({3, 30}),
        # Web OAuth on behalf of an official account. The OAuth page (official_account_website_authorization)
        # names no set id; [OA] 4 网页服务 "帮助公众号实现H5网页服务" is exclusive, and community answers
        # about 48001 on sns/oauth2/component/access_token trace it to the grants: assumed 4.
        "sns/oauth2/component/": frozenset({4}),
        # [api] thirdpartyCode2Session (D/oplatform/openApi/miniprogram-management/login/
        # api_thirdpartycode2session): no set named, only an authorization (61003 without one) [§10].
        "sns/component/jscode2session": frozenset(),
        # [api] createQRCode (D/miniprogram/dev/server/API/qrcode-link/qr-code/api_createqrcode): 17;
        # getwxacode and getwxacodeunlimit assumed alike ([MP] 17 "获取小程序码和小程序二维码").
        "wxa/getwxacode": frozenset({17}),
        "wxa/getwxacodeunlimit": frozenset({17}),
        "cgi-bin/wxaapp/createwxaqrcode": frozenset({17}),
        # [api] commit (D/oplatform/openApi/miniprogram-management/code-management/api_commit): 18; the rest
        # of code management, audit, release, domains and testers assumed alike ([MP] 18, exclusive).
        "wxa/commit": frozenset({18}),
        "wxa/get_qrcode": frozenset({18}),
        "wxa/get_category": frozenset({18}),
        "wxa/get_page": frozenset({18}),
        "wxa/submit_audit": frozenset({18}),
        "wxa/get_auditstatus": frozenset({18}),
        "wxa/get_latest_auditstatus": frozenset({18}),
        "wxa/undocodeaudit": frozenset({18}),
        "wxa/release": frozenset({18}),
        "wxa/revertcoderelease": frozenset({18}),
        "wxa/grayrelease": frozenset({18}),
        "wxa/modify_domain": frozenset({18}),
        "wxa/setwebviewdomain": frozenset({18}),
        "wxa/bind_tester": frozenset({18}),
        "wxa/unbind_tester": frozenset({18}),
        "wxa/memberauth": frozenset({18}),
        # assumed from [MP] 40 小程序插件管理 (exclusive): one path, the action in the body.
        "wxa/plugin": frozenset({40}),
        "wxa/devplugin": frozenset({40}),
        # Any authorization will do. getticket: SPEC §4 vends the JS-SDK ticket of every authorizer and no
        # page names a set for it (D/service/api/webdev/jssdk/api_getticket says nothing of components):
        # assumed; clear_quota [§3]; quota, rid and IP diagnostics assumed (account tools, no set named).
        "cgi-bin/ticket/getticket": frozenset(),
        "cgi-bin/clear_quota": frozenset(),
        "cgi-bin/openapi/quota/get": frozenset(),
        "cgi-bin/openapi/rid/get": frozenset(),
        "cgi-bin/getcallbackip": frozenset(),
        "cgi-bin/get_api_domain_ip": frozenset(),
    }
)

# The permission sets an official account / a mini program can grant (wechat-protocol.md §7, including
# the legacy ids 14 and 16 and the older mini-program ids).
OFFICIAL_ACCOUNT_SETS: frozenset[int] = frozenset(
    {
        1,
        2,
        3,
        4,
        5,
        6,
        7,
        8,
        9,
        10,
        11,
        12,
        13,
        14,
        15,
        16,
        22,
        23,
        24,
        26,
        27,
        33,
        34,
        44,
        46,
        47,
        54,
        66,
        89,
        113,
    }
)
MINI_PROGRAM_SETS: frozenset[int] = frozenset(
    {
        17,
        18,
        19,
        20,
        21,
        25,
        30,
        31,
        36,
        37,
        40,
        41,
        45,
        48,
        49,
        51,
        52,
        57,
        65,
        67,
        70,
        71,
        73,
        76,
        81,
        84,
        85,
    }
)

# Names of the permission sets of wechat-protocol.md §7, for messages.
PERMISSION_SET_NAMES: Mapping[int, str] = MappingProxyType(
    {
        1: "message management",
        2: "user management",
        3: "account service",
        4: "web service",
        5: "WeChat shop",
        6: "multi-customer-service",
        7: "broadcast and notifications",
        8: "cards and coupons",
        9: "Scan",
        10: "WiFi",
        11: "media assets",
        12: "Shake Nearby",
        13: "stores",
        15: "custom menu",
        17: "mini-program codes",
        18: "development and data analysis",
        19: "mini-program customer service",
        20: "WeChat login",
        21: "data analysis",
        22: "city services",
        23: "ads",
        24: "open-platform account management, official account",
        25: "open-platform account management, mini program",
        26: "e-invoice",
        27: "fast mini-program registration",
        30: "mini-program basic info",
        31: "verification-name check",
        33: "mini-program association",
        34: "product library",
        37: "nearby",
        40: "plugins",
        41: "Haowuquan",
        45: "logistics",
        49: "cloud development",
        51: "instant delivery",
        52: "live streaming",
        54: "service-account conversation",
        89: "subscription notifications",
    }
)

# Prefix keys, longest first, so the first match is the longest.
_PREFIXES = tuple(sorted((key for key in API_PERMISSION_SETS if key.endswith("/")), key=len, reverse=True))

Status = Literal["active", "revoked", "reauthorization_required"]


class Grant(msgspec.Struct, frozen=True):
    """One platform's authorization by an authorizer: the permission sets granted and its state."""

    platform_id: str
    func_ids: frozenset[int]
    status: Status


def required_sets(api_path: str) -> frozenset[int] | None:
    """Permission-set ids of which ANY ONE allows calling `api_path` (``cgi-bin/user/get`` or
    ``/cgi-bin/user/get?x=1``); frozenset() when the API needs no particular set; None when the table
    does not know the path."""
    entry = _table_entry(api_path)
    return None if entry is None else API_PERMISSION_SETS[entry]


def table_entry(api_path: str) -> str | None:
    """The key of `API_PERMISSION_SETS` that governs ``api_path`` (an exact path, or a prefix ending in
    ``/``), or None when the table does not know the path: a bounded name for any path a client sends."""
    return _table_entry(api_path)


def choose_platform(
    platform_order: Sequence[str],
    pins: Mapping[str, str],
    authorizer_appid: str,
    grants: Sequence[Grant],
    api_path: str | None,
) -> str:
    """The platform id to serve this call. api_path None means 'any' (token vending).

    `platform_order` is the registry's order of preference; `grants` are the authorizer's authorizations,
    one per platform (should a platform appear twice, its first grant counts). Raises
    `PermissionSetMissing` or a `NoLiveAuthorization` as the module docstring says.
    """
    by_platform: dict[str, Grant] = {}
    for grant in grants:
        by_platform.setdefault(grant.platform_id, grant)

    pinned = pins.get(authorizer_appid)
    if pinned is not None:
        return _pinned(authorizer_appid, pinned, by_platform.get(pinned))

    known = [by_platform[p] for p in dict.fromkeys(platform_order) if p in by_platform]
    active = [g for g in known if g.status == "active"]
    if not active:
        raise _no_live_grant(authorizer_appid, known)

    entry = None if api_path is None else _table_entry(api_path)
    if entry is None or not API_PERMISSION_SETS[entry]:
        return active[0].platform_id
    needed = API_PERMISSION_SETS[entry]
    for grant in active:
        if grant.func_ids & needed:
            return grant.platform_id
    raise PermissionSetMissing(
        authorizer_appid,
        f"no platform holds permission set {_describe_sets(needed)} for {authorizer_appid}, "
        f"needed for {_describe_entry(entry)}; its live authorizations are on "
        f"{_join(repr(g.platform_id) for g in active)}",
    )


def _normalize(api_path: str) -> str:
    """The path without query string, fragment and leading slashes."""
    return api_path.partition("?")[0].partition("#")[0].lstrip("/")


def _table_entry(api_path: str) -> str | None:
    """The key of `API_PERMISSION_SETS` governing `api_path`: exact first, then the longest prefix."""
    path = _normalize(api_path)
    if path in API_PERMISSION_SETS and not path.endswith("/"):
        return path
    return next((prefix for prefix in _PREFIXES if path.startswith(prefix)), None)


def _pinned(authorizer_appid: str, platform_id: str, grant: Grant | None) -> str:
    """The pinned platform if its grant is live, else the error naming the pin."""
    where = f"authorizer {authorizer_appid} is pinned to platform {platform_id!r}"
    if grant is None:
        raise AuthorizerUnknown(authorizer_appid, f"{where}, which holds no authorization for it")
    if grant.status == "revoked":
        raise AuthorizationRevoked(authorizer_appid, f"{where}, whose authorization was revoked")
    if grant.status == "reauthorization_required":
        raise ReauthorizationRequired(
            authorizer_appid,
            f"{where}, whose authorization must be renewed: the account has to authorize it again",
        )
    return platform_id


def _no_live_grant(authorizer_appid: str, known: Sequence[Grant]) -> NoLiveAuthorization:
    """The error when no platform of the registry holds an active grant for the authorizer."""
    stale = [g.platform_id for g in known if g.status == "reauthorization_required"]
    if stale:
        return ReauthorizationRequired(
            authorizer_appid,
            f"authorizer {authorizer_appid} must authorize platform {_join(map(repr, stale))} again: "
            "no platform holds a live authorization for it",
        )
    if known:
        return AuthorizationRevoked(
            authorizer_appid,
            f"authorizer {authorizer_appid} revoked its authorization of "
            f"{_join(repr(g.platform_id) for g in known)}",
        )
    return AuthorizerUnknown(authorizer_appid, f"no platform holds an authorization for {authorizer_appid}")


def _describe_sets(ids: frozenset[int]) -> str:
    """``24 (open-platform account management, official account) or 25 (...)``."""
    return _join(
        (f"{i} ({PERMISSION_SET_NAMES[i]})" if i in PERMISSION_SET_NAMES else str(i) for i in sorted(ids)),
        "or",
    )


def _describe_entry(entry: str) -> str:
    """The table key as words; the caller's own path is not quoted (it may carry anything)."""
    return f"the APIs under {entry}" if entry.endswith("/") else entry


def _join(items: Iterable[str], conjunction: str = "and") -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    words = list(items)
    if len(words) <= 1:
        return "".join(words)
    return f"{', '.join(words[:-1])} {conjunction} {words[-1]}"
