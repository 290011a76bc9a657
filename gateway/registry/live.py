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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from gateway.errors import RegistryError
from gateway.registry.model import Registry, load_registry

__all__ = ["LiveRegistry", "ReadsRegistry", "RegistryChanges", "reload_on_sighup"]

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


class LiveRegistry:
    """The registry in force; `swap` and `reload` replace it whole."""

    def __init__(self, registry: Registry) -> None:
        self._current = registry
        self._listeners: list[Callable[[RegistryChanges], None]] = []

    def on_swap(self, listener: Callable[[RegistryChanges], None]) -> None:
        """Call ``listener`` with what changed after every swap (the new registry already in force)."""
        self._listeners.append(listener)

    @property
    def current(self) -> Registry:
        """The registry in force now. Read it once per unit of work where two reads must agree."""
        return self._current

    def swap(self, registry: Registry) -> RegistryChanges:
        """Put ``registry`` (already validated) in force and say what changed."""
        changes = RegistryChanges.between(self._current, registry)
        self._current = registry
        for listener in self._listeners:
            listener(changes)
        return changes

    def reload(self, path: str | Path) -> bool:
        """Read and validate the registry at ``path`` and swap it in; a file that does not validate is
        refused whole, logged with the same message as at start-up, and the running registry stays.

        The file is read on the calling thread: a registry is a few kilobytes, read in milliseconds, and
        reading it here keeps reloads in the order their signals came.
        """
        try:
            registry = load_registry(path)
        except RegistryError as exc:
            log.error("registry reload refused, the running registry stays: %s", exc)
            return False
        changes = self.swap(registry)
        log.info("registry reloaded from %s: %s", path, changes.describe())
        return True


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
