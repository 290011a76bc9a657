"""A small HTTP/1.1 load generator, for machines without ``wrk``: keep-alive requests from asyncio.

    python -m tests.bench._load URL -c 50 -d 5 [-H 'Name: value' ...] [--posts FILE]

Every request is a GET of URL, or with ``--posts`` the next POST of FILE (``TARGET<TAB>BODY`` lines, see
``_harness.write_posts``) on URL's host, starting over at the end of the file.

Prints one JSON line with the figures ``wrk``'s report script gives (see ``_harness``). It is slower
than wrk, so on a small machine it may become the bottleneck: compare ratios, not absolute figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit


class _Tally:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.bad_status = 0
        self.socket_errors = 0


class _Requests:
    """The same request each time, or the next of a list, round and round."""

    def __init__(self, requests: Sequence[bytes]) -> None:
        self._requests = requests
        self._next = 0

    def next(self) -> bytes:
        request = self._requests[self._next]
        self._next = (self._next + 1) % len(self._requests)
        return request


async def _connection(host: str, port: int, requests: _Requests, deadline: float, tally: _Tally) -> None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        tally.socket_errors += 1
        return
    try:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            writer.write(requests.next())
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            length = next(
                int(line.split(":", 1)[1]) for line in lines[1:] if line.lower().startswith("content-length:")
            )
            await reader.readexactly(length)
            tally.latencies.append(time.perf_counter() - started)
            if status >= 400:
                tally.bad_status += 1
    except (OSError, asyncio.IncompleteReadError, ValueError, StopIteration):
        tally.socket_errors += 1
    finally:
        writer.close()


def _posts(file: Path, netloc: str, headers: list[str]) -> list[bytes]:
    requests = []
    for line in file.read_text().splitlines():
        target, _, body = line.partition("\t")
        content = body.encode()
        head = [f"POST {target} HTTP/1.1", f"Host: {netloc}", "Content-Type: text/xml", *headers]
        head += [f"Content-Length: {len(content)}", "", ""]
        requests.append("\r\n".join(head).encode("latin-1") + content)
    return requests


async def _run(
    url: str, connections: int, duration_s: float, headers: list[str], posts: Path | None = None
) -> dict[str, float]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    if posts is not None:
        requests = _Requests(_posts(posts, parts.netloc, headers))
    else:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}", *headers, "", ""]
        requests = _Requests(["\r\n".join(lines).encode("latin-1")])
    tally = _Tally()
    started = time.monotonic()
    deadline = started + duration_s
    await asyncio.gather(*(_connection(host, port, requests, deadline, tally) for _ in range(connections)))
    elapsed = time.monotonic() - started
    cuts = statistics.quantiles(tally.latencies, n=100) if len(tally.latencies) > 1 else [0.0] * 99
    return {
        "requests": len(tally.latencies),
        "duration_s": elapsed,
        "bad_status": tally.bad_status,
        "socket_errors": tally.socket_errors,
        "p50_ms": cuts[49] * 1e3,
        "p99_ms": cuts[98] * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench._load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("url")
    parser.add_argument("-c", "--connections", type=int, default=50)
    parser.add_argument("-d", "--duration", type=float, default=5.0, help="seconds")
    parser.add_argument("-H", "--header", action="append", default=[], help="'Name: value'")
    parser.add_argument("--posts", type=Path, help="POST these requests in turn (TARGET<TAB>BODY lines)")
    args = parser.parse_args()
    report = asyncio.run(_run(args.url, args.connections, args.duration, args.header, args.posts))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
