"""Routing's grants cache: a lapsed entry is read from the store once, however many requests need it."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.support.world import OA, World


async def test_a_lapsed_grants_entry_is_read_once_for_every_request_in_flight(stocked: World) -> None:
    authorizations, store = stocked.services.authorizations, stocked.services.store.authorizations
    reads = 0
    read = store.for_authorizer

    async def counted(appid: str) -> Any:
        nonlocal reads
        reads += 1
        return await read(appid)

    store.for_authorizer = counted  # type: ignore[method-assign]  # a spy on the real store
    authorizations.forget_grants(OA)
    answers = await asyncio.gather(*(authorizations.grants(OA) for _ in range(50)))
    assert reads == 1
    assert all(answer == answers[0] for answer in answers)
    assert {grant.platform_id for grant in answers[0]} == {"retail", "finance"}
