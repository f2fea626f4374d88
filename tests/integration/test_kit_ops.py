"""Operators' commands on real NATS and PostgreSQL (kit.ops): `sinergi status` gathers each
service's health and outbox, consumer lag, dead letters per service and stream sizes; the
dead-letter queue lists with filters, shows, replays the original after a fix (the whole
original even when the letter kept only 64 KiB; a repeat within JetStream's window is said
clearly) and discards; DEADLETTER has a retention limit."""
from __future__ import annotations

import asyncio
import datetime as dt
import json

import httpx
import pytest
from rich.console import Console

from contracts.deadletter import MAX_KEPT_PAYLOAD
from services.kit import ops
from services.kit.consumer import HANDLER_ERROR, ConsumerSpec
from services.kit.decode import Limits, load_json
from services.kit.settings import SERVICES
from services.kit.streams import ensure_streams, stream_configs
from tests import factories
from tests.conftest import eventually
from tests.integration.registry_support import send
from tests.integration.test_kit_consumer import SERVICE, count_effects, effects_handler, kit_runtime

pytestmark = pytest.mark.integration


async def test_status_gathers_health_outbox_lag_dead_letters_and_streams(settings, nc, start, tmp_path):
    bad = {**factories.enrolment("pkh"), "nik": "12"}
    async with start("registry", settings) as reg:
        await send(nc, settings, [factories.enrolment("pkh"), bad])
        clients = {"registry": reg.http}

        async def fetch(service: str, path: str) -> httpx.Response:
            if service not in clients:  # the other three are not running in this test
                raise httpx.ConnectError("connection refused")
            return await clients[service].get(path)
        urls = {s: f"http://{s}" for s in SERVICES}

        async def gathered():
            st = await ops.collect(settings, fetch, urls, nc.jetstream(), tmp_path)
            # the dead letter is out and the relay has published the rest (receipts, events): a
            # status read between the two showed a backlog of 2 for a moment
            done = st.dead_letters.get("registry") == 1 and all(
                v.backlog == 0 for v in st.services if v.name == "registry")
            return st if done else None
        st = await eventually(gathered, timeout=15)

    views = {v.name: v for v in st.services}
    assert views["registry"].ready and views["registry"].backlog == 0 and views["registry"].oldest == 0
    assert not views["intake"].ready and "not reachable" in views["intake"].error
    assert not st.healthy
    lag = {c.name: c for c in st.consumers}
    assert lag["registry-enrolments-v1"].pending == 0
    streams = {s.name: s for s in st.streams}
    assert streams[settings.names.stream("AGENCY_ENROLMENTS")].messages == 2
    assert streams[settings.names.stream("DEADLETTER")].messages == 1
    assert st.jetstream_bytes and st.jetstream_bytes > 0
    assert "free on the data dir's disk" in st.disk

    console = Console(record=True, width=200)
    ops.render(st, console)
    text = console.export_text()
    assert "registry-enrolments-v1" in text and "not reachable at http://intake" in text
    assert "Traceback" not in text


def _decode(msg):
    load_json(msg.data, Limits(max_bytes=1024 * 1024))
    return json.loads(msg.data)["key"]


async def test_dead_letters_are_an_operators_queue(settings, nc):
    """A handler bug dead-letters two messages (one larger than a dead letter keeps); after the
    fix, replay hands each to the handler once; discard removes a letter."""
    js = nc.jetstream()
    # a one-second de-duplication window, so the replay after it is not dropped as a repeat
    quick = settings.model_copy(update={"dedup_window_seconds": 1})
    await ensure_streams(js, quick, update=True)
    subject, stream = settings.names.enrolments("kitops"), settings.names.stream("AGENCY_ENROLMENTS")
    poison = {"bad", "big"}

    def register(kit, effects):
        kit.consume(ConsumerSpec(durable="kit-ops-v1", stream=stream, subject=subject, decode=_decode,
                                 handle=effects_handler(effects, poison), backoff=(0.05,), max_deliveries=2,
                                 idle_wait=0.5))

    big = json.dumps({"key": "big", "pad": "x" * (MAX_KEPT_PAYLOAD + 10_000)}).encode()
    async with kit_runtime(quick, register) as (kit, effects):
        await js.publish(subject, json.dumps({"key": "ok"}).encode(), headers={"Nats-Msg-Id": "ok"})
        await js.publish(subject, json.dumps({"key": "bad"}).encode(), headers={"Nats-Msg-Id": "bad"})
        await js.publish(subject, big, headers={"Nats-Msg-Id": "big"})

        async def two_letters():
            got = await ops.list_letters(js, settings.names, service=SERVICE, idle=0.5)
            return got if len(got) == 2 else None
        letters = await eventually(two_letters, timeout=30)
        by_key = {x.letter.msg_id: x for x in letters}
        assert {x.letter.reason_code for x in letters} == {HANDLER_ERROR}
        assert by_key["big"].letter.payload_truncated and not by_key["bad"].letter.payload_truncated

        # filters: by code prefix, by service, by age, and the newest N
        names = settings.names
        assert len(await ops.list_letters(js, names, code="rjct.handler", idle=0.5)) == 2
        assert await ops.list_letters(js, names, code="rjct.nik", idle=0.5) == []
        assert await ops.list_letters(js, names, service="registry", idle=0.5) == []
        future = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
        assert await ops.list_letters(js, names, since=future, idle=0.5) == []
        assert len(await ops.list_letters(js, names, since=ops._since("1h"), idle=0.5)) == 2
        newest = await ops.list_letters(js, names, limit=1, idle=0.5)
        assert [x.seq for x in newest] == [max(x.seq for x in letters)]
        shown = await ops.get_letter(js, names, by_key["bad"].seq)
        assert shown.letter.subject == subject and shown.letter.stream == stream

        poison.clear()  # the fix is deployed
        await asyncio.sleep(1.5)  # past the one-second window
        r1 = await ops.replay(js, names, by_key["bad"].seq)
        r2 = await ops.replay(js, names, by_key["big"].seq)
        assert r1.msg_id == "bad" and r1.subject == subject and r1.from_original
        assert r2.from_original and r2.size == len(big)  # the whole original, not the kept 64 KiB
        await eventually(lambda: _effects(kit, effects, {"ok": 1, "bad": 1, "big": 1}), timeout=20)

        # replayed twice: the consumer's inbox knows it (after the window, JetStream does not)
        await asyncio.sleep(1.5)
        await ops.replay(js, names, by_key["bad"].seq)
        await asyncio.sleep(1.0)
        assert await count_effects(kit, effects) == {"ok": 1, "bad": 1, "big": 1}

        await ops.discard(js, names, by_key["bad"].seq)
        with pytest.raises(ops.OpsError, match="no dead letter"):
            await ops.get_letter(js, names, by_key["bad"].seq)
        assert [x.letter.msg_id for x in await ops.list_letters(js, names, idle=0.5)] == ["big"]


async def _effects(kit, effects, want) -> bool:
    return await count_effects(kit, effects) == want


async def test_a_letter_whose_original_is_gone_replays_from_its_own_copy_or_says_why(settings, nc):
    js = nc.jetstream()
    names = settings.names
    from contracts.deadletter import DeadLetter  # noqa: F401 - the shape written below
    from services.kit.outbox import dead_letter

    small = dead_letter("kit", names.enrolments("kitgone"), b'{"key": "k"}', "rjct.test", "test",
                        stream=names.stream("AGENCY_ENROLMENTS"), stream_seq=999_999)
    large = dead_letter("kit", names.enrolments("kitgone"), b"y" * (MAX_KEPT_PAYLOAD + 1), "rjct.test", "test",
                        stream=names.stream("AGENCY_ENROLMENTS"), stream_seq=999_998)
    a = await js.publish(names.deadletter("kit"), small.model_dump_json().encode())
    b = await js.publish(names.deadletter("kit"), large.model_dump_json().encode())
    r = await ops.replay(js, names, a.seq)
    assert not r.from_original and r.size == len(b'{"key": "k"}')
    with pytest.raises(ops.OpsError, match="cannot be replayed"):
        await ops.replay(js, names, b.seq)
    with pytest.raises(ops.OpsError, match="not a dead letter"):
        junk = await js.publish(names.deadletter("kit"), b"junk")
        await ops.get_letter(js, names, junk.seq)

    # within JetStream's de-duplication window the replay would be dropped: said, not hidden
    orig = await js.publish(names.enrolments("kitgone"), b'{"key": "d"}', headers={"Nats-Msg-Id": "kitgone:d"})
    recent = dead_letter("kit", names.enrolments("kitgone"), b'{"key": "d"}', HANDLER_ERROR, "test",
                         msg_id="kitgone:d", stream=orig.stream, stream_seq=orig.seq)
    c = await js.publish(names.deadletter("kit"), recent.model_dump_json().encode())
    with pytest.raises(ops.OpsError, match="de-duplication window"):
        await ops.replay(js, names, c.seq)


async def test_deadletter_stream_keeps_letters_for_a_limited_time(settings, nc):
    cfg = {c.name: c for c in stream_configs(settings)}
    assert cfg[settings.names.stream("DEADLETTER")].max_age == 30 * 86400
    assert all(not c.max_age for n, c in cfg.items() if not n.endswith("DEADLETTER"))
    info = await nc.jetstream().stream_info(settings.names.stream("DEADLETTER"))
    assert info.config.max_age == 30 * 86400
    week = settings.model_copy(update={"deadletter_max_age_days": 7})
    await ensure_streams(nc.jetstream(), week, update=True)
    info = await nc.jetstream().stream_info(settings.names.stream("DEADLETTER"))
    assert info.config.max_age == 7 * 86400


def test_commands_fail_in_one_line_without_a_traceback(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from services.cli import app
    from services.kit.embedded import free_port

    monkeypatch.chdir(tmp_path)  # no ./.sinergi here
    monkeypatch.setenv("SINERGI_NATS_URL", f"nats://127.0.0.1:{free_port()}")  # nobody listens
    monkeypatch.setenv("SINERGI_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:1/postgres")
    monkeypatch.setenv("SINERGI_HTTP_PORT_BASE", str(free_port()))
    runner = CliRunner()
    for args in (["deadletter", "list", "--since", "yesterday"], ["deadletter", "show", "1"],
                 ["deadletter", "replay", "1"], ["deadletter", "discard", "1", "--yes"], ["status"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 1, (args, r.output)
        assert "Traceback" not in r.output and r.exception is None or isinstance(r.exception, SystemExit), args
        assert ("cannot reach NATS" in r.output or "--since 'yesterday'" in r.output), (args, r.output)
