"""The catalog's per-authorizer entries (``catalog_entries``) always say what the authorizations and
profiles say: after every kind of write through the store, and after migration 0008 on existing data.
On SQLite and on PostgreSQL; the expected entries are derived here, in Python, from the raw tables."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, text

from gateway.crypto import SecretBox
from gateway.store import Store, create_engine, upgrade
from gateway.store.authorizations import Profile
from gateway.store.tables import Authorization, AuthorizerProfileRow
from tests.conftest import CLIENT_KEYS
from tests.support.world import World

Entries = dict[str, tuple[str, frozenset[str], str | None, str, str]]


async def expected_entries(store: Store) -> Entries:
    """What the entries must be, derived from the authorizations and profiles."""
    async with store.engine.connect() as conn:
        grants = (
            await conn.execute(text("SELECT authorizer_appid, platform_id, status FROM authorizations"))
        ).all()
        profiles = {
            row.authorizer_appid: row
            for row in (
                await conn.execute(
                    text(
                        "SELECT authorizer_appid, kind, binding, nick_name, principal_name"
                        " FROM authorizer_profiles"
                    )
                )
            ).all()
        }
    by_appid: dict[str, list[Any]] = {}
    for grant in grants:
        by_appid.setdefault(grant.authorizer_appid, []).append(grant)
    entries: Entries = {}
    for appid, rows in by_appid.items():
        statuses = {row.status for row in rows}
        status = next((s for s in ("active", "reauthorization_required") if s in statuses), "revoked")
        profile = profiles.get(appid)
        entries[appid] = (
            status,
            frozenset(row.platform_id for row in rows),
            profile.kind if profile else None,
            profile.binding if profile else "unknown",
            "\n".join(
                [appid, profile.nick_name if profile else "", profile.principal_name if profile else ""]
            ).lower(),
        )
    return entries


async def stored_entries(store: Store) -> Entries:
    async with store.engine.connect() as conn:
        rows = (await conn.execute(text("SELECT * FROM catalog_entries"))).all()
    return {
        row.authorizer_appid: (
            row.status,
            frozenset(row.platforms.strip("|").split("|")),
            row.kind,
            row.binding,
            row.search,
        )
        for row in rows
    }


async def test_every_store_write_keeps_the_entries_current(store: Store) -> None:
    authorizations = store.authorizations
    oa, mini = "wxoa00000000001", "wxmini000000001"

    async def check() -> None:
        assert await stored_entries(store) == await expected_entries(store)

    await authorizations.authorize("retail", oa, "refresh-1", frozenset({1, 24}))
    await check()
    await authorizations.authorize("finance", oa, "refresh-2", frozenset({15}))
    await authorizations.authorize("retail", mini, "refresh-3", frozenset({17}))
    await check()
    assert (await stored_entries(store))[oa][1] == {"retail", "finance"}

    await authorizations.save_profile(Profile(oa, "official_account", "Coffee HANGZHOU", "ACME Ltd."))
    await check()
    assert (await stored_entries(store))[oa][2:] == (
        "official_account",
        "unknown",
        f"{oa}\ncoffee hangzhou\nacme ltd.",
    )
    await authorizations.save_binding(oa, "bound_elsewhere", "wxopenother0001")
    await check()

    await authorizations.set_status("retail", oa, "revoked")
    await check()
    assert (await stored_entries(store))[oa][0] == "active"  # finance still holds it
    await authorizations.set_status("finance", oa, "reauthorization_required")
    await check()
    assert (await stored_entries(store))[oa][0] == "reauthorization_required"
    await authorizations.set_refresh_token("finance", oa, "refresh-4")
    await check()
    assert (await stored_entries(store))[oa][0] == "active"
    await authorizations.set_status("finance", oa, "revoked")
    await authorizations.set_status("retail", mini, "revoked")
    await check()
    assert {entry[0] for entry in (await stored_entries(store)).values()} == {"revoked"}


async def test_migration_derives_entries_of_existing_data(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade(engine, "0007")
        grants = [
            ("retail", "wxa1", "revoked"),
            ("finance", "wxa1", "reauthorization_required"),
            ("retail", "wxa2", "active"),
            ("finance", "wxa2", "revoked"),
            ("finance", "wxa3", "revoked"),
        ]
        async with engine.begin() as conn:
            await conn.execute(
                insert(Authorization.__table__),  # type: ignore[attr-defined]
                [
                    {
                        "platform_id": p,
                        "authorizer_appid": a,
                        "status": s,
                        "authorized_at": 1.0,
                        "updated_at": 1.0,
                    }
                    for p, a, s in grants
                ],
            )
            for appid, name, principal, binding in (
                ("wxa2", "Shop", "Shop CO", "bound"),
                ("wxorphan", "Orphan", "Nobody", "unknown"),
            ):
                await conn.execute(
                    insert(AuthorizerProfileRow.__table__).values(  # type: ignore[attr-defined]
                        authorizer_appid=appid,
                        kind="mini_program",
                        nick_name=name,
                        principal_name=principal,
                        synced_at=1.0,
                        binding=binding,
                    )
                )
        await upgrade(engine)
        store = Store(engine, SecretBox(b"k" * 32))
        entries = await stored_entries(store)
        assert entries == await expected_entries(store)
        assert set(entries) == {"wxa1", "wxa2", "wxa3"}  # a profile without an authorization is no row
        assert entries["wxa1"][0] == "reauthorization_required"
        assert entries["wxa2"][:4] == ("active", frozenset({"retail", "finance"}), "mini_program", "bound")
    finally:
        await engine.dispose()


async def test_later_pages_carry_the_first_pages_total(stocked: World) -> None:
    headers = {"Authorization": f"Bearer {CLIENT_KEYS['audit']}"}
    first = (await stocked.gateway.get("/v1/catalog", params={"limit": 1}, headers=headers)).json()
    assert first["total"] == 3
    await stocked.services.store.authorizations.authorize("retail", "wxlate0000000001", "r", frozenset({1}))
    second = (
        await stocked.gateway.get(
            "/v1/catalog", params={"limit": 1, "cursor": first["next_cursor"]}, headers=headers
        )
    ).json()
    assert second["total"] == 3  # as counted when the walk began: the pages of one walk agree
    fresh = (await stocked.gateway.get("/v1/catalog", params={"limit": 1}, headers=headers)).json()
    assert fresh["total"] == 4
