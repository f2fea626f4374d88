"""Honest health and stream set-up against real NATS and PostgreSQL: /readyz answers 503,
naming the cause, when the database or NATS do not answer, a consumer is dead or stalled, or
the outbox falls behind; after a 10 s stall of the NATS server (SIGSTOP, /readyz polled
during it) every consumer resumes by itself."""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile
from pathlib import Path

import httpx
import pytest
from nats.js.api import StorageType

from contracts.subjects import MIN_DEDUP_WINDOW_SECONDS, PARTY_DEDUP_STREAMS, SEALED_STREAMS, STREAMS
from services.kit.consumer import ConsumerSpec
from services.kit.embedded import EmbeddedNats
from services.kit.outbox import message_row
from services.kit.streams import ensure_streams, stream_configs
from tests.conftest import eventually
from tests.integration.test_kit_consumer import (
    _body,
    _work_subject,
    count_effects,
    effects_handler,
    kit_runtime,
    text_decode,
)

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def http(kit):
    app = kit.http_app("kit test")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kit") as client:
        yield client


def one_consumer(durable: str, **kw):
    def register(kit, effects):
        subject, stream = _work_subject(kit.settings)
        kit.consume(ConsumerSpec(durable=durable, stream=stream, subject=subject, decode=text_decode,
                                 handle=kw.pop("handle", None) or effects_handler(effects), idle_wait=0.5, **kw))
    return register


async def test_readyz_is_200_when_everything_works(settings):
    async with kit_runtime(settings, one_consumer("kit-ready-v1")) as (kit, _e), http(kit) as client:
        r = await client.get("/readyz")
        assert r.status_code == 200, r.text
        assert r.json() == {"status": "ready", "checks": {"nats": "ok", "database": "ok", "outbox": "ok",
                                                         "consumer kit-ready-v1": "ok"}}
        assert (await client.get("/healthz")).json() == {"status": "ok", "service": "kit"}


async def test_readyz_is_503_when_the_database_does_not_exist(settings):
    from services.kit.runtime import Kit
    from tests.integration.test_kit_consumer import kit_metadata

    md, _ = kit_metadata()
    kit = Kit("no_such_db", settings, md)  # its database was never created
    await kit.start()
    try:
        async with http(kit) as client:
            r = await client.get("/readyz")
            assert r.status_code == 503
            body = r.json()
            assert body["status"] == "unavailable" and body["checks"]["nats"] == "ok"
            assert body["checks"]["database"].startswith("unavailable") and "no_such_db" in body["checks"]["database"]
            assert (await client.get("/healthz")).status_code == 200  # alive, just not ready
    finally:
        await kit.stop()


async def test_readyz_is_503_when_nats_is_gone(settings):
    async with kit_runtime(settings) as (kit, _e), http(kit) as client:
        await kit.bus.nc.close()
        r = await client.get("/readyz")
        assert r.status_code == 503 and r.json()["checks"]["nats"].startswith("unavailable")
        assert r.json()["checks"]["database"] == "ok"


async def test_readyz_names_a_dead_consumer(settings):
    async with kit_runtime(settings, one_consumer("kit-dead-v1")) as (kit, _e), http(kit) as client:
        task = kit.consumers[0]._task
        task.cancel()
        await asyncio.wait({task})
        r = await client.get("/readyz")
        assert r.status_code == 503
        assert r.json()["checks"]["consumer kit-dead-v1"].startswith("not running")


async def test_readyz_names_a_consumer_that_stalls_with_work_pending(settings, nc):
    js = nc.jetstream()
    subject, _stream = _work_subject(settings)
    release = asyncio.Event()

    async def stuck(uow, batch):  # a handler that never returns (a lock wait, a hung driver)
        await release.wait()

    async with kit_runtime(settings, one_consumer("kit-stall-v1", handle=stuck, stall_after=1.0)) as (kit, _e), \
            http(kit) as client:
        for k in ("a", "b", "c"):
            await js.publish(subject, _body(k), headers={"Nats-Msg-Id": k})
        await asyncio.sleep(1.5)
        await js.publish(subject, _body("d"), headers={"Nats-Msg-Id": "d"})

        async def stalled():
            r = await client.get("/readyz")
            return r.status_code == 503 and "stalled" in r.json()["checks"]["consumer kit-stall-v1"]
        await eventually(stalled, timeout=10)
        release.set()


async def test_readyz_names_an_outbox_that_falls_behind(settings):
    settings = settings.model_copy(update={"outbox_max_age_seconds": 1.0})
    async with kit_runtime(settings) as (kit, _e), http(kit) as client:
        await kit.relay.stop()  # a relay that cannot publish
        async with kit.unit_of_work() as uow:
            uow.add_rows([message_row(kit.names.receipts("kitlate"), b"{}")])
        await asyncio.sleep(1.2)
        r = await client.get("/readyz")
        assert r.status_code == 503
        assert "outbox relay stopped" in r.json()["checks"]["outbox"] or "behind" in r.json()["checks"]["outbox"]


async def test_after_a_nats_stall_with_readyz_polled_every_consumer_resumes(settings):
    """Issue 11 item 3: NATS paused 10 s (SIGSTOP/SIGCONT) while /readyz was called killed
    nats-py's reading task (a flush with a timeout); 0 of 20 new messages were handled
    afterwards while /readyz said 200. Now: 503 during the stall, 200 after, all 20 handled."""
    tmp = Path(tempfile.mkdtemp(prefix="sinergi-stall-"))
    server = EmbeddedNats(tmp).start()
    try:
        own = settings.model_copy(update={"nats_url": server.url})
        async with kit_runtime(own, one_consumer("kit-stall-nats-v1")) as (kit, effects), http(kit) as client:
            import nats
            pub = await nats.connect(server.url)
            js = pub.jetstream()
            subject, _stream = _work_subject(own)
            await js.publish(subject, _body("before"), headers={"Nats-Msg-Id": "before"})
            await eventually(lambda: _count(kit, effects, 1), timeout=10)
            assert (await client.get("/readyz")).status_code == 200

            os.kill(server.pid, signal.SIGSTOP)
            statuses = []
            try:
                for _ in range(5):  # /readyz polled during the stall, as a load balancer would
                    statuses.append((await client.get("/readyz")).status_code)
                    await asyncio.sleep(2)
            finally:
                os.kill(server.pid, signal.SIGCONT)
            assert 503 in statuses, statuses

            async def ready():
                return (await client.get("/readyz")).status_code == 200
            await eventually(ready, timeout=60, interval=0.5)
            for i in range(20):
                await js.publish(subject, _body(f"after-{i}"), headers={"Nats-Msg-Id": f"after-{i}"})
            await eventually(lambda: _count(kit, effects, 21), timeout=60)
            assert await count_effects(kit, effects) == {"before": 1, **{f"after-{i}": 1 for i in range(20)}}
            await pub.close()
    finally:
        server.stop()


async def _count(kit, effects, n: int) -> bool:
    return sum((await count_effects(kit, effects)).values()) >= n


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
        assert now.config.subjects == old.config.subjects
        bare = name.split("_", 1)[1]
        # the agencies' stream keeps JetStream's shortest window (contracts.subjects.PARTY_DEDUP_STREAMS)
        assert now.config.duplicate_window == (MIN_DEDUP_WINDOW_SECONDS if bare in PARTY_DEDUP_STREAMS
                                               else settings.dedup_window_seconds)
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
