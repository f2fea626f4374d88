"""Several registry processes share one durable consumer, so two batches may touch the same
people at the same moment. Run ingest transactions concurrently on overlapping people in
opposite orders: no deadlock, no lost or doubled person, each person announced new once."""
from __future__ import annotations

import asyncio
import json
import random

import pytest
import sqlalchemy as sa

from services.kit.consumer import Delivery
from services.registry import handlers, store
from tests import factories

pytestmark = pytest.mark.integration


class _Meta:
    def __init__(self, seq: int) -> None:
        self.sequence = type("Seq", (), {"stream": seq})()
        self.num_delivered = 1


class _Msg:
    """What ingest reads of a JetStream message (subject, data, headers, metadata)."""

    def __init__(self, subject: str, report: dict, seq: int) -> None:
        self.subject, self.data = subject, json.dumps(report).encode()
        self.headers, self.metadata = {"Nats-Msg-Id": factories.msg_id(report)}, _Meta(seq)


def _batch(settings, reports: list[dict]) -> list[_Msg]:
    return [_Msg(settings.names.enrolments(r["programme_identifier"]), r, i) for i, r in enumerate(reports)]


async def ingest(registry, msgs: list[_Msg]) -> dict[str, int]:
    """One batch through handlers.ingest in its own unit of work, as the kit's consumer runs it."""
    async with registry.rt.unit_of_work() as uow:
        return await handlers.ingest(registry.deps, uow, [Delivery(m, m.headers["Nats-Msg-Id"]) for m in msgs])


async def test_concurrent_batches_on_the_same_people_neither_deadlock_nor_double(settings, start):
    rng = random.Random(5)
    people = [factories.enrolment("pkh", sex=rng.choice("FM")) for _ in range(300)]
    async with start("registry", settings) as registry:
        rt = registry.rt
        for rnd in range(3):  # round 0: everyone new; later rounds: everyone exists
            a = [{**p, "message_id": f"a{rnd}-{i}", "status_change_date": f"2026-0{rnd + 1}-01",
                  "address": f"RT 0{rnd + 1} RW 01"} for i, p in enumerate(people)]
            b = [{**p, "programme_identifier": "bpnt", "message_id": f"b{rnd}-{i}",
                  "status_change_date": f"2026-0{rnd + 1}-01"} for i, p in enumerate(people)]
            b.reverse()
            rng.shuffle(a)
            # a third batch changes some addresses too (identity updates racing with each other)
            c = [{**p, "message_id": f"c{rnd}-{i}", "address": f"RT 0{rnd + 1} RW 09"}
                 for i, p in enumerate(people[::3])]
            counts = await asyncio.gather(*(ingest(registry, _batch(settings, x)) for x in (a, b, c)))
            assert [k["accepted"] for k in counts] == [300, 300, 100]

        async with rt.sessions() as s:
            n_people = (await s.execute(sa.select(sa.func.count()).select_from(store.people))).scalar()
            enrolled = (await s.execute(sa.select(store.enrolments.c.programme_identifier, sa.func.count())
                                        .group_by(store.enrolments.c.programme_identifier))).all()
            payloads = (await s.execute(sa.select(store.outbox.c.payload)
                                        .where(store.outbox.c.subject.like("%people_registered")))).scalars().all()
            current = {r.nik: (r.name, r.address, r.no_kk) for r in (await s.execute(sa.select(store.people))).all()}
            hist = (await s.execute(sa.select(store.person_history).order_by(store.person_history.c.id))).all()
        assert n_people == 300 and dict(enrolled) == {"pkh": 300, "bpnt": 300}
        announced = [p for body in payloads for p in json.loads(body)["data"]["people"]]
        new = [p["nik"] for p in announced if p["is_new"]]
        assert sorted(new) == sorted(p["nik"] for p in people)  # each person announced new exactly once
        # the last identity in each person's history is the one the registry holds: no lost update
        last = {h.nik: (h.name, h.address, h.no_kk) for h in hist}
        assert last == current
        assert len([h for h in hist if h.nik == people[0]["nik"]]) >= 2  # the address changes were kept


async def test_the_same_batch_twice_at_once_is_applied_once(settings, start):
    """A redelivery can reach a second process while the first still holds the batch."""
    reports = [factories.enrolment("kis") for _ in range(200)]
    async with start("registry", settings) as registry:
        first, second = await asyncio.gather(ingest(registry, _batch(settings, reports)),
                                             ingest(registry, _batch(settings, reports[::-1])))
        assert sorted([first["accepted"], second["accepted"]]) == [0, 200]
        assert first["duplicate"] + second["duplicate"] == 200
        async with registry.rt.sessions() as s:
            history = (await s.execute(sa.select(sa.func.count()).select_from(store.enrolment_history))).scalar()
        assert history == 200
