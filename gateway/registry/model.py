"""The registry: one YAML file, owned by group IT, naming the group, its components and its clients.

Loading goes in four steps, and the first fault found stops it with one `RegistryError` naming the file,
the path inside it (``platforms[1].encoding_aes_key``) and what is wrong:

1. parse the YAML (safe loader; a key given twice in one mapping is refused, not silently dropped);
2. replace every ``${VAR}`` in a string value with the environment variable, naming the path if unset;
3. decode into frozen Structs, refusing unknown keys and wrong types;
4. check what types cannot say: appid and id shapes, WeChat's key and token rules, duplicates, pins.

Secret values (component secrets, message tokens, EncodingAESKeys) are held in `Secret`, whose repr is
masked, and no error message quotes them: problems name fields, never their contents. The few problems
that quote a value (a duplicate id, an unknown scope) show it as the file spells it, so a value read from
the environment appears as its ``${VAR}`` reference.
"""

from __future__ import annotations

import hmac
import itertools
import math
import os
import re
import unicodedata
from collections.abc import Hashable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, get_args
from urllib.parse import SplitResult, urlsplit

import msgspec
import yaml

from gateway.crypto import webhook_key
from gateway.errors import RegistryError

__all__ = [
    "BINDING_MODES",
    "SCOPES",
    "Client",
    "Group",
    "GroupBinding",
    "ListedOpenAccount",
    "Platform",
    "RateLimit",
    "Registry",
    "Scope",
    "Secret",
    "Subscription",
    "WechatSettings",
    "load_registry",
    "parse_registry",
    "principal_key",
]

Scope = Literal["token", "proxy", "component", "onboard", "bind", "catalog", "admin"]
SCOPES: tuple[Scope, ...] = get_args(Scope)
BindingMode = Literal["group", "per_principal"]
BINDING_MODES: tuple[BindingMode, ...] = get_args(BindingMode)

_APPID = re.compile(r"wx[A-Za-z0-9]+")
_SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_SHA256_HEX = re.compile(r"[0-9A-Fa-f]{64}")
_ALNUM = re.compile(r"[A-Za-z0-9]*")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# msgspec ends its messages with " - at `$.a[0].b`", or " - at `key` in `$.a`" when a mapping key is wrong.
_MSGSPEC_WHERE = re.compile(r"(?P<problem>.*) - at `(?P<where>[^`]*)`(?: in `(?P<parent>[^`]*)`)?", re.DOTALL)

_AES_KEY_LENGTH = 43
# A registry holds hundreds of values; YAML aliases nested in aliases could make billions of them.
_MAX_VALUES = 100_000
_MAX_DEPTH = 64  # levels of nested collections; a registry uses four
_MSG_TYPE = re.compile(r"[a-z_]{1,32}")
_EVENT_TYPE = re.compile(r"event\.[A-Za-z0-9_.-]{1,64}")


class Secret:
    """A secret string that does not show itself: repr and str are masked, `reveal()` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret value; call it only where the value is used, never to log or display."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('****')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        # Encoded: compare_digest refuses non-ASCII str.
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)


class ListedOpenAccount(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """An open account the group knows besides its own, and the principal (主体) it belongs to."""

    open_appid: str
    principal_name: str


class GroupBinding(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Whose open account each authorizer goes to (SPEC §11): the group's (``group``, scenario two) or
    its own principal's (``per_principal``, scenario one); ``open_accounts`` names other principals'."""

    mode: BindingMode = "group"
    open_accounts: tuple[ListedOpenAccount, ...] = ()


class Group(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The company group, its binding open account and that account's principal (主体). Without
    ``principal_name`` it is taken from the accounts already bound to ``open_appid``."""

    name: str
    open_appid: str
    principal_name: str | None = None
    binding: GroupBinding | None = None


class WechatSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Where WeChat's API is reached: production, a disaster-recovery host, a proxy or the simulator."""

    api_base: str = "https://api.weixin.qq.com"
    # Where administrators' browsers find WeChat's authorization pages (componentloginpage,
    # bindcomponent); None: WeChat's own hosts. The simulator serves them beside its API.
    authorization_page_base: str | None = None


class Platform(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One third-party platform (component) of the group's WeChat Open Platform account."""

    id: str
    name: str
    component_appid: str
    component_appsecret: Secret
    token: Secret
    encoding_aes_key: Secret


class RateLimit(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A client's token bucket: ``burst`` requests at once, refilled at ``per_second``."""

    per_second: float
    burst: int


class Client(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """An internal app or auditor: the sha-256 of its key, what it may do, for which authorizers, and how
    fast (no ``rate_limit``: unlimited)."""

    id: str
    key_sha256: str
    scopes: tuple[Scope, ...]
    authorizers: tuple[str, ...] = ("*",)
    rate_limit: RateLimit | None = None


class Subscription(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A client's subscription to user messages and events (SPEC §10).

    ``types`` holds MsgTypes (``text``; ``event`` for every event), ``event.<Event>`` or ``"*"``; event
    names compare case-insensitively, as WeChat spells them both ways (``subscribe``, ``CLICK``).
    """

    client: str
    url: str
    secret: Secret
    # Secrets of a rotation still in use by the subscriber: webhook-signature carries a signature for each.
    previous_secrets: tuple[Secret, ...] = ()
    authorizers: tuple[str, ...] = ("*",)
    types: tuple[str, ...] = ("*",)
    reply: bool = False

    def matches(self, authorizer_appid: str, msg_type: str, event: str) -> bool:
        """Whether a message of ``msg_type`` (and ``event``) to ``authorizer_appid`` is for this one."""
        if "*" not in self.authorizers and authorizer_appid not in self.authorizers:
            return False
        wanted = msg_type.casefold() if msg_type != "event" else f"event.{event}".casefold()
        return any(t == "*" or t.casefold() in (msg_type.casefold(), wanted) for t in self.types)


class Registry(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The whole registry, validated; platforms are in order of preference."""

    group: Group
    platforms: tuple[Platform, ...]
    clients: tuple[Client, ...]
    wechat: WechatSettings = msgspec.field(default_factory=WechatSettings)
    pins: Mapping[str, str] = msgspec.field(default_factory=dict)
    subscriptions: tuple[Subscription, ...] = ()

    def platform(self, id: str) -> Platform | None:
        """The platform with this id, if any."""
        return next((p for p in self.platforms if p.id == id), None)

    def platform_by_appid(self, component_appid: str) -> Platform | None:
        """The platform with this component appid, if any."""
        return next((p for p in self.platforms if p.component_appid == component_appid), None)

    def client(self, id: str) -> Client | None:
        """The client with this id, if any."""
        return next((c for c in self.clients if c.id == id), None)

    def client_for_key_sha256(self, key_sha256: str) -> Client | None:
        """The client whose key hashes to this sha-256 hex digest (either case), if any."""
        wanted = key_sha256.lower().encode()
        return next((c for c in self.clients if hmac.compare_digest(c.key_sha256.encode(), wanted)), None)


def load_registry(path: str | Path, environ: Mapping[str, str] | None = None) -> Registry:
    """Read, resolve and validate the registry file at `path`; ``${VAR}`` comes from `environ` (default
    `os.environ`). Raises `RegistryError` whose source is `path` as given."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RegistryError(source, "", "cannot read file: not UTF-8 text") from None
    except OSError as exc:
        raise RegistryError(source, "", f"cannot read file: {exc.strerror or exc}") from None
    return parse_registry(text, source=source, environ=os.environ if environ is None else environ)


def parse_registry(text: str, *, source: str, environ: Mapping[str, str]) -> Registry:
    """Validate registry YAML `text`; `source` names it in errors, ``${VAR}`` comes from `environ`.
    Raises `RegistryError` for the first fault found."""
    try:
        data = _parse_yaml(text)
        if not isinstance(data, dict):
            got = "nothing" if data is None else type(data).__name__
            raise _Fault("", f"the registry must be a mapping, got {got}")
        spelled: dict[str, str] = {}
        resolved = _resolve(data, "", environ, spelled, set(), itertools.count(1))
        try:
            registry = msgspec.convert(resolved, Registry, dec_hook=_dec_hook)
        except msgspec.ValidationError as exc:
            raise _translate(exc, spelled) from None
        _check(registry, spelled)
    except _Fault as fault:
        raise RegistryError(source, fault.path, fault.problem) from None
    return _normalized(registry)


class _Fault(Exception):
    """A fault at a path inside the document; `parse_registry` adds the source."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(path, problem)
        self.path = path
        self.problem = problem


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (it would keep the last one) and
    collections nested deeper than _MAX_DEPTH (PyYAML recurses, and scans slower the deeper it is)."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > _MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {_MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            # Merge keys (<<) may repeat and are overridden by explicit keys; that is YAML, not a mistake.
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def _parse_yaml(text: str) -> object:
    try:
        loader = _UniqueKeyLoader(text)  # the reader already refuses control characters here
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        # Built from parts: str(exc) quotes the offending line, which may hold a secret.
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise _Fault("", f"not valid YAML: {where}{exc.problem or exc.context}") from None
    except yaml.reader.ReaderError as exc:
        raise _Fault(
            "", f"not valid YAML: position {exc.position}: unacceptable character #x{exc.character:04x}"
        ) from None
    except yaml.YAMLError:
        raise _Fault("", "not valid YAML") from None
    except Exception:
        # Constructors of explicit tags (`!!int abc`) raise bare ValueError etc. quoting the value.
        raise _Fault("", "not valid YAML: a tagged value cannot be constructed") from None


def _resolve(
    node: object,
    path: str,
    environ: Mapping[str, str],
    spelled: dict[str, str],
    parents: set[int],
    walked: itertools.count[int],
) -> object:
    """A copy of `node` with ``${VAR}`` replaced in every string value, walked in document order.
    `spelled` receives, by path, each string that had a ``${VAR}``, as the file spells it; `walked`
    counts the values copied, which may not exceed _MAX_VALUES."""
    if next(walked) > _MAX_VALUES:
        raise _Fault(path, f"more than {_MAX_VALUES} values once YAML aliases are expanded")
    if isinstance(node, str):

        def lookup(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in environ:
                raise _Fault(path, f"environment variable {name} is not set")
            return environ[name]

        resolved = _VAR.sub(lookup, node)
        if resolved != node:
            spelled[path] = node
        return resolved
    if isinstance(node, dict | list):
        # A YAML alias may refer to its own ancestor (`&a [*a]`): the walk would never end.
        if id(node) in parents:
            raise _Fault(path, "a YAML alias refers to the value that contains it")
        parents.add(id(node))
        try:
            if isinstance(node, dict):
                return {
                    key: _resolve(
                        value, f"{path}.{key}" if path else str(key), environ, spelled, parents, walked
                    )
                    for key, value in node.items()
                }
            return [
                _resolve(item, f"{path}[{i}]", environ, spelled, parents, walked)
                for i, item in enumerate(node)
            ]
        finally:
            parents.discard(id(node))
    return node


def _dec_hook(type_: type, obj: object) -> object:
    if type_ is not Secret:
        raise NotImplementedError
    try:
        value = msgspec.convert(obj, str)
    except msgspec.ValidationError as exc:
        # Re-raised as TypeError so that msgspec adds the path, as it does for its own types.
        raise TypeError(str(exc)) from None
    return Secret(value)


def _translate(exc: msgspec.ValidationError, spelled: Mapping[str, str]) -> _Fault:
    """msgspec's message at its path. msgspec names types and keys, never values, except for the one
    Literal (scopes), which is rewritten to list the valid names."""
    message = str(exc)
    match = _MSGSPEC_WHERE.fullmatch(message)
    if match is None:
        return _Fault("", message)
    problem, where, parent = match["problem"], match["where"], match["parent"]
    if parent is not None:
        where, problem = parent, f"{problem} (in a key)"
    elif where.endswith("[...]"):
        where, problem = where.removesuffix("[...]"), f"{problem} (in a value)"
    path = where.removeprefix("$").removeprefix(".")
    if problem.startswith("Invalid enum value ") and path == "group.binding.mode":
        shown = repr(spelled[path]) if path in spelled else problem.removeprefix("Invalid enum value ")
        problem = f"unknown mode {shown} (valid: {', '.join(BINDING_MODES)})"
    elif problem.startswith("Invalid enum value "):
        shown = repr(spelled[path]) if path in spelled else problem.removeprefix("Invalid enum value ")
        problem = f"unknown scope {shown} (valid: {', '.join(SCOPES)})"
    return _Fault(path, problem)


def _check(registry: Registry, spelled: Mapping[str, str]) -> None:
    """The rules types cannot express, in document order; raises at the first fault."""
    _check_appid(registry.group.open_appid, "group.open_appid")
    _check_group_binding(registry.group, spelled)
    _check_api_base(registry.wechat.api_base, "wechat.api_base")
    if registry.wechat.authorization_page_base is not None:
        _check_api_base(registry.wechat.authorization_page_base, "wechat.authorization_page_base")

    if not registry.platforms:
        raise _Fault("platforms", "at least one platform is required")
    platform_ids: dict[str, str] = {}
    component_appids: dict[str, str] = {}
    for i, platform in enumerate(registry.platforms):
        at = f"platforms[{i}]"
        _check_slug(platform.id, f"{at}.id")
        _check_unique(platform.id, f"{at}.id", platform_ids, "platform id", spelled)
        _check_appid(platform.component_appid, f"{at}.component_appid")
        _check_unique(
            platform.component_appid, f"{at}.component_appid", component_appids, "component_appid", spelled
        )
        if not platform.component_appsecret.reveal():
            raise _Fault(f"{at}.component_appsecret", "must not be empty")
        _check_token(platform.token.reveal(), f"{at}.token")
        _check_aes_key(platform.encoding_aes_key.reveal(), f"{at}.encoding_aes_key")

    client_ids: dict[str, str] = {}
    key_digests: dict[str, str] = {}
    for i, client in enumerate(registry.clients):
        at = f"clients[{i}]"
        _check_slug(client.id, f"{at}.id")
        _check_unique(client.id, f"{at}.id", client_ids, "client id", spelled)
        if not _SHA256_HEX.fullmatch(client.key_sha256):
            raise _Fault(f"{at}.key_sha256", "must be 64 hex digits: the sha-256 of the client's key")
        first = key_digests.setdefault(client.key_sha256.lower(), f"{at}.key_sha256")
        if first != f"{at}.key_sha256":
            raise _Fault(f"{at}.key_sha256", f"two clients share one key (first at {first})")
        if not client.scopes:
            raise _Fault(f"{at}.scopes", "a client needs at least one scope")
        scopes: dict[str, str] = {}
        for j, scope in enumerate(client.scopes):
            _check_unique(scope, f"{at}.scopes[{j}]", scopes, "scope", spelled)
        _check_authorizers(client.authorizers, f"{at}.authorizers", spelled, "a client")
        if client.rate_limit is not None:
            _check_rate_limit(client.rate_limit, f"{at}.rate_limit")

    for appid, platform_id in registry.pins.items():
        _check_appid(appid, f"pins.{appid}", what="the key ")
        if platform_id not in platform_ids:
            raise _Fault(
                f"pins.{appid}", f"pin to unknown platform {_quote(platform_id, f'pins.{appid}', spelled)}"
            )

    _check_subscriptions(registry.subscriptions, client_ids, spelled)


def _check_group_binding(group: Group, spelled: Mapping[str, str]) -> None:
    """SPEC §11: one open account per principal, each principal named once, the group's included."""
    if group.principal_name is not None and not group.principal_name.strip():
        raise _Fault("group.principal_name", "must not be empty")
    if group.binding is None:
        return
    if group.principal_name is None:
        raise _Fault(
            "group.principal_name",
            "is required with group.binding: each account's target open account follows its principal",
        )
    open_appids = {group.open_appid: "group.open_appid"}
    principals = {principal_key(group.principal_name): "group.principal_name"}
    for i, listed in enumerate(group.binding.open_accounts):
        at = f"group.binding.open_accounts[{i}]"
        _check_appid(listed.open_appid, f"{at}.open_appid")
        _check_unique(listed.open_appid, f"{at}.open_appid", open_appids, "open_appid", spelled)
        if not listed.principal_name.strip():
            raise _Fault(f"{at}.principal_name", "must not be empty")
        first = principals.setdefault(principal_key(listed.principal_name), f"{at}.principal_name")
        if first != f"{at}.principal_name":
            raise _Fault(
                f"{at}.principal_name",
                f"principal {_quote(listed.principal_name, f'{at}.principal_name', spelled)} already has an "
                f"open account (at {first}): one open account per principal",
            )


def principal_key(name: str) -> str:
    """A principal's name as compared: NFKC-normalised (Chinese names mix full-width and ASCII brackets:
    ``（深圳）`` and ``(深圳)``), spaces collapsed and case folded, so that a name typed into the registry
    matches the one WeChat gives (``api_get_authorizer_info``'s ``principal_name``)."""
    return " ".join(unicodedata.normalize("NFKC", name).split()).casefold()


def _check_rate_limit(limit: RateLimit, path: str) -> None:
    # YAML spells infinity and NaN (.inf, .nan): neither is a rate.
    if not (limit.per_second > 0 and math.isfinite(limit.per_second)):
        raise _Fault(f"{path}.per_second", "must be a number of requests per second greater than 0")
    if limit.burst < 1:
        raise _Fault(f"{path}.burst", "must be a whole number of requests, at least 1")


def _check_subscriptions(
    subscriptions: tuple[Subscription, ...], client_ids: Mapping[str, str], spelled: Mapping[str, str]
) -> None:
    destinations: dict[str, str] = {}
    replying: list[tuple[int, Subscription]] = []
    for i, subscription in enumerate(subscriptions):
        at = f"subscriptions[{i}]"
        if subscription.client not in client_ids:
            shown = _quote(subscription.client, f"{at}.client", spelled)
            raise _Fault(f"{at}.client", f"unknown client {shown}: a subscription belongs to a client")
        if _check_http_url(subscription.url, f"{at}.url").fragment:
            raise _Fault(f"{at}.url", "must not have a fragment")
        _check_unique(
            f"{subscription.client} {subscription.url}", f"{at}.url", destinations, "client and url", spelled
        )
        _check_webhook_secret(subscription.secret, f"{at}.secret")
        for j, previous in enumerate(subscription.previous_secrets):
            _check_webhook_secret(previous, f"{at}.previous_secrets[{j}]")
            if previous == subscription.secret:
                raise _Fault(f"{at}.previous_secrets[{j}]", "is the same as secret")
        _check_authorizers(subscription.authorizers, f"{at}.authorizers", spelled, "a subscription")
        _check_types(subscription.types, f"{at}.types", spelled)
        if subscription.reply:
            for j, other in replying:
                if _overlap(subscription, other):
                    raise _Fault(
                        f"{at}.reply",
                        "two reply subscriptions could answer the same message "
                        f"(the other is subscriptions[{j}])",
                    )
            replying.append((i, subscription))


def _check_webhook_secret(secret: Secret, path: str) -> None:
    if not secret.reveal():
        raise _Fault(path, "must not be empty")
    try:
        webhook_key(secret.reveal())
    except ValueError as exc:  # its message quotes no part of the secret
        raise _Fault(path, str(exc)) from None


def _check_types(types: tuple[str, ...], path: str, spelled: Mapping[str, str]) -> None:
    if not types:
        raise _Fault(path, 'a subscription needs at least one type, or "*" for all')
    if "*" in types and len(types) > 1:
        raise _Fault(f"{path}[{types.index('*')}]", '"*" (all types) must stand alone')
    seen: dict[str, str] = {}
    for j, name in enumerate(types):
        if name != "*" and not (_MSG_TYPE.fullmatch(name) or _EVENT_TYPE.fullmatch(name)):
            raise _Fault(
                f"{path}[{j}]", 'must be a MsgType (text, image, event …), event.<Event> (event.CLICK) or "*"'
            )
        _check_unique(name.casefold(), f"{path}[{j}]", seen, "type", spelled)


def _overlap(a: Subscription, b: Subscription) -> bool:
    """Whether some message could match both subscriptions."""
    if "*" not in a.authorizers and "*" not in b.authorizers and not set(a.authorizers) & set(b.authorizers):
        return False
    return any(_types_overlap(x.casefold(), y.casefold()) for x in a.types for y in b.types)


def _types_overlap(x: str, y: str) -> bool:
    if "*" in (x, y) or x == y:
        return True
    return {x, y} & {"event"} != set() and all(t == "event" or t.startswith("event.") for t in (x, y))


def _check_appid(value: str, path: str, what: str = "") -> None:
    # WeChat's own appids are 16 hex digits; the simulator and tests use readable ones, so judge no further.
    if not _APPID.fullmatch(value):
        raise _Fault(path, f"{what}must be an appid: 'wx' followed by letters and digits")


def _check_api_base(url: str, path: str) -> None:
    parts = _check_http_url(url, path)
    if parts.query or parts.fragment:
        raise _Fault(path, "must not have a query or a fragment")


def _check_http_url(url: str, path: str) -> SplitResult:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # raises ValueError for a port that is not a number in range
    except ValueError:
        raise _Fault(path, "must be an http or https URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _Fault(path, "must be an http or https URL")
    return parts


def _check_slug(value: str, path: str) -> None:
    if not _SLUG.fullmatch(value):
        raise _Fault(path, "must be 1 to 64 of a-z, 0-9, '-' and '_', starting with a letter or digit")


def _check_unique(value: str, path: str, seen: dict[str, str], what: str, spelled: Mapping[str, str]) -> None:
    """Remember `value` at `path`; of two duplicates, the later one is named."""
    first = seen.setdefault(value, path)
    if first != path:
        raise _Fault(path, f"duplicate {what} {_quote(value, path, spelled)} (first at {first})")


def _quote(value: str, path: str, spelled: Mapping[str, str]) -> str:
    """`value` for a problem text, as the file spells it: a value read from the environment may be a
    secret put in the wrong place, so it is shown as its ``${VAR}`` reference instead."""
    return repr(spelled.get(path, value))


def _check_token(token: str, path: str) -> None:
    if not token:
        raise _Fault(path, "must not be empty")
    # WeChat's rule for the message token: a typo fails here rather than at every callback.
    if not (3 <= len(token) <= 32 and _ALNUM.fullmatch(token)):
        raise _Fault(path, "must be 3 to 32 letters and digits")


def _check_aes_key(key: str, path: str) -> None:
    if len(key) != _AES_KEY_LENGTH:
        raise _Fault(path, f"must be {_AES_KEY_LENGTH} characters, got {len(key)}")
    if not _ALNUM.fullmatch(key):
        raise _Fault(path, "must contain only letters and digits")


def _check_authorizers(
    authorizers: tuple[str, ...], path: str, spelled: Mapping[str, str], holder: str
) -> None:
    if not authorizers:
        raise _Fault(path, f'{holder} needs at least one authorizer, or "*" for all')
    if "*" in authorizers and len(authorizers) > 1:
        raise _Fault(f"{path}[{authorizers.index('*')}]", '"*" (all authorizers) must stand alone')
    seen: dict[str, str] = {}
    for j, appid in enumerate(authorizers):
        if appid != "*":
            _check_appid(appid, f"{path}[{j}]")
        _check_unique(appid, f"{path}[{j}]", seen, "authorizer", spelled)


def _normalized(registry: Registry) -> Registry:
    """The registry in canonical form: lowercase digests, no trailing slash, read-only pins."""
    return msgspec.structs.replace(
        registry,
        wechat=WechatSettings(
            api_base=registry.wechat.api_base.rstrip("/"),
            authorization_page_base=(registry.wechat.authorization_page_base or "").rstrip("/") or None,
        ),
        clients=tuple(msgspec.structs.replace(c, key_sha256=c.key_sha256.lower()) for c in registry.clients),
        pins=MappingProxyType(dict(registry.pins)),
    )
