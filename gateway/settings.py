"""Runtime settings (SPEC §3): every ``GATEWAY_*`` variable is read here, and only here, into one
validated struct. A value that does not fit is refused by the name of its variable and never quoted
(some hold passwords); an empty variable counts as unset."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec

from gateway.crypto import SecretBox
from gateway.errors import ConfigError

__all__ = [
    "DEFAULT_BINDING_RECHECK_S",
    "DEFAULT_CATALOG_SYNC_INTERVAL_S",
    "DEFAULT_CONFIG",
    "DEFAULT_DATABASE_URL",
    "DEFAULT_PUBLIC_URL",
    "DEFAULT_TOKEN_WARM_WINDOW_S",
    "EventLoop",
    "HttpParser",
    "LogFormat",
    "LogLevel",
    "Settings",
    "Unsafe",
]

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LogFormat = Literal["json", "text"]
EventLoop = Literal["auto", "uvloop", "asyncio"]
HttpParser = Literal["auto", "httptools", "h11"]
# What `gateway serve` refuses unless told (GATEWAY_ALLOW_UNSAFE, --allow-unsafe): docs/operations.md.
Unsafe = Literal["example-keys", "http-public-url"]
AccessLog = Literal["all", "refusals", "off"]

DEFAULT_CONFIG = "config/registry.yaml"
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./gateway.db"
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"
DEFAULT_CATALOG_SYNC_INTERVAL_S = 6 * 3600.0
MIN_CATALOG_SYNC_INTERVAL_S = 60.0
DEFAULT_AUDIT_RETENTION_DAYS = 365.0
DEFAULT_EVENT_RETENTION_DAYS = 30.0
# Tokens used within this long are renewed ahead of expiry; idle ones lapse (SPEC §7; docs/configuration.md).
DEFAULT_TOKEN_WARM_WINDOW_S = 6 * 3600.0
# A catalog sync re-reads an idle account's binding (which costs it a token) at most this often.
DEFAULT_BINDING_RECHECK_S = 7 * 86400.0


_SECRET_KEY = "GATEWAY_SECRET_KEY"  # noqa: S105  # the variable's name
_PREVIOUS_SECRET_KEYS = "GATEWAY_PREVIOUS_SECRET_KEYS"  # noqa: S105
_MISSING_SECRET_KEY = (
    f"{_SECRET_KEY} is not set: it must hold 32 random bytes in base64 "
    "(python -c 'import base64,os; print(base64.b64encode(os.urandom(32)).decode())')"
)
_AT = re.compile(r" - at `\$\.(GATEWAY_\w+)(?:\[\d+\])?`$")


def _variable(field: str) -> str:
    return f"GATEWAY_{field.upper()}"


# Each constraint's ``description`` is what a refusal says the variable must be.
class Settings(msgspec.Struct, frozen=True, kw_only=True, rename=_variable):
    """What the process needs besides the registry; `from_environ` reads it. ``secret_box`` seals
    secrets at rest."""

    secret_keys: SecretBox | None = msgspec.field(default=None, name=_SECRET_KEY)
    config_path: str = msgspec.field(default=DEFAULT_CONFIG, name="GATEWAY_CONFIG")
    database_url: Annotated[
        str,
        msgspec.Meta(
            pattern=r"^(sqlite\+aiosqlite|postgresql\+asyncpg)://",
            description="a URL starting with sqlite+aiosqlite:// or postgresql+asyncpg://",
        ),
    ] = DEFAULT_DATABASE_URL
    public_url: Annotated[
        str, msgspec.Meta(description="an http(s) URL such as https://gateway.example.com")
    ] = DEFAULT_PUBLIC_URL
    # names the serving process for `gateway reload` while SIGHUP reloads
    pid_file: str | None = None
    renewal_lease_s: Annotated[
        float, msgspec.Meta(ge=1, le=600, description="a number of seconds from 1 to 600")
    ] = 30.0
    catalog_sync_interval_s: Annotated[
        float,
        msgspec.Meta(ge=0, description="0 (no scheduled sync) or at least 60 seconds"),
    ] = DEFAULT_CATALOG_SYNC_INTERVAL_S
    # a subscriber's answer (SPEC §10)
    delivery_timeout_s: Annotated[
        float, msgspec.Meta(ge=1, le=60, description="a number of seconds from 1 to 60")
    ] = 10.0
    # rate limits shared across replicas; per process without
    redis_url: Annotated[str | None, msgspec.Meta(description="a redis://, rediss:// or unix:// URL")] = None
    redis_key_prefix: str = "gateway:"
    # How far a WeChat push's timestamp may be from our clock, either way. No "off": the window is what
    # keeps a captured push from being replayed days later.
    push_window_s: Annotated[
        float, msgspec.Meta(ge=60, le=86400, description="a number of seconds from 60 to 86400")
    ] = 600.0
    audit_retention_days: Annotated[
        float, msgspec.Meta(ge=0, le=36500, description="0 (keep forever) or 1 to 36500 days")
    ] = DEFAULT_AUDIT_RETENTION_DAYS
    # Pushes, user messages and their deliveries, once nothing waits on them (0: kept forever).
    event_retention_days: Annotated[
        float, msgspec.Meta(ge=0, le=36500, description="0 (keep forever) or 1 to 36500 days")
    ] = DEFAULT_EVENT_RETENTION_DAYS
    # Upstream breakers (gateway.wechat.breaker): this many faults in a row open one for this long.
    upstream_breaker_threshold: Annotated[
        int, msgspec.Meta(ge=1, le=100, description="a whole number from 1 to 100")
    ] = 5
    upstream_breaker_cooldown_s: Annotated[
        float, msgspec.Meta(ge=1, le=600, description="a number of seconds from 1 to 600")
    ] = 10.0
    # inf: every token kept warm (the old keep-everything-warm policy)
    token_warm_window_s: Annotated[
        float,
        msgspec.Meta(ge=600, description="a number of at least 600 seconds (inf keeps every token warm)"),
    ] = DEFAULT_TOKEN_WARM_WINDOW_S
    # 0: every account's binding read at every sync
    binding_recheck_s: Annotated[
        float,
        msgspec.Meta(ge=0, description="0 (every binding read at every sync) or a number of seconds"),
    ] = DEFAULT_BINDING_RECHECK_S
    # Re-read the registry file this often and reload it when its bytes change (0: only SIGHUP and the
    # admin endpoint reload): how a ConfigMap edit reaches every replica.
    registry_watch_s: Annotated[
        float, msgspec.Meta(ge=0, le=3600, description="0 (no watch) or a number of seconds up to 3600")
    ] = 0.0
    # Serve /metrics on this port only, not on the public one.
    admin_port: (
        Annotated[int, msgspec.Meta(ge=1, le=65535, description="a port number from 1 to 65535")] | None
    ) = None
    # Lines on the logger gateway.access: every request, or those answered 4xx/5xx. A line costs about
    # 50 µs of the server's CPU, as much again as a cached token request (docs/benchmarks.md).
    access_log: Annotated[AccessLog, msgspec.Meta(description="all, refusals or off")] = "refusals"
    # OpenTelemetry traces, exported over OTLP as the OTEL_* variables say (needs the otel extra).
    otel: Annotated[bool, msgspec.Meta(description="true or false")] = False
    event_loop: Annotated[EventLoop, msgspec.Meta(description="auto, uvloop or asyncio")] = "auto"
    http_parser: Annotated[HttpParser, msgspec.Meta(description="auto, httptools or h11")] = "auto"
    log_level: Annotated[LogLevel, msgspec.Meta(description="one of DEBUG, INFO, WARNING, ERROR")] = "INFO"
    # None: the command's own (JSON lines for `serve`, readable lines at a terminal)
    log_format: Annotated[LogFormat | None, msgspec.Meta(description="json or text")] = None
    # False: `serve` leaves the schema alone and refuses a database behind this release (`--no-migrate`)
    migrate: Annotated[bool, msgspec.Meta(description="1 or 0 (true or false)")] = True
    # `serve`'s refusals an operator chose to run past, by name (comma-separated in the environment)
    allow_unsafe: Annotated[
        frozenset[Unsafe],
        msgspec.Meta(description="a comma-separated list of: example-keys, http-public-url"),
    ] = frozenset()
    # Which of the variables `serve` will not leave to a default were left to it (not read from the
    # environment: from_environ fills it in).
    defaulted: frozenset[str] = msgspec.field(default=frozenset(), name="defaulted")

    def __post_init__(self) -> None:
        msgspec.structs.force_setattr(self, "public_url", self.public_url.rstrip("/"))
        parts = urlsplit(self.public_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(_refusal("public_url"))
        interval = self.catalog_sync_interval_s
        if math.isinf(interval) or 0 < interval < MIN_CATALOG_SYNC_INTERVAL_S:
            raise ValueError(_refusal("catalog_sync_interval_s"))
        if math.isinf(self.binding_recheck_s):
            raise ValueError(_refusal("binding_recheck_s"))
        for days in ("audit_retention_days", "event_retention_days"):
            if 0 < getattr(self, days) < 1:
                raise ValueError(_refusal(days))
        if self.redis_url is not None and not _is_redis_url(self.redis_url):
            raise ValueError(_refusal("redis_url"))

    @property
    def secret_box(self) -> SecretBox:
        """The keys that seal secrets at rest; ConfigError when ``GATEWAY_SECRET_KEY`` is not set (only
        the commands that open the store need it)."""
        if self.secret_keys is None:
            raise ConfigError(_MISSING_SECRET_KEY)
        return self.secret_keys

    @classmethod
    def from_environ(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        config_path: str | None = None,
        pid_file: str | None = None,
    ) -> Settings:
        """Read every ``GATEWAY_*`` variable (ConfigError naming the first that does not fit);
        ``config_path`` and ``pid_file`` (the ``--config`` and ``--pid-file`` flags) win over the
        environment."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {
            name: value.strip()
            for name, value in env.items()
            if name.startswith("GATEWAY_")
            and name not in (_SECRET_KEY, _PREVIOUS_SECRET_KEYS)
            and value.strip()
        }
        if "GATEWAY_ALLOW_UNSAFE" in values:
            names = str(values["GATEWAY_ALLOW_UNSAFE"]).split(",")
            values["GATEWAY_ALLOW_UNSAFE"] = [name.strip().lower() for name in names if name.strip()]
        values["defaulted"] = [name for name in _NO_QUIET_DEFAULT if name not in values]
        if "GATEWAY_LOG_LEVEL" in values:
            values["GATEWAY_LOG_LEVEL"] = str(values["GATEWAY_LOG_LEVEL"]).upper()
        if config_path:
            values["GATEWAY_CONFIG"] = config_path
        if pid_file:
            values["GATEWAY_PID_FILE"] = pid_file
        if env.get(_SECRET_KEY):
            # Previous keys only open: during a key rotation (docs/configuration.md) values sealed under
            # them stay readable until `gateway rotate-secret-key` has re-sealed them all.
            values[_SECRET_KEY] = SecretBox.from_base64(
                env[_SECRET_KEY], previous=env.get(_PREVIOUS_SECRET_KEYS, "")
            )
        try:
            return msgspec.convert(values, cls, strict=False)
        except msgspec.ValidationError as exc:
            at = _AT.search(str(exc))
            raise ConfigError(_refusal(_FIELDS[at.group(1)]) if at else str(exc)) from None


# variable -> field
_FIELDS = dict(zip(Settings.__struct_encode_fields__, Settings.__struct_fields__, strict=True))
# `serve` refuses to run on these variables' defaults (a database beside wherever it was started; a public
# URL no one else reaches, over http): each must be given, even if to its default value.
_NO_QUIET_DEFAULT = ("GATEWAY_DATABASE_URL", "GATEWAY_PUBLIC_URL")


def _refusal(field: str) -> str:
    """What the variable of ``field`` must be, in words: the description of its constraint."""
    info = msgspec.inspect.type_info(Settings)
    assert isinstance(info, msgspec.inspect.StructType)
    spec = next(f for f in info.fields if f.name == field)
    kinds = spec.type.types if isinstance(spec.type, msgspec.inspect.UnionType) else (spec.type,)
    described = [t.extra_json_schema for t in kinds if isinstance(t, msgspec.inspect.Metadata)]
    extra = described[0] if described else None
    description = (extra or {}).get("description", "valid")
    return f"{spec.encode_name} must be {description}"


def _is_redis_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # raises ValueError for a port that is not a number in range
    except ValueError:
        return False
    if parts.scheme == "unix":
        return bool(parts.path)
    return parts.scheme in ("redis", "rediss") and bool(parts.hostname)
