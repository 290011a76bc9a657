"""Runtime settings, read from the environment (SPEC §3). Plain values; no settings framework."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from gateway.crypto import SecretBox
from gateway.errors import ConfigError

__all__ = [
    "DEFAULT_BINDING_RECHECK_S",
    "DEFAULT_CATALOG_SYNC_INTERVAL_S",
    "DEFAULT_CONFIG",
    "DEFAULT_DATABASE_URL",
    "DEFAULT_PUBLIC_URL",
    "DEFAULT_TOKEN_WARM_WINDOW_S",
    "Settings",
]

DEFAULT_CONFIG = "config/registry.yaml"
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./gateway.db"
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"
DEFAULT_CATALOG_SYNC_INTERVAL_S = 6 * 3600.0
MIN_CATALOG_SYNC_INTERVAL_S = 60.0
DEFAULT_AUDIT_RETENTION_DAYS = 365.0
DEFAULT_EVENT_RETENTION_DAYS = 30.0
# Tokens used within this long are renewed ahead of expiry; idle ones lapse (SPEC §7; docs/configuration.md).
DEFAULT_TOKEN_WARM_WINDOW_S = 6 * 3600.0
MIN_TOKEN_WARM_WINDOW_S = 600.0
# A catalog sync re-reads an idle account's binding (which costs it a token) at most this often.
DEFAULT_BINDING_RECHECK_S = 7 * 86400.0


@dataclass(frozen=True)
class Settings:
    """What the process needs besides the registry. ``secret_box`` seals secrets at rest."""

    config_path: str
    database_url: str
    secret_box: SecretBox
    public_url: str
    renewal_lease_s: float = 30.0
    catalog_sync_interval_s: float = DEFAULT_CATALOG_SYNC_INTERVAL_S  # 0: no scheduled sync
    delivery_timeout_s: float = 10.0  # a subscriber's answer (SPEC §10)
    redis_url: str | None = None  # rate limits shared across replicas; per process without
    redis_key_prefix: str = "gateway:"
    push_window_s: float = 600.0  # how far a WeChat push's timestamp may be from our clock, either way
    audit_retention_days: float = DEFAULT_AUDIT_RETENTION_DAYS  # 0: audit rows are kept forever
    # Pushes, user messages and their deliveries, once nothing waits on them (0: kept forever).
    event_retention_days: float = DEFAULT_EVENT_RETENTION_DAYS
    pid_file: str | None = None  # names the serving process for `gateway reload` while SIGHUP reloads
    # Upstream breakers (gateway.wechat.breaker): this many faults in a row open one for this long.
    upstream_breaker_threshold: int = 5
    upstream_breaker_cooldown_s: float = 10.0
    token_warm_window_s: float = DEFAULT_TOKEN_WARM_WINDOW_S  # inf: every token kept warm
    binding_recheck_s: float = DEFAULT_BINDING_RECHECK_S  # 0: every account's binding read at every sync

    @classmethod
    def from_environ(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        config_path: str | None = None,
        pid_file: str | None = None,
    ) -> Settings:
        """Read ``GATEWAY_*`` variables; ``config_path`` and ``pid_file`` (the ``--config`` and
        ``--pid-file`` flags) win over the environment."""
        env = os.environ if environ is None else environ
        secret = env.get("GATEWAY_SECRET_KEY", "")
        if not secret:
            raise ConfigError(
                "GATEWAY_SECRET_KEY is not set: it must hold 32 random bytes in base64 "
                "(python -c 'import base64,os; print(base64.b64encode(os.urandom(32)).decode())')"
            )
        public_url = env.get("GATEWAY_PUBLIC_URL", DEFAULT_PUBLIC_URL).rstrip("/")
        parts = urlsplit(public_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError("GATEWAY_PUBLIC_URL must be an http(s) URL such as https://gateway.example.com")
        database_url = env.get("GATEWAY_DATABASE_URL", DEFAULT_DATABASE_URL)
        if not database_url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ConfigError(
                "GATEWAY_DATABASE_URL must start with sqlite+aiosqlite:// or postgresql+asyncpg://"
            )
        try:
            lease = float(env.get("GATEWAY_RENEWAL_LEASE_S", "30"))
        except ValueError:
            raise ConfigError("GATEWAY_RENEWAL_LEASE_S must be a number of seconds") from None
        if not 1 <= lease <= 600:
            raise ConfigError("GATEWAY_RENEWAL_LEASE_S must be between 1 and 600 seconds")
        try:
            sync_interval = float(
                env.get("GATEWAY_CATALOG_SYNC_INTERVAL_S", str(DEFAULT_CATALOG_SYNC_INTERVAL_S))
            )
        except ValueError:
            raise ConfigError("GATEWAY_CATALOG_SYNC_INTERVAL_S must be a number of seconds") from None
        if sync_interval != 0 and not MIN_CATALOG_SYNC_INTERVAL_S <= sync_interval < float("inf"):
            raise ConfigError(
                "GATEWAY_CATALOG_SYNC_INTERVAL_S must be 0 (no scheduled sync) "
                f"or at least {MIN_CATALOG_SYNC_INTERVAL_S:.0f} seconds"
            )
        try:
            delivery_timeout = float(env.get("GATEWAY_DELIVERY_TIMEOUT_S", "10"))
        except ValueError:
            raise ConfigError("GATEWAY_DELIVERY_TIMEOUT_S must be a number of seconds") from None
        if not 1 <= delivery_timeout <= 60:
            raise ConfigError("GATEWAY_DELIVERY_TIMEOUT_S must be between 1 and 60 seconds")
        try:
            push_window = float(env.get("GATEWAY_PUSH_WINDOW_S", "600"))
        except ValueError:
            raise ConfigError("GATEWAY_PUSH_WINDOW_S must be a number of seconds") from None
        # No "off": the window is what keeps a captured push from being replayed days later.
        if not 60 <= push_window <= 86400:
            raise ConfigError("GATEWAY_PUSH_WINDOW_S must be between 60 and 86400 seconds")
        try:
            breaker_threshold = int(env.get("GATEWAY_UPSTREAM_BREAKER_THRESHOLD", "5"))
        except ValueError:
            raise ConfigError("GATEWAY_UPSTREAM_BREAKER_THRESHOLD must be a whole number") from None
        if not 1 <= breaker_threshold <= 100:
            raise ConfigError("GATEWAY_UPSTREAM_BREAKER_THRESHOLD must be between 1 and 100")
        try:
            breaker_cooldown = float(env.get("GATEWAY_UPSTREAM_BREAKER_COOLDOWN_S", "10"))
        except ValueError:
            raise ConfigError("GATEWAY_UPSTREAM_BREAKER_COOLDOWN_S must be a number of seconds") from None
        if not 1 <= breaker_cooldown <= 600:
            raise ConfigError("GATEWAY_UPSTREAM_BREAKER_COOLDOWN_S must be between 1 and 600 seconds")
        warm_window = _seconds(env, "GATEWAY_TOKEN_WARM_WINDOW_S", DEFAULT_TOKEN_WARM_WINDOW_S)
        if not warm_window >= MIN_TOKEN_WARM_WINDOW_S:  # inf allowed: the old keep-everything-warm policy
            raise ConfigError(
                f"GATEWAY_TOKEN_WARM_WINDOW_S must be at least {MIN_TOKEN_WARM_WINDOW_S:.0f} seconds "
                "(inf keeps every token warm)"
            )
        binding_recheck = _seconds(env, "GATEWAY_BINDING_RECHECK_S", DEFAULT_BINDING_RECHECK_S)
        if not 0 <= binding_recheck < float("inf"):
            raise ConfigError(
                "GATEWAY_BINDING_RECHECK_S must be 0 (every binding read at every sync) or a number of "
                "seconds"
            )
        retention = _retention_days(env, "GATEWAY_AUDIT_RETENTION_DAYS", DEFAULT_AUDIT_RETENTION_DAYS)
        event_retention = _retention_days(env, "GATEWAY_EVENT_RETENTION_DAYS", DEFAULT_EVENT_RETENTION_DAYS)
        redis_url = env.get("GATEWAY_REDIS_URL") or None
        if redis_url is not None and not _is_redis_url(redis_url):
            # The value is not quoted: it may hold a password.
            raise ConfigError("GATEWAY_REDIS_URL must be a redis://, rediss:// or unix:// URL")
        return cls(
            config_path=config_path or env.get("GATEWAY_CONFIG", DEFAULT_CONFIG),
            pid_file=pid_file or env.get("GATEWAY_PID_FILE") or None,
            redis_url=redis_url,
            redis_key_prefix=env.get("GATEWAY_REDIS_KEY_PREFIX", "gateway:"),
            renewal_lease_s=lease,
            catalog_sync_interval_s=sync_interval,
            delivery_timeout_s=delivery_timeout,
            push_window_s=push_window,
            audit_retention_days=retention,
            event_retention_days=event_retention,
            upstream_breaker_threshold=breaker_threshold,
            upstream_breaker_cooldown_s=breaker_cooldown,
            token_warm_window_s=warm_window,
            binding_recheck_s=binding_recheck,
            database_url=database_url,
            # Previous keys only open: during a key rotation (docs/configuration.md) values sealed under
            # them stay readable until `gateway rotate-secret-key` has re-sealed them all.
            secret_box=SecretBox.from_base64(secret, previous=env.get("GATEWAY_PREVIOUS_SECRET_KEYS", "")),
            public_url=public_url,
        )


def _is_redis_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # raises ValueError for a port that is not a number in range
    except ValueError:
        return False
    if parts.scheme == "unix":
        return bool(parts.path)
    return parts.scheme in ("redis", "rediss") and bool(parts.hostname)


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    """A number of seconds from ``name`` (range checks are the caller's); NaN is not a number here."""
    try:
        value = float(env.get(name, str(default)))
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds") from None
    if value != value:
        raise ConfigError(f"{name} must be a number of seconds")
    return value


def _retention_days(env: Mapping[str, str], name: str, default: float) -> float:
    """A retention in days from ``name``: 0 (keep forever) or 1 to 36500."""
    try:
        days = float(env.get(name, str(default)))
    except ValueError:
        raise ConfigError(f"{name} must be a number of days") from None
    if days != 0 and not 1 <= days <= 36500:
        raise ConfigError(f"{name} must be 0 (keep forever) or 1 to 36500 days")
    return days
