"""`gateway.settings`: every ``GATEWAY_*`` variable in one validated struct, read in that module only."""

from __future__ import annotations

import ast
import base64
import os
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.settings import Settings

GATEWAY = Path(__file__).resolve().parent.parent / "gateway"
KEY = base64.b64encode(os.urandom(32)).decode()

# One value each variable refuses (the secret ones never appear in a message, whatever they hold).
BAD = {
    "GATEWAY_DATABASE_URL": "mysql://root:hunter2@db/gateway",
    "GATEWAY_PUBLIC_URL": "ftp://gateway.example",
    "GATEWAY_RENEWAL_LEASE_S": "soon",
    "GATEWAY_CATALOG_SYNC_INTERVAL_S": "30",
    "GATEWAY_DELIVERY_TIMEOUT_S": "61",
    "GATEWAY_REDIS_URL": "http://:hunter2@redis:6379",
    "GATEWAY_PUSH_WINDOW_S": "nan",
    "GATEWAY_AUDIT_RETENTION_DAYS": "0.5",
    "GATEWAY_EVENT_RETENTION_DAYS": "a month",
    "GATEWAY_UPSTREAM_BREAKER_THRESHOLD": "2.5",
    "GATEWAY_UPSTREAM_BREAKER_COOLDOWN_S": "0.25",
    "GATEWAY_TOKEN_WARM_WINDOW_S": "599.5",
    "GATEWAY_BINDING_RECHECK_S": "inf",
    "GATEWAY_REGISTRY_WATCH_S": "-5",
    "GATEWAY_ADMIN_PORT": "65536",
    "GATEWAY_ACCESS_LOG": "sometimes",
    "GATEWAY_OTEL": "maybe",
    "GATEWAY_EVENT_LOOP": "trio",
    "GATEWAY_HTTP_PARSER": "picohttp",
    "GATEWAY_LOG_LEVEL": "LOUD",
    "GATEWAY_LOG_FORMAT": "xml",
    "GATEWAY_SECRET_KEY": "hunter2",
    "GATEWAY_PREVIOUS_SECRET_KEYS": "hunter2",
    "GATEWAY_MIGRATE": "perhaps",
    "GATEWAY_ALLOW_UNSAFE": "example-keys,everything",
}
# Free text: any value is one.
FREE = {"GATEWAY_CONFIG", "GATEWAY_PID_FILE", "GATEWAY_REDIS_KEY_PREFIX"}


def test_every_variable_is_a_field_of_the_struct() -> None:
    variables = set(Settings.__struct_encode_fields__) | {"GATEWAY_PREVIOUS_SECRET_KEYS"}
    assert variables == set(BAD) | FREE | {"defaulted"}  # the one field no variable sets


def test_what_serve_will_not_leave_to_a_default_and_what_it_may_run_past() -> None:
    quiet = Settings.from_environ({"defaulted": "", "GATEWAY_DEFAULTED": "x"})
    assert quiet.defaulted == {"GATEWAY_DATABASE_URL", "GATEWAY_PUBLIC_URL"}
    assert (quiet.migrate, quiet.allow_unsafe) == (True, frozenset())
    given = Settings.from_environ(
        {
            "GATEWAY_DATABASE_URL": "sqlite+aiosqlite:///./gateway.db",  # the default, but given
            "GATEWAY_MIGRATE": "0",
            "GATEWAY_ALLOW_UNSAFE": " Example-Keys ,http-public-url,",
        }
    )
    assert given.defaulted == {"GATEWAY_PUBLIC_URL"}
    assert given.migrate is False
    assert given.allow_unsafe == {"example-keys", "http-public-url"}


@pytest.mark.parametrize(("variable", "value"), sorted(BAD.items()))
def test_a_bad_value_is_refused_by_its_variable_and_never_quoted(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_environ({"GATEWAY_SECRET_KEY": KEY, variable: value})
    assert variable in str(refused.value)
    assert value not in str(refused.value)
    assert "hunter2" not in str(refused.value)


def test_defaults_and_values() -> None:
    defaults = Settings.from_environ({})
    assert (defaults.renewal_lease_s, defaults.push_window_s) == (30.0, 600.0)
    assert defaults.log_format is None  # the command's own
    tuned = Settings.from_environ(
        {
            "GATEWAY_PUBLIC_URL": "https://gateway.example/",
            "GATEWAY_RENEWAL_LEASE_S": " 45 ",
            "GATEWAY_LOG_LEVEL": "debug",
            "GATEWAY_REDIS_URL": "",  # empty: unset
            "GATEWAY_CONFIG": "env.yaml",
        },
        config_path="flag.yaml",
    )
    assert tuned.public_url == "https://gateway.example"
    assert (tuned.renewal_lease_s, tuned.log_level, tuned.redis_url) == (45.0, "DEBUG", None)
    assert tuned.config_path == "flag.yaml"  # the flag wins


def test_the_secret_key_is_asked_for_where_it_is_needed() -> None:
    settings = Settings.from_environ({"GATEWAY_DATABASE_URL": "sqlite+aiosqlite:///x.db"})
    assert settings.database_url == "sqlite+aiosqlite:///x.db"  # `gateway db upgrade` needs no key
    with pytest.raises(ConfigError, match="GATEWAY_SECRET_KEY is not set"):
        _ = settings.secret_box
    assert Settings.from_environ({"GATEWAY_SECRET_KEY": KEY}).secret_box.key_id


def _variables_looked_up(tree: ast.AST) -> set[str]:
    """``GATEWAY_*`` names looked up in a mapping: ``x.get("GATEWAY_…")``, ``x["GATEWAY_…"]``, ``getenv``."""
    named = set()
    for node in ast.walk(tree):
        keys: list[ast.expr] = []
        if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
            "get",
            "getenv",
            "setdefault",
            "pop",
        ):
            keys = node.args[:1]
        elif isinstance(node, ast.Subscript):
            keys = [node.slice]
        named |= {
            k.value for k in keys if isinstance(k, ast.Constant) and str(k.value).startswith("GATEWAY_")
        }
    return named


def test_no_other_module_reads_a_gateway_variable() -> None:
    readers = {
        f"{path.relative_to(GATEWAY.parent)}: {name}"
        for path in sorted(GATEWAY.rglob("*.py"))
        if path != GATEWAY / "settings.py"
        for name in _variables_looked_up(ast.parse(path.read_text(encoding="utf-8")))
    }
    # The demo fills in its own defaults in the environment it hands to Settings.from_environ.
    assert readers == {
        "gateway/cli/demo.py: GATEWAY_SECRET_KEY",
        "gateway/cli/demo.py: GATEWAY_DATABASE_URL",
        "gateway/cli/demo.py: GATEWAY_PUBLIC_URL",
    }
