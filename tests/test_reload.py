"""Registry reloads (SIGHUP, ``gateway reload``), in-process (the file rewritten and read again by
``LiveRegistry.reload``, as the signal handler does) and against a real ``gateway serve``: changed, added
and removed clients apply to the next request; added platforms take pushes at once and removed ones answer
``platform_unknown``; a file that does not validate is refused with its start-up message and the running
registry stays; and requests in flight across many reloads all succeed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import yaml

from gateway.crypto import SecretBox
from gateway.errors import RegistryError
from gateway.registry.live import LiveRegistry, RegistryChanges, reload_on_sighup
from gateway.registry.model import Registry, WechatSettings, load_registry
from gateway.wechat.client import WeChatClient
from tests.conftest import CLIENT_KEYS, PLATFORM_SECRETS, REGISTRY_YAML, registry_environ
from tests.support.flows import push_ticket
from tests.support.world import FINANCE, OA, RETAIL, World, open_world
from tests.test_e2e import ROOT, Process, free_port, wait_for
from tests.test_event_intake import ticket_xml, wechatpy_push

ROTATED_KEY = "crm-rotated-key"


def document(**changes: Any) -> dict[str, Any]:
    """The test registry as a YAML document (``${VAR}`` references kept), top-level keys replaced."""
    doc: dict[str, Any] = yaml.safe_load(REGISTRY_YAML)
    return doc | changes


def without_platform(platform_id: str) -> list[dict[str, Any]]:
    return [p for p in document()["platforms"] if p["id"] != platform_id]


class RegistryFile:
    """The registry file a running gateway reloads from."""

    def __init__(self, path: Path, world: World) -> None:
        self.path = path
        self.live: LiveRegistry = world.services.registry

    def reload(self, doc: dict[str, Any]) -> bool:
        self.path.write_text(yaml.safe_dump(doc))
        return self.live.reload(self.path)


@pytest.fixture
def environ() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:  # the registry's ${VAR}s, read again by every reload
        for name, value in registry_environ().items():
            patch.setenv(name, value)
        yield


@pytest.fixture
async def reloadable(
    environ: None, registry: Registry, sqlite_url: str, secret_box: SecretBox, tmp_path: Path
) -> AsyncIterator[tuple[World, RegistryFile]]:
    """Tickets on both platforms, OA authorized on retail, the registry in a file of its own."""
    async with open_world(registry, sqlite_url, secret_box) as world:
        for values in (RETAIL, FINANCE):
            assert (await push_ticket(world.sim, values["appid"]))["body"] == "success"
        await world.authorize("retail", OA, [1, 2, 24])
        yield world, RegistryFile(tmp_path / "registry.yaml", world)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def token_status(world: World, key: str) -> int:
    return (await world.gateway.get(f"/v1/authorizers/{OA}/access-token", headers=bearer(key))).status_code


async def test_client_changes_apply_to_the_next_request(reloadable: tuple[World, RegistryFile]) -> None:
    world, registry = reloadable
    clients = document()["clients"]
    crm = next(c for c in clients if c["id"] == "crm")
    crm["key_sha256"] = hashlib.sha256(ROTATED_KEY.encode()).hexdigest()  # the crm key rotated
    clients = [c for c in clients if c["id"] != "limited"]  # a client retired
    clients.append(
        {"id": "newcomer", "key_sha256": hashlib.sha256(b"newcomer-key").hexdigest(), "scopes": ["token"]}
    )
    assert await token_status(world, CLIENT_KEYS["crm"]) == 200
    assert await token_status(world, CLIENT_KEYS["limited"]) == 200

    assert registry.reload(document(clients=clients))

    assert await token_status(world, CLIENT_KEYS["crm"]) == 401
    assert await token_status(world, ROTATED_KEY) == 200
    assert await token_status(world, CLIENT_KEYS["limited"]) == 401
    assert await token_status(world, "newcomer-key") == 200


async def test_a_new_group_binding_applies_to_the_next_binding_decision(
    reloadable: tuple[World, RegistryFile],
) -> None:
    world, registry = reloadable  # OA's principal is "ACME Co., Ltd."
    seeded = {"open_appid": "wx0pen0000000001", "principal_name": "ACME Co., Ltd.", "verified": True}
    (await world.sim.post("/sim/open-accounts", json=seeded)).raise_for_status()
    await world.reset_counters()
    headers = bearer(CLIENT_KEYS["onboarding"])
    group = {
        "name": "Test Group",
        "open_appid": "wx0pen0000000001",
        "principal_name": "Another Principal Co.",
        "binding": {"mode": "group"},
    }
    assert registry.reload(document(group=group))
    refused = await world.gateway.post(f"/v1/authorizers/{OA}/open-binding", headers=headers)
    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "principal_mismatch")
    assert await world.calls("open/bind") == 0

    assert registry.reload(document(group=group | {"principal_name": "ACME Co., Ltd."}))
    bound = await world.gateway.post(f"/v1/authorizers/{OA}/open-binding", headers=headers)
    assert bound.json() == {"state": "newly_bound", "open_appid": "wx0pen0000000001"}
    assert await world.calls("open/bind") == 1


async def test_added_platforms_take_pushes_and_removed_ones_stop(
    reloadable: tuple[World, RegistryFile], caplog: pytest.LogCaptureFixture
) -> None:
    world, registry = reloadable
    assert registry.reload(document(platforms=without_platform("finance")))
    refused = await push_ticket(world.sim, FINANCE["appid"])
    assert refused["status"] == 404 and "platform_unknown" in refused["body"]
    link = await world.gateway.post(
        "/v1/platforms/finance/authorization-links", json={}, headers=bearer(CLIENT_KEYS["onboarding"])
    )
    assert (link.status_code, link.json()["error"]["code"]) == (404, "platform_unknown")

    assert registry.reload(document(platforms=without_platform("retail")))  # finance back, retail gone
    assert (await push_ticket(world.sim, FINANCE["appid"]))["body"] == "success"
    gone = await push_ticket(world.sim, RETAIL["appid"])
    assert gone["status"] == 404 and "platform_unknown" in gone["body"]
    # OA's only authorization is on retail: no token through a platform the registry no longer has
    assert await token_status(world, CLIENT_KEYS["crm"]) != 200

    # retail's stored tokens stay (it may come back) but are no longer renewed, and nothing complains
    await world.expire_everything()
    with caplog.at_level(logging.WARNING):
        assert await world.services.tokens.renew_due() == 1  # finance's component token only
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text

    assert registry.reload(document())  # retail back: its authorization serves again
    assert await token_status(world, CLIENT_KEYS["crm"]) == 200


async def test_a_bad_file_is_refused_and_the_running_registry_stays(
    reloadable: tuple[World, RegistryFile], caplog: pytest.LogCaptureFixture
) -> None:
    world, registry = reloadable
    before = registry.live.current
    platforms = document()["platforms"]
    platforms[1]["encoding_aes_key"] = "too-short"
    with caplog.at_level(logging.INFO, logger="gateway.registry.live"):
        assert not registry.reload(document(platforms=platforms))
    with pytest.raises(RegistryError) as at_start_up:
        load_registry(registry.path)
    assert str(at_start_up.value).startswith(f"{registry.path}: platforms[1].encoding_aes_key")
    assert f"registry reload refused, the running registry stays: {at_start_up.value}" in caplog.text
    assert "too-short" not in caplog.text  # the message names fields, never their contents
    assert registry.live.current is before
    assert await token_status(world, CLIENT_KEYS["crm"]) == 200
    assert (await push_ticket(world.sim, FINANCE["appid"]))["body"] == "success"

    registry.path.unlink()  # a file gone is refused the same way
    assert not registry.live.reload(registry.path)
    assert registry.live.current is before


async def test_no_request_fails_while_the_registry_is_reloaded(
    reloadable: tuple[World, RegistryFile],
) -> None:
    """200 token requests at once while the registry is swapped 20 times, between two files that differ
    in an unrelated client: every request is served."""
    world, registry = reloadable
    other = document(
        clients=[
            *document()["clients"],
            {"id": "extra", "key_sha256": hashlib.sha256(b"extra").hexdigest(), "scopes": ["catalog"]},
        ]
    )

    async def reloads() -> int:
        done = 0
        for i in range(20):
            done += registry.reload(other if i % 2 == 0 else document())
            await asyncio.sleep(0.005)
        return done

    results = await asyncio.gather(reloads(), *(token_status(world, CLIENT_KEYS["crm"]) for _ in range(200)))
    assert results[0] == 20
    assert results[1:] == [200] * 200


def test_the_log_line_says_what_changed_and_never_a_secret(registry: Registry) -> None:
    crm = registry.client("crm")
    assert crm is not None
    rotated = msgspec.structs.replace(crm, key_sha256="ab" * 32)
    changed = msgspec.structs.replace(
        registry,
        platforms=registry.platforms[1:],
        clients=tuple(rotated if c.id == "crm" else c for c in registry.clients if c.id != "limited"),
        wechat=WechatSettings(api_base="http://dr.wechat.test"),
    )
    line = RegistryChanges.between(registry, changed).describe()
    assert line == (
        "platforms -retail; clients -limited ~crm; 0 subscription(s) in force; wechat.api_base changed"
    )
    assert RegistryChanges.between(registry, registry).describe() == (
        "platforms unchanged; clients unchanged; 0 subscription(s) in force"
    )
    principal = msgspec.structs.replace(registry.group, principal_name="ACME Co., Ltd.")
    moved = RegistryChanges.between(registry, msgspec.structs.replace(registry, group=principal))
    assert moved.binding_changed and moved.describe().endswith(
        "group binding changed (the next open-binding check or sync applies it)"
    )
    for secret in (crm.key_sha256, "ab" * 32, PLATFORM_SECRETS["retail"]["secret"]):
        assert secret not in line


async def test_the_upstream_client_follows_a_moved_api_base(registry: Registry) -> None:
    """``wechat.api_base`` is read per call: after a reload the next call goes to the new host."""
    hosts: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        hosts.append(request.url.host)
        return httpx.Response(200, json={"component_access_token": "t", "expires_in": 7200})

    live = LiveRegistry(registry)
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        wechat = WeChatClient(http, lambda: live.current.wechat.api_base)
        await wechat.component_token("wxc0mp000000001", "secret", "ticket", platform_id="retail")
        live.swap(msgspec.structs.replace(registry, wechat=WechatSettings(api_base="http://dr.wechat.test")))
        await wechat.component_token("wxc0mp000000001", "secret", "ticket", platform_id="retail")
    assert hosts == ["wechat.test", "dr.wechat.test"]


async def test_sighup_reloads_and_the_pid_file_names_the_process_meanwhile(
    environ: None, registry: Registry, tmp_path: Path
) -> None:
    """On the main thread SIGHUP reloads, and the pid file names this process while the handler is in
    place; in a thread's loop (where tests serve apps) nothing is installed and no pid file written."""
    path, pid_file = tmp_path / "registry.yaml", tmp_path / "gateway.pid"
    path.write_text(yaml.safe_dump(document(platforms=without_platform("finance"))))
    live = LiveRegistry(registry)
    with reload_on_sighup(live, path, str(pid_file)):
        assert pid_file.read_text().strip() == str(os.getpid())
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(100):
            await asyncio.sleep(0.01)
            if live.current is not registry:
                break
        assert [p.id for p in live.current.platforms] == ["retail"]
    assert not pid_file.exists()

    async def in_thread() -> bool:
        with reload_on_sighup(live, path, str(pid_file)):
            return pid_file.exists()

    assert not await asyncio.to_thread(asyncio.run, in_thread())


# --- a real process ---------------------------------------------------------------------------------


def _gateway(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _events(output: str) -> str:
    """The messages of a log, whether written as JSON lines or as text."""
    events = []
    for line in output.splitlines():
        try:
            events.append(str(json.loads(line)["event"]))
        except (ValueError, KeyError, TypeError):
            events.append(line)
    return "\n".join(events)


def _push_ticket(url: str, platform_id: str) -> httpx.Response:
    query, body = wechatpy_push(platform_id, ticket_xml(platform_id))
    return httpx.post(f"{url}/wechat/{platform_id}/events", params=query, content=body, timeout=10)


class _Load:
    """Catalog reads, one after another on a kept-alive connection, for as long as it runs."""

    def __init__(self, url: str) -> None:
        self.outcomes: list[int | str] = []
        self._url = url
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        with httpx.Client(base_url=self._url, headers=bearer(CLIENT_KEYS["audit"]), timeout=10) as client:
            while not self._stop.is_set():
                try:
                    self.outcomes.append(client.get("/v1/catalog").status_code)
                except httpx.HTTPError as exc:
                    self.outcomes.append(type(exc).__name__)

    def stop(self) -> list[int | str]:
        self._stop.set()
        self._thread.join()
        return self.outcomes


def test_gateway_reload_swaps_a_serving_process_and_refuses_a_bad_file(tmp_path: Path) -> None:
    """``gateway serve`` with a pid file; ``gateway reload`` adds a platform and a client under a steady
    load of requests, then a bad file is refused with the message ``gateway check-config`` gives, and not
    one request fails throughout."""
    path, pid_file = tmp_path / "registry.yaml", tmp_path / "gateway.pid"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")} | registry_environ()
    env |= {
        "GATEWAY_SECRET_KEY": base64.b64encode(os.urandom(32)).decode(),
        "GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}",
        "GATEWAY_CATALOG_SYNC_INTERVAL_S": "0",
        "GATEWAY_PUBLIC_URL": "http://127.0.0.1:8000",
    }
    path.write_text(yaml.safe_dump(document(platforms=without_platform("finance"))))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = ["serve", "--config", str(path), "--port", str(port), "--pid-file", str(pid_file)]
    server = Process(serve, env, tmp_path / "gateway.log")
    try:
        _reload_under_load(server, url, path, pid_file, env)
    finally:
        server.stop(signal.SIGKILL)
    assert not pid_file.exists()
    gone = _gateway("reload", "--pid-file", str(pid_file), env=env)
    assert gone.returncode == 2 and "cannot read a process id" in gone.stderr
    assert _gateway("reload", "--pid", str(server.proc.pid), env=env).returncode == 1
    assert _gateway("reload", env=env).returncode == 2  # no instance named


def _reload_under_load(server: Process, url: str, path: Path, pid_file: Path, env: dict[str, str]) -> None:
    wait_for(lambda: httpx.get(f"{url}/healthz", timeout=5).is_success, what="the gateway")
    wait_for(pid_file.exists, what="the pid file")
    assert int(pid_file.read_text()) == server.proc.pid

    load = _Load(url)
    try:
        assert _push_ticket(url, "finance").status_code == 404
        clients = [
            *document()["clients"],
            {"id": "auditor2", "key_sha256": hashlib.sha256(b"k2").hexdigest(), "scopes": ["catalog"]},
        ]
        path.write_text(yaml.safe_dump(document(clients=clients)))
        mark = len(server.output())
        reloaded = _gateway("reload", "--pid-file", str(pid_file), env=env)
        assert reloaded.returncode == 0, reloaded.stderr
        assert f"asked process {server.proc.pid}" in reloaded.stdout
        wait_for(lambda: "registry reloaded" in server.output()[mark:], what="the reload")
        assert "platforms +finance; clients +auditor2" in _events(server.output()[mark:])
        assert _push_ticket(url, "finance").text == "success"
        assert httpx.get(f"{url}/v1/catalog", headers=bearer("k2"), timeout=10).status_code == 200

        for i in range(10):  # and a burst of reloads, good files all, while requests keep coming
            path.write_text(yaml.safe_dump(document(clients=clients if i % 2 else clients[:-1])))
            server.proc.send_signal(signal.SIGHUP)
            time.sleep(0.05)
        path.write_text(yaml.safe_dump(document(clients=clients)))
        server.proc.send_signal(signal.SIGHUP)
        # (signals sent close together may arrive as one: any reload after the last write reads it)
        wait_for(lambda: server.output().count("registry reloaded") >= 2, what="the burst of reloads")
        time.sleep(0.5)

        platforms = document()["platforms"]
        platforms[0]["encoding_aes_key"] = "short"
        path.write_text(yaml.safe_dump(document(platforms=platforms, clients=clients)))
        checked = _gateway("check-config", str(path), env=env)
        assert checked.returncode == 2
        message = checked.stderr.strip().removeprefix("gateway: ")
        assert message.startswith(f"{path}: platforms[0].encoding_aes_key")
        mark = len(server.output())
        assert _gateway("reload", env=env | {"GATEWAY_PID_FILE": str(pid_file)}).returncode == 0
        wait_for(lambda: "reload refused" in server.output()[mark:], what="the refusal")
        assert f"registry reload refused, the running registry stays: {message}" in _events(
            server.output()[mark:]
        )
        assert _push_ticket(url, "finance").text == "success"  # the running registry stayed
        assert httpx.get(f"{url}/v1/catalog", headers=bearer("k2"), timeout=10).status_code == 200
    finally:
        outcomes = load.stop()
    assert len(outcomes) > 20 and set(outcomes) == {200}, outcomes
    assert server.stop() == 0  # SIGTERM: a clean stop, which removes the pid file
