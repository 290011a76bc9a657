"""A PostgreSQL server of a test's own, which the test may stop and restart at will.

The machine's shared server (127.0.0.1:5432) serves every other test, so restarting it would break them;
this one runs the same Debian binaries on a free loopback port from a temporary data directory, as the
``postgres`` user (PostgreSQL refuses to run as root), with trust authentication.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.servers import free_port

__all__ = ["PrivatePostgres", "postgres_binaries", "private_postgres"]

_BIN_ROOT = Path("/usr/lib/postgresql")


def postgres_binaries() -> Path | None:
    """The newest installed server's bin directory, if there is one."""
    found = sorted(_BIN_ROOT.glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]), reverse=True)
    return found[0].parent if found else None


class PrivatePostgres:
    """One server: its URL for the gateway, and stop / start / restart."""

    def __init__(self, bindir: Path, datadir: Path, port: int) -> None:
        self._bindir = bindir
        self._datadir = datadir
        self.port = port
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"

    def _ctl(self, *args: str) -> None:
        command = [str(self._bindir / "pg_ctl"), "-D", str(self._datadir), "-w", "-t", "30", *args]
        subprocess.run(_as_postgres(command), check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self._datadir} -c fsync=off"
        self._ctl("-o", options, "-l", str(self._datadir / "server.log"), "start")

    def stop(self) -> None:
        """Stop fast: open connections are cut, as in a crash of the database host's service."""
        self._ctl("-m", "fast", "stop")


def _as_postgres(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A running private server, removed afterwards. Needs PostgreSQL's server binaries."""
    bindir = postgres_binaries()
    if bindir is None:
        raise RuntimeError("PostgreSQL server binaries are not installed (/usr/lib/postgresql/*/bin)")
    datadir = Path(tempfile.mkdtemp(prefix="gateway-pg-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(datadir, user.pw_uid, user.pw_gid)
    try:
        initdb = [str(bindir / "initdb"), "-D", str(datadir), "-U", "postgres", "-A", "trust"]
        subprocess.run(_as_postgres(initdb), check=True, capture_output=True, timeout=120)
        server = PrivatePostgres(bindir, datadir, free_port())
        server.start()
        try:
            yield server
        finally:
            with contextlib.suppress(subprocess.CalledProcessError):  # already stopped by the test
                server.stop()
    finally:
        shutil.rmtree(datadir, ignore_errors=True)
