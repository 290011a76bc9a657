"""A plain threaded HTTP/1.1 upstream for the proxy benchmark: ``http.server`` as most people write it.

    python -m tests.bench._upstream PORT BODY_FILE [MODE]

``ThreadingHTTPServer`` with ``protocol_version = "HTTP/1.1"`` (keep-alive, a thread per connection),
answering ``GET /cgi-bin/user/get`` with BODY_FILE's bytes and their ``Content-Length``, the way the
standard library's handler writes an answer: the status line and headers in one ``send``, the body in
another. Anything else is 404.

Two of the standard library's defaults are changed, unless MODE is ``stdlib``, because each makes the
upstream, not the proxy, the thing measured (docs/benchmarks.md has the figures):

- Nagle's algorithm is off (``disable_nagle_algorithm``): with it on, the body's ``send`` waits for the
  client to acknowledge the headers, and a client delays that ACK by 40 ms: every answer takes 44 ms;
- the listen backlog is 128, not 5 (``request_queue_size``): 32 connections opened at once overflow a
  backlog of 5, and the kernel drops their SYNs; the client sends them again after 1 s.

The control routes mirror the simulator's, so the benchmark drives both upstreams alike:

- ``POST /sim/faults`` ``{"delay_s": 0.02}``: answer ``user/get`` after that long (``time.sleep``);
- ``DELETE /sim/faults``: no delay;
- ``GET /sim/stats``: connections accepted and requests answered so far, as JSON.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

API_PATH = "/cgi-bin/user/get"
MODES = ("threaded", "stdlib")


class _Server(ThreadingHTTPServer):
    request_queue_size = 128


class _State:
    def __init__(self, body: bytes) -> None:
        self.body = body
        self.delay_s = 0.0
        self.connections = 0
        self.requests = 0
        self.lock = threading.Lock()


def handler(state: _State, mode: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = mode != "stdlib"

        def setup(self) -> None:
            super().setup()
            with state.lock:
                state.connections += 1

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            path = self.path.partition("?")[0]
            if path == API_PATH:
                with state.lock:
                    state.requests += 1
                if state.delay_s:
                    time.sleep(state.delay_s)
                self._answer(200, state.body)
            elif path == "/sim/stats":
                stats = {"connections": state.connections, "requests": state.requests}
                self._answer(200, json.dumps(stats).encode())
            else:
                self._answer(404, b'{"errcode":404}')

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            sent: dict[str, Any] = json.loads(self.rfile.read(length) or b"{}")
            if self.path == "/sim/faults":
                state.delay_s = float(sent.get("delay_s", 0.0))
                self._answer(200, b"{}")
            else:
                self._answer(404, b'{"errcode":404}')

        def do_DELETE(self) -> None:
            if self.path == "/sim/faults":
                state.delay_s = 0.0
                self._answer(200, b"{}")
            else:
                self._answer(404, b'{"errcode":404}')

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: a line per request would cost more than the answer."""

    return Handler


def main() -> None:
    port, body_file = int(sys.argv[1]), Path(sys.argv[2])
    mode = sys.argv[3] if len(sys.argv) > 3 else "threaded"
    if mode not in MODES:
        raise SystemExit(f"MODE is one of {', '.join(MODES)}")
    server_class = ThreadingHTTPServer if mode == "stdlib" else _Server
    server = server_class(("127.0.0.1", port), handler(_State(body_file.read_bytes()), mode))
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
