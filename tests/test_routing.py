"""Routing: which component serves an authorizer for which API (SPEC §5)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import Refused
from gateway.http.errors import status_of
from gateway.wechat.routing import (
    API_PERMISSION_SETS,
    PERMISSION_SET_NAMES,
    Grant,
    Status,
    choose_platform,
    required_sets,
)

APPID = "wxauth0000000001"
ORDER = ("retail", "finance", "services")
NO_PINS: Mapping[str, str] = MappingProxyType({})


def grant(platform_id: str, *func_ids: int, status: Status = "active") -> Grant:
    return Grant(platform_id, frozenset(func_ids), status)


# The authorizer served by two components: retail holds open-account management, finance web service.
SPLIT = (grant("retail", 1, 2, 24), grant("finance", 4, 15))


class Case(NamedTuple):
    grants: tuple[Grant, ...]
    path: str | None
    expected: str | tuple[int, str]  # a platform id, or (HTTP status, code) of the refusal
    pins: Mapping[str, str] = NO_PINS
    order: tuple[str, ...] = ORDER
    words: tuple[str, ...] = ()  # what the error message must say


CASES = {
    # 1. A pin wins, without looking at permission sets, as long as its grant is active.
    "pin wins over a covering platform": Case(SPLIT, "cgi-bin/open/bind", "finance", pins={APPID: "finance"}),
    "pin wins for tokens": Case(SPLIT, None, "finance", pins={APPID: "finance"}),
    "pin of another authorizer is ignored": Case(
        SPLIT, "cgi-bin/open/bind", "retail", pins={"wxother0000000001": "finance"}
    ),
    "pinned but revoked": Case(
        (grant("retail", 24), grant("finance", 4, status="revoked")),
        "cgi-bin/open/bind",
        (410, "authorization_revoked"),
        pins={APPID: "finance"},
        words=(APPID, "'finance'", "revoked"),
    ),
    "pinned but reauthorization required": Case(
        (grant("retail", 24), grant("finance", 4, status="reauthorization_required")),
        None,
        (409, "reauthorization_required"),
        pins={APPID: "finance"},
        words=(APPID, "'finance'"),
    ),
    "pinned but absent": Case(
        (grant("retail", 24),),
        None,
        (404, "authorizer_unknown"),
        pins={APPID: "finance"},
        words=(APPID, "pinned to platform 'finance', which holds no authorization for it"),
    ),
    # 2. Registry order, not the order of the grants.
    "registry order beats grant order": Case(
        (grant("services", 2), grant("finance", 2), grant("retail", 1)), "cgi-bin/user/get", "finance"
    ),
    "registry order for tokens": Case((grant("services", 2), grant("finance", 2)), None, "finance"),
    "registry order as given": Case(
        (grant("retail", 2), grant("finance", 2)), "cgi-bin/user/get", "finance", order=("finance", "retail")
    ),
    # One authorizer, two components, by API.
    "split: open/get to the holder of 24": Case(SPLIT, "cgi-bin/open/get", "retail"),
    "split: menu/create to the holder of 15": Case(SPLIT, "cgi-bin/menu/create", "finance"),
    "split: web oauth to the holder of 4": Case(SPLIT, "sns/oauth2/component/access_token", "finance"),
    "split: user/get to the holder of 2": Case(SPLIT, "cgi-bin/user/get", "retail"),
    "split: unknown path to the first live": Case(SPLIT, "cgi-bin/not/in/the/table", "retail"),
    "split: token to the first live": Case(SPLIT, None, "retail"),
    "split: a no-set API to the first live": Case(SPLIT, "cgi-bin/ticket/getticket", "retail"),
    # Exclusive sets: only the one component holding them serves those APIs.
    "exclusive 18: code management": Case(
        (grant("retail", 17, 19), grant("finance", 18)), "wxa/submit_audit", "finance"
    ),
    # A component login needs only a live authorization: WeChat's page names no set (not 18).
    "jscode2session: the first live authorization": Case(
        (grant("retail", 17, 19), grant("services", 18)), "sns/component/jscode2session", "retail"
    ),
    "jscode2session: no set at all": Case(
        (grant("retail", status="revoked"), grant("finance")), "sns/component/jscode2session", "finance"
    ),
    # Customer-service messages: 1, 6 or 19 (sendCustomMessage's page).
    "custom/send with multi-customer-service 6": Case(
        (grant("retail", 2), grant("finance", 6)), "cgi-bin/message/custom/send", "finance"
    ),
    "exclusive 40: plugins": Case((grant("retail", 18), grant("finance", 40)), "wxa/plugin", "finance"),
    "exclusive 4 elsewhere: web oauth refused": Case(
        (grant("retail", 1, 2), grant("finance", 15)),
        "sns/oauth2/component/access_token",
        (409, "permission_set_missing"),
        words=("permission set 4 (web service)", APPID, "'retail' and 'finance'"),
    ),
    # Mini programs.
    "mini program: open/bind with 25": Case(
        (grant("retail", 17), grant("finance", 18, 25)), "cgi-bin/open/bind", "finance"
    ),
    "mini program: open/have with 30": Case(
        (grant("retail", 17), grant("finance", 18, 30)), "cgi-bin/open/have", "finance"
    ),
    "official account: open/have with 3": Case(
        (grant("retail", 1), grant("finance", 3)), "cgi-bin/open/sameentity", "finance"
    ),
    "open/have is not served by 24": Case(
        (grant("retail", 24),), "cgi-bin/open/have", (409, "permission_set_missing"), words=("3 (", "30 (")
    ),
    "mini program customer service message with 19": Case(
        (grant("retail", 17), grant("finance", 19)), "cgi-bin/message/custom/send", "finance"
    ),
    # Revoked and stale grants are skipped.
    "revoked grant skipped": Case(
        (grant("retail", 2, status="revoked"), grant("finance", 2)), "cgi-bin/user/get", "finance"
    ),
    "reauth grant skipped": Case(
        (grant("retail", 24, status="reauthorization_required"), grant("finance", 25)),
        "cgi-bin/open/get",
        "finance",
    ),
    "revoked grant skipped for tokens": Case(
        (grant("retail", 1, status="revoked"), grant("finance", 1)), None, "finance"
    ),
    "revoked holder of the set does not count": Case(
        (grant("retail", 24, status="revoked"), grant("finance", 4)),
        "cgi-bin/open/bind",
        (409, "permission_set_missing"),
        words=("'finance'",),
    ),
    # 3. Nothing live.
    "only revoked": Case(
        (grant("retail", 1, status="revoked"), grant("finance", 2, status="revoked")),
        None,
        (410, "authorization_revoked"),
        words=(APPID, "'retail' and 'finance'"),
    ),
    "only revoked, API path given": Case(
        (grant("retail", 24, status="revoked"),), "cgi-bin/open/bind", (410, "authorization_revoked")
    ),
    "reauth only": Case(
        (grant("retail", 1, status="reauthorization_required"),),
        "cgi-bin/user/get",
        (409, "reauthorization_required"),
        words=(APPID, "'retail'"),
    ),
    "reauth and revoked: reauth": Case(
        (grant("retail", 1, status="revoked"), grant("finance", 1, status="reauthorization_required")),
        None,
        (409, "reauthorization_required"),
        words=("'finance'",),
    ),
    "no grants at all": Case((), None, (404, "authorizer_unknown"), words=(APPID,)),
    "no grants at all, API path given": Case((), "cgi-bin/user/get", (404, "authorizer_unknown")),
    "no coverage names the sets": Case(
        (grant("retail", 1, 2), grant("finance", 15)),
        "cgi-bin/open/bind",
        (409, "permission_set_missing"),
        words=(
            "no platform holds permission set 24 (open-platform account management, official account) "
            "or 25 (open-platform account management, mini program) for " + APPID,
            "cgi-bin/open/bind",
            "'retail' and 'finance'",
        ),
    ),
    "no coverage under a prefix entry": Case(
        (grant("retail", 1),),
        "/cgi-bin/menu/create?access_token=SECRETTOKEN",
        (409, "permission_set_missing"),
    ),
    # Unknown paths go to the first live grant, whatever it holds.
    "unknown path to the first live, skipping revoked": Case(
        (grant("retail", 24, status="revoked"), grant("finance"), grant("services", 1)),
        "datacube/getweanalysisappiddailysummarytrend",
        "finance",
    ),
    # Path normalization.
    "leading slash": Case(SPLIT, "/cgi-bin/menu/create", "finance"),
    "query string": Case(SPLIT, "cgi-bin/open/get?access_token=SECRETTOKEN", "retail"),
    "leading slash and query string": Case(SPLIT, "/cgi-bin/menu/get?access_token=x&y=1", "finance"),
    "prefix entry": Case((grant("retail", 1), grant("finance", 11)), "cgi-bin/material/add_news", "finance"),
    "longest prefix wins": Case(
        (grant("retail", 1), grant("finance", 7)), "cgi-bin/message/template/send", "finance"
    ),
    "exact beats prefix": Case(
        (grant("retail", 7), grant("finance", 1)), "cgi-bin/message/custom/send", "finance"
    ),
    "prefix does not match without its slash": Case(
        (grant("retail", 1), grant("finance", 2)), "cgi-bin/userinfo", "retail"
    ),
    # Grants for platforms the registry does not name.
    "unregistered platform ignored": Case(
        (grant("legacy", 24), grant("finance", 4)),
        "cgi-bin/open/bind",
        (409, "permission_set_missing"),
        words=("'finance'",),
    ),
    "unregistered platform ignored for tokens": Case(
        (grant("legacy", 1), grant("finance", 4)), None, "finance"
    ),
    "only unregistered platforms: unknown": Case((grant("legacy", 1),), None, (404, "authorizer_unknown")),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_choose_platform(case: Case) -> None:
    def choose() -> str:
        return choose_platform(case.order, case.pins, APPID, case.grants, case.path)

    if isinstance(case.expected, str):
        assert not case.words
        assert choose() == case.expected
        return
    with pytest.raises(Refused) as caught:
        choose()
    assert (status_of(caught.value), caught.value.code) == case.expected
    for words in case.words:
        assert words in caught.value.message
    assert "SECRETTOKEN" not in caught.value.message
    assert "access_token" not in caught.value.message


def test_first_grant_of_a_platform_counts() -> None:
    grants = (grant("retail", 1, status="revoked"), grant("retail", 1), grant("finance", 1))
    assert choose_platform(ORDER, NO_PINS, APPID, grants, None) == "finance"


REQUIRED = {
    "cgi-bin/message/custom/send": frozenset({1, 6, 19}),
    "cgi-bin/message/custom/typing": frozenset({1, 6, 19}),
    "cgi-bin/message/mass/sendall": frozenset({7}),
    "cgi-bin/message/template/send": frozenset({7}),
    "cgi-bin/user/get": frozenset({2}),
    "cgi-bin/user/info/batchget": frozenset({2}),
    "cgi-bin/tags/create": frozenset({2}),
    "cgi-bin/menu/create": frozenset({15}),
    "cgi-bin/get_current_selfmenu_info": frozenset({15}),
    "cgi-bin/media/upload": frozenset({11}),
    "cgi-bin/material/get_material": frozenset({11}),
    "cgi-bin/qrcode/create": frozenset({3}),
    "cgi-bin/shorturl": frozenset({3}),
    "cgi-bin/customservice/getkflist": frozenset({6}),
    "customservice/kfaccount/add": frozenset({6}),
    "card/create": frozenset({8}),
    "cgi-bin/open/create": frozenset({24, 25}),
    "cgi-bin/open/bind": frozenset({24, 25}),
    "cgi-bin/open/unbind": frozenset({24, 25}),
    "cgi-bin/open/get": frozenset({24, 25}),
    "cgi-bin/open/have": frozenset({3, 30}),
    "cgi-bin/open/sameentity": frozenset({3, 30}),
    "sns/oauth2/component/access_token": frozenset({4}),
    "sns/oauth2/component/refresh_token": frozenset({4}),
    "sns/component/jscode2session": frozenset(),
    "wxa/getwxacode": frozenset({17}),
    "wxa/getwxacodeunlimit": frozenset({17}),
    "cgi-bin/wxaapp/createwxaqrcode": frozenset({17}),
    "wxa/commit": frozenset({18}),
    "wxa/submit_audit": frozenset({18}),
    "wxa/release": frozenset({18}),
    "wxa/get_latest_auditstatus": frozenset({18}),
    "wxa/plugin": frozenset({40}),
    "cgi-bin/ticket/getticket": frozenset(),
    "cgi-bin/clear_quota": frozenset(),
    # Normalization.
    "/cgi-bin/user/get": frozenset({2}),
    "//cgi-bin/user/get": frozenset({2}),
    "/cgi-bin/user/get?openid=o1&lang=zh_CN": frozenset({2}),
    "cgi-bin/open/bind?access_token=x": frozenset({24, 25}),
    "/cgi-bin/ticket/getticket?type=jsapi": frozenset(),
    "cgi-bin/menu/": frozenset({15}),
}

UNKNOWN = (
    "",
    "/",
    "cgi-bin/unknown",
    "cgi-bin/user",  # a prefix entry needs its slash
    "cgi-bin/open/createx",  # exact entries are not prefixes
    "wxa/plugin/x",
    "cgi-bin/message/other",  # no entry for the parent of the prefix entries
    "x/cgi-bin/user/get",
    "?cgi-bin/user/get",
)


@pytest.mark.parametrize(("path", "expected"), REQUIRED.items(), ids=REQUIRED.keys())
def test_required_sets(path: str, expected: frozenset[int]) -> None:
    assert required_sets(path) == expected


@pytest.mark.parametrize("path", UNKNOWN)
def test_required_sets_unknown(path: str) -> None:
    assert required_sets(path) is None


def test_table_is_well_formed() -> None:
    for path, sets in API_PERMISSION_SETS.items():
        assert path == path.strip(), path
        assert not path.startswith("/"), path
        assert "?" not in path, path
        assert "#" not in path, path
        assert required_sets(path) == sets, path
        for set_id in sets:
            assert set_id in PERMISSION_SET_NAMES, (path, set_id)


# Property: for any grants, order, pins and path, the answer is an active grant (covering the path when
# it is known and no pin applies) or a refusal: 404, 409 or 410.
PLATFORMS = ("retail", "finance", "services", "legacy")
TABLE_SET_IDS = sorted({i for sets in API_PERMISSION_SETS.values() for i in sets} | {99})
STATUSES: tuple[Status, ...] = ("active", "revoked", "reauthorization_required")

grants_strategy = st.lists(
    st.builds(
        Grant,
        platform_id=st.sampled_from(PLATFORMS),
        func_ids=st.frozensets(st.sampled_from(TABLE_SET_IDS), max_size=4),
        status=st.sampled_from(STATUSES),
    ),
    max_size=5,
)
paths_strategy = st.one_of(
    st.none(),
    st.sampled_from(sorted(API_PERMISSION_SETS)).flatmap(
        lambda p: st.sampled_from([p, "/" + p, p + "?access_token=x", p + "sub/path"])
    ),
    st.text(max_size=30),
)


ERRORS = {
    (409, "permission_set_missing"),
    (404, "authorizer_unknown"),
    (409, "reauthorization_required"),
    (410, "authorization_revoked"),
}


@given(
    grants=grants_strategy,
    order=st.lists(st.sampled_from(PLATFORMS[:3]), unique=True),
    pin=st.none() | st.sampled_from(PLATFORMS),
    path=paths_strategy,
)
def test_choose_platform_property(
    grants: list[Grant], order: list[str], pin: str | None, path: str | None
) -> None:
    pins = {} if pin is None else {APPID: pin}
    error: Refused | None = None
    chosen = ""
    try:
        chosen = choose_platform(order, pins, APPID, grants, path)
    except Refused as exc:
        error = exc
    if error is not None:
        assert (status_of(error), error.code) in ERRORS
        return
    counted = next(g for g in grants if g.platform_id == chosen)
    assert counted.status == "active"
    if pin is not None:
        assert chosen == pin
        return
    assert chosen in order
    needed = None if path is None else required_sets(path)
    if needed:
        assert counted.func_ids & needed
    # ... and no platform earlier in the registry would have done.
    first: dict[str, Grant] = {}
    for g in reversed(grants):
        first[g.platform_id] = g
    for earlier in order[: order.index(chosen)]:
        skipped = first.get(earlier)
        if skipped is not None and skipped.status == "active":
            assert needed
            assert not skipped.func_ids & needed
