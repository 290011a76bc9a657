"""A bare Litestar app under ``gateway.http.serving.serve``: what a process of this stack costs by itself.

    python -m tests.bench._bare --port PORT

One route on the token path answering a constant struct of the token's shape, and ``/healthz``; no
dependencies, guards, database or background work. It imports only Litestar and ``gateway.http.serving``
(not the rest of the gateway, nor the benchmark harness), so its memory is the floor the gateway's is
measured against.
"""

from __future__ import annotations

import argparse
import logging
import sys

import msgspec
from litestar import Litestar, Response, get

from gateway.http.serving import Listener, run_event_loop, serve


class _Token(msgspec.Struct, frozen=True):
    authorizer_appid: str
    platform: str
    access_token: str
    expires_at: int


@get("/v1/authorizers/{appid:str}/access-token")
async def access_token(appid: str) -> Response[_Token]:
    return Response(_Token(appid, "retail", "x" * 136, 1_700_000_000), headers={"Cache-Control": "no-store"})


@get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "alive"}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench._bare", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # As `gateway serve` does: logging configured by the process, the app under gateway.http.serving.serve.
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    app = Litestar(route_handlers=[access_token, healthz], logging_config=None)
    run_event_loop(serve([Listener(app, "127.0.0.1", args.port)]))


if __name__ == "__main__":
    main()
