"""Alembic, driven from code: each service keeps its revisions in `services/<svc>/migrations`.

A service's `migrations/env.py` is two lines: import its metadata and call `run_env`.
An advisory lock serialises concurrent `sinergi migrate` runs against one database.
"""
from __future__ import annotations

import asyncio
from importlib import resources
from typing import Any

from alembic import command, context
from alembic.config import Config
from sqlalchemy import Connection, MetaData, text
from sqlalchemy.ext.asyncio import create_async_engine

from services.kit.db import ensure_database

_LOCK_ID = 0x5E4E6E61  # arbitrary, constant per database


def alembic_config(service: str, url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files(f"services.{service}").joinpath("migrations")))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["url"] = url
    return cfg


async def migrate(service: str, url: str, revision: str = "head") -> None:
    await ensure_database(url)
    cfg = alembic_config(service, url)
    # alembic's env runs its own event loop: keep it off ours
    await asyncio.to_thread(command.upgrade, cfg, revision)


def run_env(metadata: MetaData) -> None:
    """Body of every service's migrations/env.py."""
    url = context.config.attributes.get("url") or context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("alembic config has no database url (use kit.migrations.alembic_config)")
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return

    def _run(connection: Connection) -> None:
        context.configure(connection=connection, target_metadata=metadata, compare_type=True)
        with context.begin_transaction():
            connection.execute(text("select pg_advisory_xact_lock(:k)"), {"k": _LOCK_ID})
            context.run_migrations()

    async def _online() -> None:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                await conn.run_sync(_run)
        finally:
            await engine.dispose()

    asyncio.run(_online())


def outbox_set_aside_upgrade(op: Any) -> None:  # alembic's `op` module
    """The outbox columns for rows set aside by the relay (kit.outbox): every service's
    revision `*_outbox_set_aside` calls this."""
    import sqlalchemy as sa

    op.add_column("outbox", sa.Column("failed_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("outbox", sa.Column("failure", sa.Text(), nullable=True))
    op.add_column("outbox", sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False))
    op.drop_index("outbox_unpublished", table_name="outbox", postgresql_where=sa.text("published_at is null"))
    op.create_index("outbox_pending", "outbox", ["seq"], unique=False,
                    postgresql_where=sa.text("published_at is null and failed_at is null"))
    op.create_index("outbox_set_aside", "outbox", ["seq"], unique=False, postgresql_where=sa.text("failed_at is not null"))


def outbox_set_aside_downgrade(op: Any) -> None:
    import sqlalchemy as sa

    op.drop_index("outbox_set_aside", table_name="outbox", postgresql_where=sa.text("failed_at is not null"))
    op.drop_index("outbox_pending", table_name="outbox",
                  postgresql_where=sa.text("published_at is null and failed_at is null"))
    op.create_index("outbox_unpublished", "outbox", ["seq"], unique=False,
                    postgresql_where=sa.text("published_at is null"))
    op.drop_column("outbox", "attempts")
    op.drop_column("outbox", "failure")
    op.drop_column("outbox", "failed_at")


def audit_log_upgrade(op: Any) -> None:
    """The kit's `audit_log` table (kit/audit.py) for a service that did not have it: every
    service's revision `*_audit_log` calls this (intake's came earlier, written out)."""
    import sqlalchemy as sa
    from sqlalchemy.dialects import postgresql

    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("actor_area", sa.Text(), server_default="", nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("target", sa.Text(), nullable=True),
        sa.Column("area", sa.Text(), nullable=True),
        sa.Column("detail", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"),
                  nullable=False),
        sa.Column("client", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"))
    op.create_index("audit_log_actor_at", "audit_log", ["actor", "at"], unique=False)
    op.create_index("audit_log_target", "audit_log", ["target"], unique=False)


def audit_log_downgrade(op: Any) -> None:
    op.drop_index("audit_log_target", table_name="audit_log")
    op.drop_index("audit_log_actor_at", table_name="audit_log")
    op.drop_table("audit_log")
