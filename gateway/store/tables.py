"""The database tables. Secrets are stored sealed (``*_sealed`` columns, see gateway.crypto.SecretBox).

Times are Unix seconds: ``create_time`` as WeChat wrote it, ``*_at`` as this gateway's clock read it.
Every change here needs a migration in ``migrations/versions``; a test compares the two.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

__all__ = ["ComponentPush", "ComponentTicket", "metadata"]

metadata = SQLModel.metadata


class ComponentTicket(SQLModel, table=True):
    """The newest component_verify_ticket of each platform."""

    __tablename__ = "component_tickets"

    platform_id: str = Field(primary_key=True, max_length=64)
    ticket_sealed: str = Field(sa_column=Column(Text, nullable=False))
    create_time: int = Field(sa_column=Column(BigInteger, nullable=False))
    received_at: float = Field(sa_column=Column(Float, nullable=False))


class ComponentPush(SQLModel, table=True):
    """Every accepted push to an authorization event URL.

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
