"""`store.apply` on real PostgreSQL: the read models do not depend on how facts are batched
(the live consumers fold batches of up to 5,000, a rebuild other sizes, a redelivery one at a
time), for people new to a table and people already in it, and two batches on the same
people at once neither deadlock nor lose a change."""
from __future__ import annotations

import asyncio
import datetime as dt

import pytest
import sqlalchemy as sa

from services.kit.db import drop_database, make_engine, sessions
from services.kit.migrations import migrate
from services.reporting import store
from services.reporting.facts import EnrolmentFact, LifeFact, PaymentFact

pytestmark = pytest.mark.integration
A, B = "3317012001", "3317012002"


def facts() -> list:
    """Enrolments (moves, a change older than the one applied), life status changes (disputed,
    deceased, overturned, moved out, one before the person's enrolment) and payments (twice in a
    month, split over two sources, several months, a person paid in two villages)."""
    # a person who moves within a batch: A's count goes +1 -1, a row of 0 that must exist
    # whether the two changes came in one batch or two
    out: list = [EnrolmentFact("kip", "mover", A, "active", dt.date(2026, 1, 5)),
                 EnrolmentFact("kip", "mover", B, "active", dt.date(2026, 2, 5))]
    for i in range(40):
        ref = f"p{i % 13}"
        out.append(EnrolmentFact("pkh", ref, (A, B)[i % 2], ("active", "suspended", "active")[i % 3],
                                 dt.date(2026, 1 + i % 12, 1 + i % 27)))
        out.append(PaymentFact("pkh", ref, (A, B)[i % 3 == 0], "apbn", 1000 + i, f"2026-{1 + i % 4:02d}",
                               payments=1))
        if i % 5 == 0:
            out.append(PaymentFact("pkh", ref, A, "apbd_kabupaten", 7, f"2026-{1 + i % 4:02d}", payments=0))
        life = {10: ("p3", "disputed"), 14: ("p3", "deceased"), 18: ("mover", "moved_out"), 22: ("p5", "ineligible"),
                26: ("p3", "alive"), 30: ("late", "deceased")}.get(i)
        if life:
            out.append(LifeFact(life[0], A, life[1], dt.date(2026, 1 + i % 12, 2)))
    out.append(EnrolmentFact("kip", "late", A, "active", dt.date(2026, 11, 1)))
    return out


async def dump(engine) -> dict[str, list]:
    async with engine.connect() as conn:
        return {t.name: sorted(tuple(r) for r in (await conn.execute(sa.select(t))).all())
                for t in store.READ_MODELS if t.name != "inbox"}


@pytest.fixture
async def fresh(settings):
    """`await fresh(name)`: an engine on a migrated reporting database of its own (dropped after)."""
    made = []

    async def make(name: str):
        url = settings.db_url(f"reporting_{name}")
        await migrate("reporting", url)
        made.append((url, make_engine(url, pool_size=2)))
        return made[-1][1]
    yield make
    for url, engine in made:
        await engine.dispose()
        await drop_database(url)


async def apply_in(engine, all_facts: list, size: int, history: bool) -> dict[str, list]:
    make = sessions(engine)
    if history:  # some people are in the tables from an earlier batch already
        async with make.begin() as s:
            await store.apply(s, all_facts[::7])
    for k in range(0, len(all_facts), size):
        async with make.begin() as s:
            await store.apply(s, all_facts[k:k + size])
    return await dump(engine)


@pytest.mark.parametrize("history", [False, True])
async def test_read_models_do_not_depend_on_batch_sizes(fresh, history):
    got = {size: await apply_in(await fresh(f"b{size}"), facts(), size, history) for size in (1000, 1, 3, 17)}
    assert got[1000]["paid_months"] and got[1000]["enrolment_state"] and got[1000]["life_state"]
    assert got[1000]["enrolment_exits"]
    for size in (1, 3, 17):
        assert got[size] == got[1000], size
    people = {(p, v, per): n for p, v, per, n in got[1000]["people_paid"]}
    assert sum(people.values()) == len({(f.person_ref, f.period) for f in facts() if isinstance(f, PaymentFact)})


async def test_two_batches_on_the_same_people_at_once_both_count(fresh):
    engine = await fresh("race")
    make = sessions(engine)
    one = [PaymentFact("pkh", f"p{i}", A, "apbn", 10, "2026-05") for i in range(300)]
    two = [PaymentFact("pkh", f"p{i}", A, "apbn", 10, "2026-06") for i in reversed(range(300))]

    async def fold(batch):
        async with make.begin() as s:
            await store.apply(s, batch)
    await asyncio.gather(fold(one), fold(two))
    tables = await dump(engine)
    assert {r[2]: r[3] for r in tables["people_paid"]} == {"2026-05": 300, "2026-06": 300}
    assert {r[3] for r in tables["paid_months"]} == {0b110000}
