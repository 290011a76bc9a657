"""The registry in force, swapped whole while the gateway serves (``SIGHUP``, ``gateway reload``).

Every service of an app holds the app's one `LiveRegistry` and reads `LiveRegistry.current` when it
needs the registry. A reload reads and validates the file completely first (`load_registry`, the
checks of start-up) and then swaps it in with one attribute assignment: on the event loop that is
atomic, so a request sees the old registry or the new one, never half of each, and no connection is
refused or request failed meanwhile. A file that does not validate is refused with the same message as
at start-up and the running registry stays.

What a swap changes, from the next read on: clients and their keys, scopes, authorizers and rate
limits; platforms (a new one takes pushes and serves tokens at once, a removed one answers
``platform_unknown`` and its stored credentials are no longer renewed); pins; subscriptions;
``wechat.api_base``; ``group.open_appid``, ``group.principal_name`` and ``group.binding`` (the targets
of SPEC §11, from the next binding decision). Work already under way (an upstream call, a delivery) ends
with the registry it started with.

`reload_on_sighup` wires the signal: the handler is installed for as long as the app runs and, where
one is asked for, a pid file names the process for ``gateway reload`` while a SIGHUP reloads it.
`watch_registry_file` reloads when the file's bytes change (``GATEWAY_REGISTRY_WATCH_S``): each replica
watches its own copy, so an edit that reaches every copy reaches every replica. Whatever asked (signal,
watch, the admin endpoint), each reload's `ReloadOutcome` goes to the `on_reload` listeners: the container
counts it and writes it to the audit trail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

from gateway.errors import RegistryError
from gateway.registry.model import Registry, file_digest, load_registry_digest

__all__ = [
    "LiveRegistry",
    "ReadsRegistry",
    "RegistryChanges",
    "ReloadOutcome",
    "ReloadSource",
    "reload_on_sighup",
    "watch_registry_file",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegistryChanges:
    """What a swap changed, by id (never a secret: a changed key or secret shows as a changed id)."""

    platforms_added: tuple[str, ...]
    platforms_removed: tuple[str, ...]
    platforms_changed: tuple[str, ...]
    clients_added: tuple[str, ...]
    clients_removed: tuple[str, ...]
    clients_changed: tuple[str, ...]
    subscriptions: int
    api_base_changed: bool
    binding_changed: bool = False  # group.open_appid, principal_name or binding: targets may move

    @classmethod
    def between(cls, old: Registry, new: Registry) -> RegistryChanges:
        """The differences from ``old`` to ``new``."""
        platforms = _Diff.of({p.id: p for p in old.platforms}, {p.id: p for p in new.platforms})
        clients = _Diff.of({c.id: c for c in old.clients}, {c.id: c for c in new.clients})
        return cls(
            platforms_added=platforms.added,
            platforms_removed=platforms.removed,
            platforms_changed=platforms.changed,
            clients_added=clients.added,
            clients_removed=clients.removed,
            clients_changed=clients.changed,
            subscriptions=len(new.subscriptions),
            api_base_changed=old.wechat.api_base != new.wechat.api_base,
            binding_changed=(old.group.open_appid, old.group.principal_name, old.group.binding)
            != (new.group.open_appid, new.group.principal_name, new.group.binding),
        )

    def describe(self) -> str:
        """One line for the log, e.g. ``platforms +ecom -finance; clients ~crm; 2 subscription(s) in force``
        (``+`` added, ``-`` removed, ``~`` changed)."""
        parts = [
            f"platforms {_listed(self.platforms_added, self.platforms_removed, self.platforms_changed)}",
            f"clients {_listed(self.clients_added, self.clients_removed, self.clients_changed)}",
            f"{self.subscriptions} subscription(s) in force",
        ]
        if self.api_base_changed:
            parts.append("wechat.api_base changed")
        if self.binding_changed:
            parts.append("group binding changed (the next open-binding check or sync applies it)")
        return "; ".join(parts)


ReloadSource = Literal["signal", "watch", "endpoint"]


@dataclass(frozen=True)
class ReloadOutcome:
    """One reload, swapped in (``ok``) or refused: for the metrics and the audit trail.

    ``sha256`` is the file's (None when it could not be read); ``source`` what asked (SIGHUP, the file
    watch, the admin endpoint); ``actor`` who (a client id, or ``operator`` for a signal, ``gateway`` for
    the watch); ``detail`` the changes, or why the file was refused (never a secret: `RegistryError`
    names fields, not values).
    """

    ok: bool
    sha256: str | None
    source: ReloadSource
    actor: str
    detail: str
    at: float


class LiveRegistry:
    """The registry in force; `swap` and `reload` replace it whole."""

    def __init__(
        self, registry: Registry, *, sha256: str | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self._current = registry
        self._clock = clock
        self.sha256 = sha256
        """The sha-256 of the file the registry in force was read from (None: not read from a file)."""
        self.loaded_at = clock()
        """When the registry in force was put in force (start-up, or the last reload that swapped)."""
        self._listeners: list[Callable[[RegistryChanges], None]] = []
        self._reload_listeners: list[Callable[[ReloadOutcome], None]] = []

    def on_swap(self, listener: Callable[[RegistryChanges], None]) -> None:
        """Call ``listener`` with what changed after every swap (the new registry already in force)."""
        self._listeners.append(listener)

    def on_reload(self, listener: Callable[[ReloadOutcome], None]) -> None:
        """Call ``listener`` after every `reload`, swapped in or refused."""
        self._reload_listeners.append(listener)

    @property
    def current(self) -> Registry:
        """The registry in force now. Read it once per unit of work where two reads must agree."""
        return self._current

    def swap(self, registry: Registry, *, sha256: str | None = None) -> RegistryChanges:
        """Put ``registry`` (already validated) in force and say what changed."""
        changes = RegistryChanges.between(self._current, registry)
        self._current = registry
        self.sha256 = sha256
        self.loaded_at = self._clock()
        for listener in self._listeners:
            listener(changes)
        return changes

    def reload(self, path: str | Path, *, source: ReloadSource = "signal", actor: str = "operator") -> bool:
        """Read and validate the registry at ``path`` and swap it in; a file that does not validate is
        refused whole, logged with the same message as at start-up, and the running registry stays.
        Either way the `on_reload` listeners hear of it.

        The file is read on the calling thread: a registry is a few kilobytes, read in milliseconds, and
        reading it here keeps reloads in the order their signals came.
        """
        return self.reload_outcome(path, source=source, actor=actor).ok

    def reload_outcome(
        self, path: str | Path, *, source: ReloadSource = "signal", actor: str = "operator"
    ) -> ReloadOutcome:
        """`reload`, saying what happened."""
        try:
            registry, sha256 = load_registry_digest(path)
        except RegistryError as exc:
            log.error("registry reload refused, the running registry stays: %s", exc)
            outcome = ReloadOutcome(False, exc.digest, source, actor, str(exc), self._clock())
        else:
            changes = self.swap(registry, sha256=sha256)
            log.info("registry reloaded from %s: %s", path, changes.describe())
            outcome = ReloadOutcome(True, sha256, source, actor, changes.describe(), self.loaded_at)
        for listener in self._reload_listeners:
            listener(outcome)
        return outcome


class ReadsRegistry:
    """For a service built on a `LiveRegistry`: ``self._registry`` is the registry in force when read.

    Never keep what it returns beyond one unit of work: the next reload would leave it behind.
    """

    _live: LiveRegistry

    @property
    def _registry(self) -> Registry:
        return self._live.current


@contextlib.contextmanager
def reload_on_sighup(live: LiveRegistry, path: str | Path, pid_file: str | None = None) -> Iterator[None]:
    """While inside, reload ``live`` from ``path`` on SIGHUP, and keep ``pid_file`` (if given) naming
    this process.

    Signals reach only the main thread's loop of a POSIX process; elsewhere (the threads tests serve
    apps in) nothing is installed and no pid file written, since nothing could answer the signal.
    The pid file is written only once the handler is in place: SIGHUP's default action ends the process,
    so ``gateway reload`` must not find the pid of an instance still starting.
    """
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, live.reload, path)
    except (ValueError, RuntimeError, NotImplementedError, AttributeError):
        yield
        return
    try:
        if pid_file is not None:
            _write_pid_file(Path(pid_file))
        yield
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        if pid_file is not None:
            _remove_pid_file(Path(pid_file))


@contextlib.asynccontextmanager
async def watch_registry_file(live: LiveRegistry, path: str | Path, interval_s: float) -> AsyncIterator[None]:
    """While inside, re-read ``path`` every ``interval_s`` seconds and reload ``live`` when the file's
    sha-256 differs from the registry in force (0: no watch).

    This is how an edit reaches every replica: each reads its own copy (a Kubernetes ConfigMap is
    updated in every pod by the kubelet) and each notices it. The bytes are compared, not the mtime,
    since a ConfigMap swaps a symlink and a copy may keep its time; a refused file is not tried again
    until it changes once more, so one bad edit is one refusal in the log and the audit trail.
    """
    if interval_s <= 0:
        yield
        return
    task = asyncio.create_task(_watch(live, Path(path), interval_s), name="registry-watch")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _watch(live: LiveRegistry, path: Path, interval_s: float) -> None:
    tried = live.sha256 if live.sha256 is not None else _digest_of(path)
    while True:
        await asyncio.sleep(interval_s)
        seen = _digest_of(path)
        if seen is None or seen in (tried, live.sha256):
            continue  # a file missing for a moment (being replaced) is not a registry to refuse
        try:
            tried = live.reload_outcome(path, source="watch", actor="gateway").sha256 or seen
        except Exception:  # a listener's fault must not end the watch: the next edit is still watched
            log.exception("registry watch: a reload listener failed")
            tried = seen


def _digest_of(path: Path) -> str | None:
    try:
        return file_digest(path.read_bytes())
    except OSError:
        return None


def _write_pid_file(path: Path) -> None:
    # Written aside and renamed, so `gateway reload` never reads half a number.
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(f"{os.getpid()}\n", encoding="ascii")
    partial.replace(path)


def _remove_pid_file(path: Path) -> None:
    # Only our own: a replica started since with the same file must keep its entry.
    with contextlib.suppress(OSError, ValueError):
        if int(path.read_text(encoding="ascii")) == os.getpid():
            path.unlink()


class _Diff(NamedTuple):
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]

    @classmethod
    def of(cls, old: Mapping[str, object], new: Mapping[str, object]) -> _Diff:
        return cls(
            tuple(i for i in new if i not in old),
            tuple(i for i in old if i not in new),
            tuple(i for i in new if i in old and new[i] != old[i]),
        )


def _listed(added: Sequence[str], removed: Sequence[str], changed: Sequence[str]) -> str:
    listed = [f"+{i}" for i in added] + [f"-{i}" for i in removed] + [f"~{i}" for i in changed]
    return " ".join(listed) or "unchanged"
