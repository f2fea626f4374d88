"""Health checks and stream set-up against real NATS and PostgreSQL."""
from __future__ import annotations

import contextlib

import httpx
import pytest
from nats.js.api import StorageType

from contracts.subjects import SEALED_STREAMS, STREAMS
from services.kit.streams import ensure_streams, stream_configs
from tests.integration.test_kit_consumer import kit_runtime

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def http(rt):
    app = rt.http_app("kit test")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kit") as client:
        yield client


async def test_readyz_is_200_when_nats_and_database_answer(settings):
    async with kit_runtime(settings) as (rt, _e), http(rt) as client:
        r = await client.get("/readyz")
        assert r.status_code == 200, r.text
        assert r.json() == {"status": "ready", "checks": {"nats": "ok", "database": "ok"}}
        assert (await client.get("/healthz")).json() == {"status": "ok", "service": "kit"}


async def test_readyz_is_503_when_the_database_does_not_exist(settings):
    from services.kit.runtime import ServiceRuntime
    from tests.integration.test_kit_consumer import kit_metadata

    md, _ = kit_metadata()
    rt = ServiceRuntime("no_such_db", settings, md)  # its database was never created
    await rt.start()
    try:
        async with http(rt) as client:
            r = await client.get("/readyz")
            assert r.status_code == 503
            body = r.json()
            assert body["status"] == "unavailable" and body["checks"]["nats"] == "ok"
            assert body["checks"]["database"].startswith("unavailable") and "no_such_db" in body["checks"]["database"]
            assert (await client.get("/healthz")).status_code == 200  # alive, just not ready
    finally:
        await rt.stop()


async def test_readyz_is_503_when_nats_is_gone(settings):
    async with kit_runtime(settings) as (rt, _e), http(rt) as client:
        await rt.nc.close()
        r = await client.get("/readyz")
        assert r.status_code == 503 and r.json()["checks"]["nats"].startswith("unavailable")
        assert r.json()["checks"]["database"] == "ok"


async def test_ensure_streams_is_idempotent_with_file_storage_and_a_dedup_window(settings, nc):
    js = nc.jetstream()
    before = {c.name: await js.stream_info(c.name) for c in stream_configs(settings)}  # the fixture created them
    assert set(before) == {settings.names.stream(s) for s in STREAMS}
    await js.publish(settings.names.enrolments("pkh"), b"{}", headers={"Nats-Msg-Id": "keep-me"})

    for _ in range(2):
        done = await ensure_streams(js, settings, update=True)
        assert all(line.startswith("checked ") for line in done) and len(done) == len(STREAMS)
    assert await ensure_streams(js, settings, update=False) == []

    for name, old in before.items():
        now = await js.stream_info(name)
        assert now.created == old.created  # updated in place, never re-created
        assert now.config.storage == StorageType.FILE
        assert now.config.duplicate_window == settings.dedup_window_seconds
        assert now.config.subjects == old.config.subjects
        bare = name.split("_", 1)[1]
        assert now.config.deny_delete == now.config.deny_purge == (bare in SEALED_STREAMS)
    enrol = await js.stream_info(settings.names.stream("AGENCY_ENROLMENTS"))
    assert enrol.state.messages == 1  # data kept across re-declaration

    ack = await js.publish(settings.names.enrolments("pkh"), b"{}", headers={"Nats-Msg-Id": "keep-me"})
    assert ack.duplicate  # the de-duplication window is on


async def test_ensure_streams_restores_a_drifted_config(settings, nc):
    js = nc.jetstream()
    name = settings.names.stream("REGISTRY")
    cfg = (await js.stream_info(name)).config
    cfg.duplicate_window = 5.0
    await js.update_stream(cfg)
    assert (await js.stream_info(name)).config.duplicate_window == 5.0
    await ensure_streams(js, settings, update=False)  # services at start-up only add missing streams
    assert (await js.stream_info(name)).config.duplicate_window == 5.0
    await ensure_streams(js, settings, update=True)  # `sinergi migrate` restores the declared config
    assert (await js.stream_info(name)).config.duplicate_window == settings.dedup_window_seconds
