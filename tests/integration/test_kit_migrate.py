"""`sinergi migrate` as a command: one database per service at the alembic head, the kit's
outbox and inbox in each, every stream created, and running it again changes nothing."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

from contracts.subjects import STREAMS
from services.kit.migrations import alembic_config
from services.kit.settings import SERVICES
from services.kit.streams import delete_streams

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def sinergi(settings, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SINERGI_")}
    env.update(SINERGI_NATS_URL=settings.nats_url, SINERGI_DATABASE_URL=settings.database_url,
               SINERGI_NAMESPACE=settings.namespace, SINERGI_DB_PREFIX=settings.db_prefix)
    return subprocess.run([sys.executable, "-m", "services.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=180)


async def _db_state(settings, service: str) -> tuple[set[str], set[str]] | None:
    """(alembic versions, table names) of a service's database, or None if it does not exist."""
    u = make_url(settings.db_url(service)).set(drivername="postgresql")
    host = u.query.get("host")
    dsn = u.set(query={}).render_as_string(hide_password=False)
    try:
        conn = await asyncpg.connect(dsn, **({"host": host} if host else {}))
    except asyncpg.InvalidCatalogNameError:
        return None
    try:
        versions = {r[0] for r in await conn.fetch("select version_num from alembic_version")}
        tables = {r[0] for r in await conn.fetch("select tablename from pg_tables where schemaname = 'public'")}
        return versions, tables
    finally:
        await conn.close()


def _head(settings, service: str) -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config(service, settings.db_url(service))).get_heads())


async def test_migrate_creates_databases_and_streams_and_is_idempotent(settings, nc):
    js = nc.jetstream()
    await delete_streams(js, settings)  # the fixture made them; migrate must create them itself
    for svc in SERVICES:
        assert await _db_state(settings, svc) is None

    first = await asyncio.to_thread(sinergi, settings, "migrate")
    assert first.returncode == 0, first.stdout + first.stderr
    for svc in SERVICES:
        versions, tables = await _db_state(settings, svc)
        assert versions == _head(settings, svc), svc
        assert {"outbox", "inbox", "alembic_version"} <= tables, (svc, tables)
        assert f"database {settings.db_name(svc)} at head" in first.stderr
    for bare in STREAMS:
        assert f"created {settings.names.stream(bare)}" in first.stderr
        await js.stream_info(settings.names.stream(bare))

    before = {svc: await _db_state(settings, svc) for svc in SERVICES}
    created = {bare: (await js.stream_info(settings.names.stream(bare))).created for bare in STREAMS}
    second = await asyncio.to_thread(sinergi, settings, "migrate")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "created" not in second.stderr
    assert {svc: await _db_state(settings, svc) for svc in SERVICES} == before
    for bare in STREAMS:
        assert f"checked {settings.names.stream(bare)}" in second.stderr
        assert (await js.stream_info(settings.names.stream(bare))).created == created[bare]


async def test_migrate_one_service_and_refuse_an_unknown_one(settings):
    done = await asyncio.to_thread(sinergi, settings, "migrate", "registry")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (await _db_state(settings, "registry"))[0] == _head(settings, "registry")
    assert await _db_state(settings, "intake") is None

    bad = await asyncio.to_thread(sinergi, settings, "migrate", "payroll")
    assert bad.returncode != 0
    assert "unknown service 'payroll'" in bad.stdout + bad.stderr
