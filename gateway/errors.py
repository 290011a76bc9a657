"""The gateway's error tree. Pure: no I/O, no framework imports.

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
    ├── RateLimited                   a client past its rate limit: 429 with Retry-After, either shape
    ├── ApiError                      an answer to an HTTP caller: status, machine code, human message
    └── WxError                       an answer on /wx in WeChat's own shape: errcode, errmsg

HTTP handlers never build error responses themselves: they raise ApiError (or let a CryptoError /
XmlRejected reach the intake service, which turns it into one) and `gateway.http.errors` maps it.
Messages never contain secret values; they name fields and paths instead.
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

    def __init__(self, source: str, path: str, problem: str) -> None:
        self.source = source
        self.path = path
        self.problem = problem
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


class ApiError(GatewayError):
    """An error answered to an HTTP caller as ``{"error": {"code", "message"}}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        self.message = message
        super().__init__(f"{status} {code}: {message}")


_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


def filter_text(name: str, value: str | None) -> str | None:
    """A text filter read from a query: None when absent or empty, a 422 naming ``name`` when it holds a
    control character. PostgreSQL refuses a NUL in text, so the query failed as a store outage, and
    SQLite reads a pattern only up to one, so a filter of a single NUL matched every row."""
    if not value:
        return None
    if _CONTROL_CHARACTER.search(value):
        raise ApiError(422, "invalid_request", f"{name}: must not contain control characters")
    return value


class RateLimited(GatewayError):
    """A client went past its rate limit; ``retry_after_s`` is when its next request would be admitted.

    Not an ApiError: the same refusal is answered in the house shape on ``/v1`` and in WeChat's on ``/wx``.
    """

    def __init__(self, client_id: str, retry_after_s: float) -> None:
        self.client_id = client_id
        self.retry_after_s = retry_after_s
        super().__init__(f"client '{client_id}' is past its rate limit; retry after {retry_after_s:.3f} s")

    @property
    def retry_after(self) -> int:
        """``Retry-After`` in whole seconds, rounded up (at least 1: ``0`` would invite a retry at once)."""
        return max(1, math.ceil(self.retry_after_s))


class WxError(GatewayError):
    """A refusal on the WeChat-compatible proxy, answered as ``{"errcode", "errmsg"}`` so SDKs react as
    they do to WeChat itself."""

    def __init__(self, errcode: int, errmsg: str, *, status: int = 200) -> None:
        self.errcode = errcode
        self.errmsg = errmsg
        self.status = status
        super().__init__(f"{errcode}: {errmsg}")
