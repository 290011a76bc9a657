"""WeChat XML: safe parsing, push envelopes, component events as a tagged union, user messages, building.

Pure: no I/O. Every document is parsed with DTDs, entity declarations and external references forbidden,
so XXE and entity-expansion payloads are refused before any element is read: by defusedxml into a tree,
and the envelope of a push (read before its signature is checked, on every push) by expat directly with
the same refusals and depth limit, into the flat fields it carries.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from xml.etree.ElementTree import Element, ParseError
from xml.parsers import expat

import defusedxml
import msgspec
from defusedxml.ElementTree import fromstring

from gateway.errors import XmlRejected

__all__ = [
    "Authorized",
    "ComponentEvent",
    "ComponentVerifyTicket",
    "Envelope",
    "FastRegister",
    "OtherComponentEvent",
    "Unauthorized",
    "UpdateAuthorized",
    "UserMessage",
    "XmlLeaf",
    "XmlValue",
    "build_xml",
    "info_type",
    "is_appid",
    "is_authorization_event",
    "parse_component_event",
    "parse_envelope",
    "parse_user_message",
    "parse_xml",
    "tree",
]

MAX_DEPTH = 8  # WeChat's documents are two levels deep; anything far deeper is hostile
_APPID = re.compile(r"wx[A-Za-z0-9]{1,62}")
_TYPE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # InfoType, MsgType, Event
_ACCOUNT = re.compile(r"[A-Za-z0-9_@.-]{1,128}")  # gh_ original ids and openids
_INT64 = range(-(2**63), 2**63)  # what the database columns hold


def parse_xml(document: bytes | str) -> Element:
    """Parse an XML document safely; XmlRejected names the reason on any fault."""
    try:
        root = fromstring(document, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except defusedxml.DTDForbidden as exc:
        raise XmlRejected("XML with a DTD is refused") from exc
    except defusedxml.EntitiesForbidden as exc:
        raise XmlRejected("XML with entity declarations is refused") from exc
    except defusedxml.ExternalReferenceForbidden as exc:
        raise XmlRejected("XML with external references is refused") from exc
    except (ParseError, ValueError, LookupError) as exc:  # LookupError: an encoding Python does not know
        raise XmlRejected(f"not well-formed XML: {exc}") from exc
    if _depth(root) > MAX_DEPTH:
        raise XmlRejected(f"XML nested deeper than {MAX_DEPTH} levels")
    return root


def _depth(element: Element) -> int:
    stack = [(element, 1)]
    deepest = 0
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            break
        stack.extend((child, depth + 1) for child in node)
    return deepest


def is_appid(value: str) -> bool:
    """Whether ``value`` is shaped like an appid: ``wx`` and up to 62 letters and digits."""
    return _APPID.fullmatch(value) is not None


def flatten(root: Element) -> dict[str, str]:
    """The text of each direct child of ``root`` by tag; a nested block is skipped."""
    return {child.tag: (child.text or "").strip() for child in root if len(child) == 0}


def tree(root: Element) -> dict[str, object]:
    """Every child of ``root`` as JSON: text as sent (not stripped), a nested block as an object, and a
    tag repeated in one block (``<item>`` of ``PicList``) as a list."""
    result: dict[str, object] = {}
    for child in root:
        value: object = tree(child) if len(child) else (child.text or "")
        if child.tag not in result:
            result[child.tag] = value
        elif isinstance(previous := result[child.tag], list):
            previous.append(value)
        else:
            result[child.tag] = [previous, value]
    return result


class _FlatReader:
    """Expat callbacks that keep the root's tag, ``flatten`` of the root and of the first child of each
    tag (its block), building no tree.

    The refusals are defusedxml's (``parse_xml``): a DTD, an entity declaration or an external reference
    raises XmlRejected as soon as expat reports it, and so does nesting deeper than ``MAX_DEPTH``. Tags
    are named as ElementTree names them (``{namespace}tag``). About a third of the cost of ``parse_xml``
    and ``flatten`` on an envelope or an event, which every push pays.
    """

    __slots__ = ("blocks", "depth", "fields", "inner", "inner_leaf", "inner_text", "leaf", "root", "text")

    def __init__(self) -> None:
        self.root = ""
        self.depth = 0
        self.fields: dict[str, str] = {}
        self.blocks: dict[str, dict[str, str]] = {}
        self.text: list[str] = []
        self.leaf = True
        self.inner: dict[str, str] | None = None  # the block being read: of the first child of its tag
        self.inner_text: list[str] = []
        self.inner_leaf = True

    @classmethod
    def read(cls, document: bytes) -> _FlatReader:
        """The reader, having read ``document``: ``root`` is the root's tag, ``fields`` the stripped text
        of each of its childless children by tag, ``blocks`` the same of the children of each child."""
        reader = cls()
        parser = expat.ParserCreate(namespace_separator="}")
        parser.buffer_text = True
        parser.StartDoctypeDeclHandler = _refuse_dtd
        parser.EntityDeclHandler = _refuse_entity
        parser.UnparsedEntityDeclHandler = _refuse_entity
        parser.ExternalEntityRefHandler = _refuse_external
        parser.StartElementHandler = reader.start
        parser.EndElementHandler = reader.end
        parser.CharacterDataHandler = reader.data
        try:
            parser.Parse(document, True)
        except (expat.ExpatError, ValueError, LookupError) as exc:
            raise XmlRejected(f"not well-formed XML: {exc}") from exc
        return reader

    def start(self, tag: str, attributes: object) -> None:
        self.depth += 1
        if self.depth == 1:
            self.root = _qualified(tag)
        elif self.depth == 2:
            self.text = []
            self.leaf = True
            name = _qualified(tag)
            # As ``root.find(tag)``: a later child of the same tag has no block of its own.
            self.inner = None if name in self.blocks else self.blocks.setdefault(name, {})
        elif self.depth > MAX_DEPTH:
            raise XmlRejected(f"XML nested deeper than {MAX_DEPTH} levels")
        else:
            self.leaf = False
            self.inner_leaf = self.depth == 3
            self.inner_text = []

    def end(self, tag: str) -> None:
        if self.depth == 2 and self.leaf:
            self.fields[_qualified(tag)] = "".join(self.text).strip()
        elif self.depth == 3 and self.inner_leaf and self.inner is not None:
            self.inner[_qualified(tag)] = "".join(self.inner_text).strip()
        self.depth -= 1

    def data(self, text: str) -> None:
        if self.depth == 2:
            self.text.append(text)
        elif self.depth == 3:
            self.inner_text.append(text)


def _qualified(tag: str) -> str:
    # expat joins namespace and name with the separator; ElementTree writes "{namespace}name"
    return "{" + tag if "}" in tag else tag


def _refuse_dtd(*_: object) -> None:
    raise XmlRejected("XML with a DTD is refused")


def _refuse_entity(*_: object) -> None:
    raise XmlRejected("XML with entity declarations is refused")


def _refuse_external(*_: object) -> int:
    raise XmlRejected("XML with external references is refused")


class Envelope(msgspec.Struct, frozen=True):
    """The outer, plaintext part of an encrypted push."""

    encrypt: str
    app_id: str | None = None  # component-level pushes: the component_appid
    to_user_name: str | None = None  # message pushes: the authorizer's original id (gh_…)


def parse_envelope(body: bytes) -> Envelope:
    """Parse the POSTed ``<xml><AppId/><Encrypt/></xml>`` (or ``ToUserName`` form) of a push."""
    reader = _FlatReader.read(body)
    if reader.root != "xml":
        raise XmlRejected(f"root element is <{reader.root}>, expected <xml>")
    fields = reader.fields
    encrypt = fields.get("Encrypt")
    if not encrypt:
        raise XmlRejected("the Encrypt element is missing or empty")
    return Envelope(
        encrypt=encrypt, app_id=fields.get("AppId") or None, to_user_name=fields.get("ToUserName")
    )


# --- component events (pushed to the authorization event URL) --------------------------------------


class ComponentVerifyTicket(
    msgspec.Struct, frozen=True, tag="component_verify_ticket", tag_field="info_type"
):
    """The verify ticket WeChat pushes every 10 minutes."""

    app_id: str
    create_time: int
    ticket: str


class Authorized(msgspec.Struct, frozen=True, tag="authorized", tag_field="info_type"):
    """An administrator authorized the component."""

    app_id: str
    create_time: int
    authorizer_appid: str
    authorization_code: str
    authorization_code_expired_time: int
    pre_auth_code: str


class UpdateAuthorized(msgspec.Struct, frozen=True, tag="updateauthorized", tag_field="info_type"):
    """The granted permission sets changed."""

    app_id: str
    create_time: int
    authorizer_appid: str
    authorization_code: str
    authorization_code_expired_time: int
    pre_auth_code: str


class Unauthorized(msgspec.Struct, frozen=True, tag="unauthorized", tag_field="info_type"):
    """The authorization was revoked."""

    app_id: str
    create_time: int
    authorizer_appid: str


class FastRegister(msgspec.Struct, frozen=True, tag="notify_third_fasteregister", tag_field="info_type"):
    """A mini program created by fast registration; ``auth_code`` is handled like an authorization."""

    app_id: str
    create_time: int
    appid: str
    status: int
    auth_code: str
    msg: str
    info: dict[str, str]


class OtherComponentEvent(msgspec.Struct, frozen=True, tag="other", tag_field="info_type"):
    """A correctly signed push of a type the gateway does not act on; kept for the record."""

    app_id: str
    create_time: int
    type: str
    fields: dict[str, str]


ComponentEvent = (
    ComponentVerifyTicket | Authorized | UpdateAuthorized | Unauthorized | FastRegister | OtherComponentEvent
)


def is_authorization_event(event: ComponentEvent) -> bool:
    """Whether the event changes an authorization (and so waits for the onboarding service)."""
    return isinstance(event, Authorized | UpdateAuthorized | Unauthorized | FastRegister)


def info_type(event: ComponentEvent) -> str:
    """The event's ``InfoType`` as WeChat spelled it."""
    if isinstance(event, OtherComponentEvent):
        return event.type
    return str(type(event).__struct_config__.tag)


def parse_component_event(document: bytes) -> ComponentEvent:
    """Parse the decrypted XML of a push to the authorization event URL into its typed event."""
    reader = _FlatReader.read(document)
    fields = reader.fields
    app_id = _appid(fields, "AppId")
    create_time = _integer(fields, "CreateTime")
    info_type = _required(fields, "InfoType")
    if not _TYPE_NAME.fullmatch(info_type):
        raise XmlRejected("the InfoType element is not a plausible event type")
    match info_type:
        case "component_verify_ticket":
            return ComponentVerifyTicket(app_id, create_time, _required(fields, "ComponentVerifyTicket"))
        case "authorized" | "updateauthorized":
            kind = Authorized if info_type == "authorized" else UpdateAuthorized
            return kind(
                app_id=app_id,
                create_time=create_time,
                authorizer_appid=_appid(fields, "AuthorizerAppid"),
                authorization_code=_required(fields, "AuthorizationCode"),
                authorization_code_expired_time=_integer(fields, "AuthorizationCodeExpiredTime"),
                pre_auth_code=fields.get("PreAuthCode", ""),
            )
        case "unauthorized":
            return Unauthorized(app_id, create_time, _appid(fields, "AuthorizerAppid"))
        case "notify_third_fasteregister":
            return FastRegister(
                app_id=app_id,
                create_time=create_time,
                appid=_appid(fields, "appid") if fields.get("appid") else "",  # empty when it failed
                status=_integer(fields, "status"),
                auth_code=fields.get("auth_code", ""),
                msg=fields.get("msg", ""),
                info=reader.blocks.get("info", {}),
            )
        case _:
            return OtherComponentEvent(app_id, create_time, info_type, fields)


# --- user messages and events (relayed to the message-and-event URL) -------------------------------


class UserMessage(msgspec.Struct, frozen=True):
    """A user's message or event to an authorizer, as relayed to the component (decrypted)."""

    to_user_name: str  # the authorizer's original id (gh_…)
    from_user_name: str  # the user's openid
    create_time: int
    msg_type: str  # text, image, event …
    fields: dict[str, str]  # the top-level elements, stripped (nested blocks left out)
    document: dict[str, object]  # every element as sent, nested blocks included (see ``tree``)

    @property
    def content(self) -> str:
        """The text of a ``text`` message (empty for other types)."""
        return self.fields.get("Content", "")

    @property
    def event(self) -> str:
        """The ``Event`` of an ``event`` message (empty for other types)."""
        return self.fields.get("Event", "")


def parse_user_message(document: bytes) -> UserMessage:
    """Parse the decrypted XML of a push to the message-and-event URL."""
    root = parse_xml(document)
    fields = flatten(root)
    msg_type = _name(fields, "MsgType")
    if msg_type == "event":
        _name(fields, "Event")
    return UserMessage(
        to_user_name=_account(fields, "ToUserName"),
        from_user_name=_account(fields, "FromUserName"),
        create_time=_integer(fields, "CreateTime"),
        msg_type=msg_type,
        fields=fields,
        document=tree(root),
    )


def _name(fields: dict[str, str], name: str) -> str:
    value = _required(fields, name)
    if not _TYPE_NAME.fullmatch(value):
        raise XmlRejected(f"the {name} element is not a plausible type name")
    return value


def _account(fields: dict[str, str], name: str) -> str:
    value = _required(fields, name)
    if not _ACCOUNT.fullmatch(value):
        raise XmlRejected(f"the {name} element is not an account id")
    return value


def _required(fields: dict[str, str], name: str) -> str:
    value = fields.get(name)
    if not value:
        raise XmlRejected(f"the {name} element is missing or empty")
    return value


def _appid(fields: dict[str, str], name: str) -> str:
    value = _required(fields, name)
    if not _APPID.fullmatch(value):
        raise XmlRejected(f"the {name} element is not an appid")
    return value


def _integer(fields: dict[str, str], name: str) -> int:
    value = _required(fields, name)
    try:
        number = int(value)
    except ValueError:
        raise XmlRejected(f"the {name} element is not an integer") from None
    if number not in _INT64:
        raise XmlRejected(f"the {name} element is out of range")
    return number


# --- building -----------------------------------------------------------------------------------


def _cdata(text: str) -> str:
    # "]]>" cannot appear inside one CDATA section: split it across two
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


XmlLeaf = str | int
XmlValue = XmlLeaf | dict[str, XmlLeaf] | list[dict[str, XmlLeaf]]


def build_xml(fields: Mapping[str, XmlValue]) -> str:
    """Build ``<xml>…</xml>`` as WeChat writes it: strings in CDATA, integers bare, one nested level;
    a list becomes one ``<item>`` per element (the articles of a news reply)."""
    parts = ["<xml>"]
    for tag, value in fields.items():
        parts.append(f"<{tag}>{_value(value)}</{tag}>")
    parts.append("</xml>")
    return "".join(parts)


def _value(value: XmlValue) -> str:
    if isinstance(value, list):
        return "".join(f"<item>{_value(item)}</item>" for item in value)
    if isinstance(value, dict):
        return "".join(f"<{tag}>{_value(inner)}</{tag}>" for tag, inner in value.items())
    if isinstance(value, int):
        return str(value)
    return _cdata(value)
