"""Database engine and session per service, and database creation."""
from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


def make_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    # asyncpg prepares every statement, and after five runs PostgreSQL may keep a generic plan
    # made while a table was nearly empty (a sequential scan) for as long as no ANALYZE comes:
    # bulk-filled tables then get slower with every batch (registry ingest: 0.37 s -> 1.3 s per
    # 1,000 reports within 60,000). Custom plans cost a fraction of a millisecond to make.
    # hide_parameters: a failed statement's error (logged by consumers) must not carry its bound
    # values - NIKs and names - and the log masking cannot catch a NIK cut short by truncation
    return create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True,
                               hide_parameters=True,
                               connect_args={"server_settings": {"plan_cache_mode": "force_custom_plan"}})


def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def _server_dsn(url: str, database: str = "postgres") -> tuple[str, dict[str, Any]]:
    u = make_url(url).set(drivername="postgresql", database=database)
    host = u.query.get("host")
    kwargs = {"host": host} if host else {}
    u = u.set(query={})
    return u.render_as_string(hide_password=False), kwargs


async def connect_raw(url: str, **server_settings: str) -> asyncpg.Connection[Any]:
    """A plain asyncpg connection to the database in `url`, outside the engine's pool (for a
    lock held as long as a process lives: kit.lease)."""
    dsn, kw = _server_dsn(url, database=make_url(url).database or "postgres")
    conn: asyncpg.Connection[Any] = await asyncio.wait_for(
        asyncpg.connect(dsn, server_settings=server_settings, **kw), 10)
    return conn


async def ensure_database(url: str) -> bool:
    """Create the database named in `url` if missing. True if it was created."""
    name = make_url(url).database
    dsn, kw = _server_dsn(url)
    conn = await asyncpg.connect(dsn, **kw)
    try:
        if await conn.fetchval("select 1 from pg_database where datname = $1", name):
            return False
        try:
            await conn.execute(f'create database "{name}"')
        except asyncpg.DuplicateDatabaseError:  # a concurrent migrate won the race
            return False
        return True
    finally:
        await conn.close()


async def drop_database(url: str) -> None:
    name = make_url(url).database
    dsn, kw = _server_dsn(url)
    conn = await asyncpg.connect(dsn, **kw)
    try:
        await conn.execute(f'drop database if exists "{name}" with (force)')
    finally:
        await conn.close()
