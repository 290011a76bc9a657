"""The gateway's error tree. Pure: no I/O, no framework imports, and no HTTP: how a refusal reaches a
caller (its status, WeChat's errcode, a page) is decided by ``gateway.http.errors``, per router.

    GatewayError                      base of everything the gateway raises on purpose
    ├── ConfigError                   settings or registry refused at start-up / reload
    │   └── RegistryError             the registry file: names the file, the path inside it and the fault
    ├── CryptoError                   WXBizMsgCrypt failures, with the sample library's return code
    │   ├── SignatureInvalid          -40001
    │   ├── AesKeyInvalid             -40004
    │   ├── AppIdMismatch             -40005
    │   ├── DecryptFailed             -40007 (bad padding, bad block length)
    │   ├── BufferInvalid             -40008 (short buffer, length field out of range, not UTF-8)
    │   └── Base64Invalid             -40010
    ├── SealedSecretError             a secret stored at rest cannot be opened (wrong key, tampered row)
    ├── XmlRejected                   malformed XML, DTD / entity declarations, missing elements
    ├── UpstreamError                 WeChat answered with a non-zero errcode
    ├── UpstreamUnavailable           WeChat unreachable, timed out, 5xx, -1 or malformed, after retries
    │   ├── CircuitOpen               not even tried: that (platform, API family) failed too often lately
    │   └── OutcomeUnknown            a call that changes state was sent once and got no usable answer
    ├── WxError                       the proxy's refusal in WeChat's own words: errcode, errmsg
    └── Refused                       a request turned down: a stable `code` and a `message` naming the fault
        ├── Unauthenticated           unauthenticated: no client key, or one no client holds
        ├── Forbidden                 forbidden: a scope or an authorizer the client may not use
        ├── InvalidInput              invalid_request: `field` and what is wrong with it
        │   └── InvalidCursor         invalid_cursor: a cursor this API did not give out
        ├── PlatformUnknown           platform_unknown: `platform` names none in the registry
        ├── DeliveryUnknown           delivery_unknown
        ├── NoLiveAuthorization       the authorizer (`appid`) holds no usable authorization
        │   ├── AuthorizerUnknown     authorizer_unknown: never authorized (this platform)
        │   ├── AuthorizationRevoked  authorization_revoked
        │   └── ReauthorizationRequired  reauthorization_required: WeChat refused its refresh token (61023)
        ├── PermissionSetMissing      permission_set_missing: no live grant holds a set the API needs
        ├── BindingRefused            an open-account binding WeChat's state forbids; `code` says which
        ├── TicketMissing             ticket_missing: no usable component_verify_ticket (`platform_id`)
        ├── QuotaExhausted            wechat_quota_exhausted: WeChat's daily quota used up (45009)
        ├── QuotaClearsUsedUp         quota_clears_used_up: WeChat's ten clears a month are spent (48006)
        ├── WeChatUnavailable         wechat_unavailable: unreachable, failing, or the outcome unknown
        │   └── WeChatTimedOut        WeChat did not answer in time
        ├── WeChatRefused             wechat_error: WeChat refused a call with no better meaning here
        ├── RateLimited               rate_limited: past the client's rate limit, `retry_after_s`
        ├── RegistryRefused           registry_refused: a reload asked for found the file invalid
        └── PushRejected              a push from WeChat that fails its checks; nothing is stored
            ├── PushTooLarge          body_too_large
            ├── PushParameterMissing  missing_parameter (`field`)
            ├── PushParameterInvalid  invalid_parameter (`field`)
            ├── PushTimestampStale    stale_timestamp
            ├── PushXmlInvalid        invalid_xml
            ├── PushAppIdMismatch     appid_mismatch
            ├── PushSignatureInvalid  signature_invalid
            ├── PushUndecryptable     decrypt_failed
            ├── PushEventInvalid      invalid_event
            └── PushMessageInvalid    invalid_message

Services raise a `Refused` that says what happened; callers that care catch the class, never compare
codes or messages. Messages never contain secret values; they name fields and paths instead.
"""

from __future__ import annotations

import math
import re


class GatewayError(Exception):
    """Base of every error the gateway raises deliberately."""


class ConfigError(GatewayError):
    """Runtime settings or the registry cannot be used."""


class RegistryError(ConfigError):
    """The registry file is refused as a whole.

    ``str(error)`` is the one-line message operators see: ``FILE: PATH: PROBLEM``.
    """

    def __init__(self, source: str, path: str, problem: str, *, digest: str | None = None) -> None:
        self.source = source
        self.path = path
        self.problem = problem
        self.digest = digest  # the sha-256 of the file refused, once it could be read
        where = f"{source}: {path}" if path else source
        super().__init__(f"{where}: {problem}")


class CryptoError(GatewayError):
    """A WXBizMsgCrypt operation failed; ``code`` is the official sample library's return code."""

    code = -40000

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"{reason} ({self.code})")


class SignatureInvalid(CryptoError):
    code = -40001


class AesKeyInvalid(CryptoError):
    code = -40004


class AppIdMismatch(CryptoError):
    code = -40005


class DecryptFailed(CryptoError):
    code = -40007


class BufferInvalid(CryptoError):
    code = -40008


class Base64Invalid(CryptoError):
    code = -40010


class SealedSecretError(GatewayError):
    """A value sealed at rest cannot be opened: wrong GATEWAY_SECRET_KEY or a tampered row."""


class XmlRejected(GatewayError):
    """An XML document is malformed, declares a DTD or entities, or lacks a required element."""


class UpstreamError(GatewayError):
    """WeChat refused a call: ``errcode`` and its ``errmsg`` (the ``rid`` suffix dropped)."""

    def __init__(self, api: str, errcode: int, errmsg: str) -> None:
        self.api = api
        self.errcode = errcode
        self.errmsg = errmsg
        super().__init__(f"WeChat {api} answered errcode {errcode}: {errmsg}")


class UpstreamUnavailable(GatewayError):
    """WeChat could not be reached or kept failing (timeouts, 5xx, ``-1``, malformed answers)."""

    def __init__(self, api: str, reason: str) -> None:
        self.api = api
        self.reason = reason
        super().__init__(f"WeChat {api} unavailable: {reason}")


class CircuitOpen(UpstreamUnavailable):
    """A call refused without reaching WeChat: its breaker (``gateway.wechat.breaker``) is open after repeated
    faults; ``retry_in_s`` is when the next trial call may go (0 while one is under way)."""

    def __init__(self, api: str, reason: str, *, retry_in_s: float) -> None:
        self.retry_in_s = retry_in_s
        super().__init__(api, reason)


class OutcomeUnknown(UpstreamUnavailable):
    """A call that changes state at WeChat (``gateway.wechat.client.SENT_ONCE``) was sent and got no usable
    answer (timed out, ``-1``, 5xx, malformed): it may have been applied. It is never resent blindly;
    the caller reads the outcome back where WeChat lets it (protocol §10, last row; SPEC §7)."""

    def __init__(self, api: str, problem: str) -> None:
        self.problem = problem  # what went wrong after sending: "timed out", "errcode -1"…
        super().__init__(api, f"outcome unknown ({problem}; sent once, not resent)")


class WxError(GatewayError):
    """A refusal by the WeChat-compatible proxy in WeChat's own words (``errcode``, ``errmsg``), for
    faults WeChat itself names that way (a missing ``appid``, a wrong ``grant_type``…): SDKs react to it
    as they do to WeChat."""

    def __init__(self, errcode: int, errmsg: str) -> None:
        self.errcode = errcode
        self.errmsg = errmsg
        super().__init__(f"{errcode}: {errmsg}")


class Refused(GatewayError):
    """A request the gateway turns down. ``code`` is stable (clients branch on it); ``title`` names the
    kind of problem in a few words; ``message`` says what is wrong in this case."""

    code: str = "refused"
    title: str = "Refused"

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(f"{self.code}: {message}")


class Unauthenticated(Refused):
    """No client key, a malformed ``Authorization`` header, or a key no client holds."""

    code = "unauthenticated"
    title = "Not authenticated"


class Forbidden(Refused):
    """A known client asking for what its scopes or authorizers do not allow (or a stale form)."""

    code = "forbidden"
    title = "Forbidden"


class InvalidInput(Refused):
    """A parameter or a member of the body is not valid: ``field`` names it, ``problem`` says why (never
    repeating the value: it may be a secret)."""

    code = "invalid_request"
    title = "Invalid input"

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class InvalidCursor(InvalidInput):
    """A ``cursor`` this API did not give out."""

    code = "invalid_cursor"
    title = "Invalid cursor"

    def __init__(self, problem: str = "not a cursor this API gave out", field: str = "cursor") -> None:
        super().__init__(field, problem)


class PlatformUnknown(Refused):
    """``platform`` (an id, or the component appid a push named) is no platform of the registry."""

    code = "platform_unknown"
    title = "Platform unknown"

    def __init__(self, platform: str, message: str | None = None) -> None:
        self.platform = platform
        super().__init__(message or f"no platform '{platform}' in the registry")


class DeliveryUnknown(Refused):
    """No delivery has this id."""

    code = "delivery_unknown"
    title = "Delivery unknown"

    def __init__(self, delivery_id: str, message: str | None = None) -> None:
        self.delivery_id = delivery_id
        super().__init__(message or f"no delivery '{delivery_id}'")


class NoLiveAuthorization(Refused):
    """The authorizer ``appid`` holds no authorization the gateway can use (None: a platform's own)."""

    def __init__(self, appid: str | None, message: str) -> None:
        self.appid = appid
        super().__init__(message)


class AuthorizerUnknown(NoLiveAuthorization):
    """The account never authorized (this platform, or any)."""

    code = "authorizer_unknown"
    title = "Authorizer unknown"


class AuthorizationRevoked(NoLiveAuthorization):
    """The account revoked its authorization."""

    code = "authorization_revoked"
    title = "Authorization revoked"


class ReauthorizationRequired(NoLiveAuthorization):
    """WeChat no longer accepts the account's refresh token (61023) and it could not be recovered: its
    administrator must authorize again."""

    code = "reauthorization_required"
    title = "Re-authorization required"


class PermissionSetMissing(Refused):
    """The authorizer ``appid`` has live grants, but none holds a permission set the API needs."""

    code = "permission_set_missing"
    title = "Permission set missing"

    def __init__(self, appid: str, message: str) -> None:
        self.appid = appid
        super().__init__(message)


class BindingRefused(Refused):
    """An open-account binding that WeChat's state forbids, or that would split a principal's unionids.
    ``code`` is WeChat's refusal in words (``principal_mismatch``, ``open_account_full``,
    ``open_account_not_api_created``, ``already_bound``, ``wechat_refused``) or the plan's
    (``open_account_exists``, ``principal_unknown``, ``open_account_shared``…)."""

    title = "Binding refused"

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


class TicketMissing(Refused):
    """The platform has no usable component_verify_ticket (none yet, too old, or refused by WeChat)."""

    code = "ticket_missing"
    title = "Verify ticket missing"

    def __init__(self, platform_id: str, message: str) -> None:
        self.platform_id = platform_id
        super().__init__(message)


class QuotaExhausted(Refused):
    """WeChat's daily quota for one of the platform's tokens is used up (45009): calls for it pause until
    the quota is cleared or the day turns."""

    code = "wechat_quota_exhausted"
    title = "WeChat quota exhausted"

    def __init__(self, platform_id: str, message: str) -> None:
        self.platform_id = platform_id
        super().__init__(message)


class QuotaClearsUsedUp(Refused):
    """WeChat allows ten quota clears a month per account, and they are spent (48006)."""

    code = "quota_clears_used_up"
    title = "Quota clears used up"


class WeChatUnavailable(Refused):
    """WeChat cannot be reached, keeps failing, or left the outcome of a call unknown."""

    code = "wechat_unavailable"
    title = "WeChat unavailable"


class WeChatTimedOut(WeChatUnavailable):
    """WeChat did not answer in time."""


class WeChatRefused(Refused):
    """WeChat refused a call with an errcode that means nothing more particular here."""

    code = "wechat_error"
    title = "WeChat refused"


class RateLimited(Refused):
    """A client went past its rate limit; ``retry_after_s`` is when its next request would be admitted."""

    code = "rate_limited"
    title = "Rate limited"

    def __init__(self, client_id: str, retry_after_s: float) -> None:
        self.client_id = client_id
        self.retry_after_s = retry_after_s
        super().__init__(f"client '{client_id}' is past its rate limit; retry after {self.retry_after} s")

    @property
    def retry_after(self) -> int:
        """``Retry-After`` in whole seconds, rounded up (at least 1: ``0`` would invite a retry at once)."""
        return max(1, math.ceil(self.retry_after_s))


class RegistryRefused(Refused):
    """A registry reload asked for refused the file (it does not validate); the running registry stays."""

    code = "registry_refused"
    title = "Registry refused"

    def __init__(self, message: str, sha256: str | None) -> None:
        self.sha256 = sha256
        super().__init__(message)


class PushRejected(Refused):
    """A push from WeChat (an event or a user message) that fails its checks; nothing of it is stored."""

    title = "Push rejected"


class PushTooLarge(PushRejected):
    code = "body_too_large"
    title = "Push too large"


class PushParameterMissing(PushRejected):
    """A query parameter WeChat always sends is missing: ``field``."""

    code = "missing_parameter"
    title = "Push parameter missing"

    def __init__(self, field: str) -> None:
        self.field = field
        super().__init__(f"query parameter {field} is missing")


class PushParameterInvalid(PushRejected):
    """A query or path parameter (``field``) of the push is not what WeChat sends."""

    code = "invalid_parameter"
    title = "Push parameter invalid"

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


class PushTimestampStale(PushRejected):
    code = "stale_timestamp"
    title = "Push timestamp outside the window"


class PushXmlInvalid(PushRejected):
    code = "invalid_xml"
    title = "Push envelope not valid"


class PushAppIdMismatch(PushRejected):
    code = "appid_mismatch"
    title = "Push for another appid"


class PushSignatureInvalid(PushRejected):
    code = "signature_invalid"
    title = "Push signature invalid"


class PushUndecryptable(PushRejected):
    code = "decrypt_failed"
    title = "Push cannot be decrypted"


class PushEventInvalid(PushRejected):
    code = "invalid_event"
    title = "Pushed event not valid"


class PushMessageInvalid(PushRejected):
    code = "invalid_message"
    title = "Pushed message not valid"


_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


def filter_text(name: str, value: str | None) -> str | None:
    """A text filter read from a query: None when absent or empty, `InvalidInput` naming ``name`` when it
    holds a control character. PostgreSQL refuses a NUL in text, so the query failed as a store outage,
    and SQLite reads a pattern only up to one, so a filter of a single NUL matched every row."""
    if not value:
        return None
    if _CONTROL_CHARACTER.search(value):
        raise InvalidInput(name, "must not contain control characters")
    return value
