"""Safe XML parsing, envelopes and the component events."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import XmlRejected
from gateway.xml import (
    Authorized,
    ComponentVerifyTicket,
    FastRegister,
    OtherComponentEvent,
    Unauthorized,
    UpdateAuthorized,
    build_xml,
    flatten,
    parse_component_event,
    parse_envelope,
    parse_xml,
)

HOSTILE = {
    "xxe-file": b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml><A>&e;</A></xml>',
    "xxe-http": b'<!DOCTYPE x [<!ENTITY e SYSTEM "http://127.0.0.1:9/">]><xml><A>&e;</A></xml>',
    "billion-laughs": (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
        b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]><xml>&lol3;</xml>'
    ),
    "dtd-only": b'<!DOCTYPE xml SYSTEM "http://127.0.0.1:9/x.dtd"><xml/>',
    "parameter-entity": b'<!DOCTYPE x [<!ENTITY % p SYSTEM "http://127.0.0.1:9/">%p;]><xml/>',
    "deep": b"<xml>" + b"<a>" * 50 + b"x" + b"</a>" * 50 + b"</xml>",
    "not-xml": b"hello world",
    "empty": b"",
    "json": b'{"Encrypt": "abc"}',
    "truncated": b"<xml><Encrypt>abc</Enc",
}


@pytest.mark.parametrize("document", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_documents_are_refused(document: bytes) -> None:
    with pytest.raises(XmlRejected):
        parse_xml(document)


def test_refusal_names_the_reason() -> None:
    with pytest.raises(XmlRejected, match=r"entity declarations|DTD"):
        parse_xml(HOSTILE["billion-laughs"])
    with pytest.raises(XmlRejected, match="deeper than"):
        parse_xml(HOSTILE["deep"])


def test_envelope_forms() -> None:
    component = parse_envelope(
        b"<xml><AppId><![CDATA[wxc1]]></AppId><Encrypt><![CDATA[abc=]]></Encrypt></xml>"
    )
    assert (component.app_id, component.encrypt, component.to_user_name) == ("wxc1", "abc=", None)
    message = parse_envelope(b"<xml><ToUserName><![CDATA[gh_1]]></ToUserName><Encrypt>abc=</Encrypt></xml>")
    assert (message.app_id, message.to_user_name) == (None, "gh_1")
    with pytest.raises(XmlRejected, match="Encrypt"):
        parse_envelope(b"<xml><AppId>wxc1</AppId></xml>")
    with pytest.raises(XmlRejected, match="root element"):
        parse_envelope(b"<other><Encrypt>abc</Encrypt></other>")


@pytest.mark.parametrize("document", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_envelopes_are_refused_as_documents_are(document: bytes) -> None:
    # The envelope is read by expat directly, not by defusedxml: the same refusals, the same reasons.
    with pytest.raises(XmlRejected) as tree:
        parse_xml(document)
    with pytest.raises(XmlRejected) as envelope:
        parse_envelope(document)
    assert str(envelope.value).split(":")[0] == str(tree.value).split(":")[0]


@pytest.mark.parametrize(
    "document",
    [
        b"<xml><AppId> wxc1 </AppId><Encrypt><![CDATA[abc=]]></Encrypt></xml>",
        b'<?xml version="1.0" encoding="utf-8"?><xml><!-- c --><Encrypt>a<![CDATA[b]]>c</Encrypt></xml>',
        b"<xml><Encrypt>old</Encrypt><Encrypt>new</Encrypt><AppId><x>1</x></AppId></xml>",
        b'<xml xmlns:w="urn:w"><w:Encrypt>ns</w:Encrypt><Encrypt>plain</Encrypt><ToUserName/></xml>',
        b"<xml>\n  <Encrypt>\n  abc=\n  </Encrypt>\n  <ToUserName>gh_1</ToUserName>\n</xml>\n",
        "<xml><ToUserName>公众号</ToUserName><Encrypt>abc</Encrypt></xml>".encode(),
        '<?xml version="1.0" encoding="utf-16"?><xml><Encrypt>abc</Encrypt></xml>'.encode("utf-16"),
    ],
)
def test_envelope_fields_are_those_of_the_tree(document: bytes) -> None:
    root = parse_xml(document)
    fields = flatten(root)
    envelope = parse_envelope(document)
    assert (envelope.encrypt, envelope.app_id, envelope.to_user_name) == (
        fields["Encrypt"],
        fields.get("AppId") or None,
        fields.get("ToUserName"),
    )


def _event(fields: dict[str, str | int | dict[str, str | int]]) -> bytes:
    return build_xml(fields).encode()


def test_component_verify_ticket() -> None:
    event = parse_component_event(
        _event(
            {
                "AppId": "wxc1",
                "CreateTime": 1413192605,
                "InfoType": "component_verify_ticket",
                "ComponentVerifyTicket": "ticket@@@abc",
            }
        )
    )
    assert event == ComponentVerifyTicket("wxc1", 1413192605, "ticket@@@abc")


@pytest.mark.parametrize("kind", [Authorized, UpdateAuthorized])
def test_authorized_and_updateauthorized(kind: type[Authorized] | type[UpdateAuthorized]) -> None:
    info_type = "authorized" if kind is Authorized else "updateauthorized"
    event = parse_component_event(
        _event(
            {
                "AppId": "wxc1",
                "CreateTime": 1413192760,
                "InfoType": info_type,
                "AuthorizerAppid": "wxa1",
                "AuthorizationCode": "queryauthcode@@@x",
                "AuthorizationCodeExpiredTime": 1413196360,
                "PreAuthCode": "preauthcode@@@y",
            }
        )
    )
    assert isinstance(event, kind)
    assert (event.authorizer_appid, event.authorization_code, event.authorization_code_expired_time) == (
        "wxa1",
        "queryauthcode@@@x",
        1413196360,
    )


def test_unauthorized() -> None:
    event = parse_component_event(
        _event({"AppId": "wxc1", "CreateTime": 1, "InfoType": "unauthorized", "AuthorizerAppid": "wxa1"})
    )
    assert event == Unauthorized("wxc1", 1, "wxa1")


def test_fast_register_parses_by_element_name_in_any_order() -> None:
    event = parse_component_event(
        _event(
            {
                "info": {"taskid": "t1", "name": "ACME", "code": "123"},
                "status": 0,
                "auth_code": "code1",
                "InfoType": "notify_third_fasteregister",
                "appid": "wxnew",
                "msg": "OK",
                "CreateTime": 5,
                "AppId": "wxc1",
            }
        )
    )
    assert isinstance(event, FastRegister)
    assert (event.appid, event.status, event.auth_code, event.info["name"]) == ("wxnew", 0, "code1", "ACME")


_FAST_REGISTER = (
    b"<xml><AppId>wxc1</AppId><CreateTime>5</CreateTime><InfoType>notify_third_fasteregister</InfoType>"
    b"<appid>wxnew</appid><status>0</status>%s</xml>"
)


@pytest.mark.parametrize(
    "info",
    [
        b"<info><name> ACME </name><code><![CDATA[1]]>23</code></info>",
        b"<info><name>first</name></info><info><name>second</name></info>",  # the first, as find() does
        b"<info>plain</info><info><name>second</name></info>",  # the first has no children: empty
        b"<info><name>n</name><legal><x>deep</x></legal><name2/></info>",  # a nested block is skipped
        b'<info xmlns:w="urn:w"><w:name>ns</w:name><!-- c --><name>a<![CDATA[b]]>c</name></info>',
        b"",
    ],
)
def test_events_read_fields_and_blocks_as_the_tree_does(info: bytes) -> None:
    # Events are read by expat directly, as envelopes are: the same fields and blocks as the tree.
    document = _FAST_REGISTER % info
    root = parse_xml(document)
    event = parse_component_event(document)
    assert isinstance(event, FastRegister)
    first = root.find("info")  # as the tree reads a block: the first element of the tag, flattened
    assert event.info == ({} if first is None else flatten(first))
    assert (event.appid, event.status) == (flatten(root)["appid"], int(flatten(root)["status"]))


def test_unknown_info_type_is_kept_not_refused() -> None:
    event = parse_component_event(
        _event({"AppId": "wxc1", "CreateTime": 1, "InfoType": "something_new", "X": "y"})
    )
    assert isinstance(event, OtherComponentEvent)
    assert (event.type, event.fields["X"]) == ("something_new", "y")


@pytest.mark.parametrize(
    ("fields", "missing"),
    [
        ({"CreateTime": 1, "InfoType": "unauthorized", "AuthorizerAppid": "wxa1"}, "AppId"),
        ({"AppId": "wxc1", "InfoType": "unauthorized", "AuthorizerAppid": "wxa1"}, "CreateTime"),
        (
            {"AppId": "wxc1", "CreateTime": "soon", "InfoType": "unauthorized", "AuthorizerAppid": "wxa1"},
            "CreateTime",
        ),
        ({"AppId": "wxc1", "CreateTime": 1, "AuthorizerAppid": "wxa1"}, "InfoType"),
        ({"AppId": "wxc1", "CreateTime": 1, "InfoType": "unauthorized"}, "AuthorizerAppid"),
        ({"AppId": "wxc1", "CreateTime": 1, "InfoType": "component_verify_ticket"}, "ComponentVerifyTicket"),
    ],
)
def test_missing_or_bad_elements_are_named(fields: dict[str, str | int], missing: str) -> None:
    with pytest.raises(XmlRejected, match=missing):
        parse_component_event(_event(dict(fields)))


_xml_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\r"), max_size=200
).map(str.strip)


@settings(max_examples=200, deadline=None)
@given(
    ticket=_xml_text.filter(bool),
    app_id=st.from_regex(r"wx[a-z0-9]{1,16}", fullmatch=True),
    create_time=st.integers(0, 2**40),
)
def test_build_then_parse_round_trips_any_text(ticket: str, app_id: str, create_time: int) -> None:
    document = _event(
        {
            "AppId": app_id,
            "CreateTime": create_time,
            "InfoType": "component_verify_ticket",
            "ComponentVerifyTicket": ticket,
        }
    )
    assert parse_component_event(document) == ComponentVerifyTicket(app_id, create_time, ticket)
