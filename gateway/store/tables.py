"""The database tables. Secrets are stored sealed (``*_sealed`` columns, see gateway.crypto.SecretBox).

Times are Unix seconds: ``create_time`` as WeChat wrote it, ``*_at`` as this gateway's clock read it.
Every change here needs a migration in ``migrations/versions``; a test compares the two.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlmodel import Field, SQLModel

__all__ = [
    "AuditEntry",
    "Authorization",
    "AuthorizationCode",
    "AuthorizerProfileRow",
    "CatalogEntry",
    "ComponentPush",
    "ComponentTicket",
    "Credential",
    "Delivery",
    "GatewayToken",
    "InboundMessage",
    "OpenAccountRow",
    "WebSession",
    "metadata",
]

metadata = SQLModel.metadata


class ComponentTicket(SQLModel, table=True):
    """The newest component_verify_ticket of each platform, and the push that carried it.

    A verify ticket's push leaves no row in ``component_pushes``: this row is its replay guard. A retry
    of the push it came from (same ``msg_signature`` and ``nonce``) or an older push changes nothing.
    """

    __tablename__ = "component_tickets"

    platform_id: str = Field(primary_key=True, max_length=64)
    ticket_sealed: str = Field(sa_column=Column(Text, nullable=False))
    create_time: int = Field(sa_column=Column(BigInteger, nullable=False))
    received_at: float = Field(sa_column=Column(Float, nullable=False))
    # None on rows stored before pushes were identified here (migration 0009).
    msg_signature: str | None = Field(default=None, max_length=64)
    nonce: str | None = Field(default=None, max_length=64)


class ComponentPush(SQLModel, table=True):
    """Every accepted push to an authorization event URL but verify tickets (whose pushes were stored
    here before migration 0009, until retention deletes them).

    The unique (platform, signature, nonce) triple recognises WeChat's retries. Authorization events keep
    their sealed payload until the onboarding service has acted on them (``processed_at``).
    """

    __tablename__ = "component_pushes"
    __table_args__ = (
        UniqueConstraint("platform_id", "msg_signature", "nonce", name="uq_component_pushes_seen"),
        Index("ix_component_pushes_pending", "processed_at", "received_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    platform_id: str = Field(max_length=64)
    msg_signature: str = Field(max_length=64)
    nonce: str = Field(max_length=64)
    info_type: str = Field(max_length=64)
    authorizer_appid: str | None = Field(default=None, max_length=64)
    create_time: int = Field(sa_column=Column(BigInteger, nullable=False))
    received_at: float = Field(sa_column=Column(Float, nullable=False))
    payload_sealed: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    processed_at: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    # A replica acting on the event holds it until then; a crashed one lets it go when this passes.
    claimed_until: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    outcome: str | None = Field(default=None, max_length=200)


class Credential(SQLModel, table=True):
    """A token WeChat issued (component token, authorizer token, JS-SDK ticket), keyed by what it is for.

    The lease columns make its renewal exactly-once across replicas: whoever holds an unexpired lease
    fetches; everyone else waits for the new value. ``blocked_until`` is the 45009 breaker. ``used_at``
    is when a caller last used it (coarse, flushed in batches): the renewer keeps warm only recent ones.
    """

    __tablename__ = "credentials"
    __table_args__ = (Index("ix_credentials_renew_after", "renew_after"),)

    key: str = Field(primary_key=True, max_length=160)
    value_sealed: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    expires_at: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    renew_after: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    fetched_at: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_until: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    blocked_until: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    problem: str | None = Field(default=None, max_length=200)
    used_at: float | None = Field(default=None, sa_column=Column(Float, nullable=True))


class Authorization(SQLModel, table=True):
    """One authorizer's authorization of one platform (component), with its refresh token."""

    __tablename__ = "authorizations"
    __table_args__ = (Index("ix_authorizations_authorizer", "authorizer_appid"),)

    platform_id: str = Field(primary_key=True, max_length=64)
    authorizer_appid: str = Field(primary_key=True, max_length=64)
    refresh_token_sealed: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    func_ids: str = Field(default="", sa_column=Column(String(400), nullable=False, server_default=""))
    status: str = Field(max_length=32)
    authorized_at: float = Field(sa_column=Column(Float, nullable=False))
    updated_at: float = Field(sa_column=Column(Float, nullable=False))
    revoked_at: float | None = Field(default=None, sa_column=Column(Float, nullable=True))


class AuthorizationCode(SQLModel, table=True):
    """Authorization codes (sha-256 only), claimed before their one api_query_auth: the redirect and the
    event carry the same code, and only the claim's holder sends it (``claim_until`` lapses if it dies).

    ``state``: ``claimed`` (being exchanged), ``exchanged`` (``authorizer_appid`` known), ``refused``
    (WeChat said ``errcode``: 61009 or 61010) or ``unknown`` (sent, no answer: never sent again).
    ``arrived_at`` dates the row for the retention task (`gateway.store.retention`).
    """

    __tablename__ = "authorization_codes"

    code_sha256: str = Field(primary_key=True, max_length=64)
    platform_id: str = Field(max_length=64)
    authorizer_appid: str | None = Field(default=None, max_length=64)
    exchanged_at: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    state: str = Field(
        default="exchanged", sa_column=Column(String(16), nullable=False, server_default="exchanged")
    )
    claim_owner: str | None = Field(default=None, max_length=64)
    claim_until: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    errcode: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    problem: str | None = Field(default=None, max_length=200)
    arrived_at: float = Field(sa_column=Column(Float, nullable=False))


class AuditEntry(SQLModel, table=True):
    """Who did what to which authorizer: tokens handed out, links made, bindings changed. No secrets."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_at", "at"), Index("ix_audit_log_authorizer", "authorizer_appid"))

    id: int | None = Field(default=None, primary_key=True)
    at: float = Field(sa_column=Column(Float, nullable=False))
    actor: str = Field(max_length=64)
    action: str = Field(max_length=64)
    platform_id: str | None = Field(default=None, max_length=64)
    authorizer_appid: str | None = Field(default=None, max_length=64)
    detail: str | None = Field(default=None, max_length=400)


class GatewayToken(SQLModel, table=True):
    """A token the gateway issued through ``/wx/cgi-bin/token``: only its sha-256 is kept."""

    __tablename__ = "gateway_tokens"
    __table_args__ = (Index("ix_gateway_tokens_expires_at", "expires_at"),)

    token_sha256: str = Field(primary_key=True, max_length=64)
    client_id: str = Field(max_length=64)
    authorizer_appid: str = Field(max_length=64)
    issued_at: float = Field(sa_column=Column(Float, nullable=False))
    expires_at: float = Field(sa_column=Column(Float, nullable=False))
    revoked_at: float | None = Field(default=None, sa_column=Column(Float, nullable=True))


class AuthorizerProfileRow(SQLModel, table=True):
    """What WeChat last said of an account (``api_get_authorizer_info``), for pages and the catalog."""

    __tablename__ = "authorizer_profiles"
    __table_args__ = (
        Index("ix_authorizer_profiles_binding", "binding"),
        Index("ix_authorizer_profiles_kind", "kind"),
    )

    authorizer_appid: str = Field(primary_key=True, max_length=64)
    kind: str = Field(max_length=32)
    nick_name: str = Field(default="", max_length=200)
    principal_name: str = Field(default="", max_length=200)
    user_name: str = Field(default="", max_length=64)
    verify_type: int = Field(default=-1)
    service_type: int = Field(default=0)
    account_status: int = Field(default=1)
    synced_at: float = Field(sa_column=Column(Float, nullable=False))
    # Where the account is bound: "bound" (the group's open account), "bound_elsewhere", "unbound" or
    # "unknown" (no component may ask), with the open_appid and when it was last checked.
    binding: str = Field(
        default="unknown", sa_column=Column(String(32), nullable=False, server_default="unknown")
    )
    open_appid: str | None = Field(default=None, max_length=64)
    binding_checked_at: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    # The open account SPEC §11 sends it to, when known (the console list names it).
    binding_target: str | None = Field(default=None, max_length=64)


class OpenAccountRow(SQLModel, table=True):
    """An open account the gateway made with open/create: unverified until WeChat verification (认证), it
    takes at most 5 accounts through the API, which the gateway counts before calling open/bind."""

    __tablename__ = "open_accounts"

    open_appid: str = Field(primary_key=True, max_length=64)
    principal_name: str = Field(max_length=200)
    created_from: str = Field(max_length=64)  # the authorizer whose open/create made it
    created_at: float = Field(sa_column=Column(Float, nullable=False))
    verified: bool = Field(default=False, sa_column=Column(Boolean, nullable=False, server_default=false()))


class CatalogEntry(SQLModel, table=True):
    """One catalog row's filterable summary, derived from the authorizer's authorizations and profile and
    rewritten with them in the same transaction (gateway.store.catalog.refresh_entries): filtered pages
    read one indexed table in appid order instead of aggregating every authorization."""

    __tablename__ = "catalog_entries"
    __table_args__ = (
        Index("ix_catalog_entries_status", "status", "authorizer_appid"),
        Index("ix_catalog_entries_kind", "kind", "authorizer_appid"),
        Index("ix_catalog_entries_binding", "binding", "authorizer_appid"),
    )

    authorizer_appid: str = Field(primary_key=True, max_length=64)
    status: str = Field(max_length=32)  # active if any authorization is, else reauthorization_required…
    platforms: str = Field(sa_column=Column(Text, nullable=False))  # "|a|b|": every platform, any status
    kind: str | None = Field(default=None, max_length=32)
    binding: str = Field(max_length=32)
    search: str = Field(sa_column=Column(Text, nullable=False))  # lower(appid, name, principal) for q


class WebSession(SQLModel, table=True):
    """A session of the auditors' pages (Litestar's server-side session data): only the sha-256 of the
    cookie's session id is kept."""

    __tablename__ = "web_sessions"
    __table_args__ = (Index("ix_web_sessions_expires_at", "expires_at"),)

    token_sha256: str = Field(primary_key=True, max_length=64)
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    expires_at: float = Field(sa_column=Column(Float, nullable=False))


class InboundMessage(SQLModel, table=True):
    """A user message or event received on a message URL, kept for forwarding (SPEC §10).

    The unique (authorizer, dedup key) pair recognises WeChat's retries of one message. ``body_sealed``
    holds the JSON every subscriber receives, sealed because it carries what users wrote.
    ``disposition`` says what became of it: ``forwarded``, ``unsubscribed`` (no subscription matched)
    or ``unknown_authorizer`` (recorded, not delivered).
    """

    __tablename__ = "inbound_messages"
    __table_args__ = (
        UniqueConstraint("authorizer_appid", "dedup_key", name="uq_inbound_messages_seen"),
        Index("ix_inbound_messages_received_at", "received_at"),
    )

    id: str = Field(primary_key=True, max_length=32)
    platform_id: str = Field(max_length=64)
    authorizer_appid: str = Field(max_length=64)
    dedup_key: str = Field(max_length=64)
    msg_type: str = Field(max_length=64)
    event: str | None = Field(default=None, max_length=64)
    received_at: float = Field(sa_column=Column(Float, nullable=False))
    disposition: str = Field(max_length=32)
    body_sealed: str = Field(sa_column=Column(Text, nullable=False))


class Delivery(SQLModel, table=True):
    """One inbound message to one subscription (client and URL): at least once, by any replica.

    ``status`` is ``pending``, ``delivered`` or ``failed`` (dead-lettered). A replica attempting it holds
    a lease (``lease_owner``, ``lease_until``); a crashed one lets it go when the lease passes.
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        Index("ix_deliveries_due", "status", "next_attempt_at"),
        Index("ix_deliveries_message", "message_id"),
    )

    id: str = Field(primary_key=True, max_length=32)
    message_id: str = Field(max_length=32)
    client_id: str = Field(max_length=64)
    url: str = Field(sa_column=Column(String(2000), nullable=False))
    reply: bool = Field(default=False)
    status: str = Field(max_length=16)
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    created_at: float = Field(sa_column=Column(Float, nullable=False))
    next_attempt_at: float = Field(sa_column=Column(Float, nullable=False))
    give_up_at: float = Field(sa_column=Column(Float, nullable=False))
    delivered_at: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_until: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    last_status: int | None = Field(default=None)
    last_error: str | None = Field(default=None, max_length=200)
