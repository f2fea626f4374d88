"""Life status (issue 17): each person's alive / deceased / moved out / ineligible / disputed,
kept by the registry apart from the programs' enrolments, and announced once per change
(`registry.life_status_changed`) whichever program or source reported it.

Sources, strongest first: Dukcapil's death notifications (crvs), a verifier (a verivali result,
or a decision on the data-quality queue), a program agency's enrolment report. The rules are
`domain.decide_life`; bulk ingest computes them in its plan (`domain.plan_ingest`), the
single-person paths here.
"""
from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from contracts.registry import LifeStatusChange, LifeStatusChanged, VerificationResult
from services.kit.uow import UnitOfWork
from services.registry import domain, store

if TYPE_CHECKING:
    from services.registry.app import Registry

# how often the lease holder looks for a stop no one announced (a race the docs describe: rare,
# and a person found then stops being paid from the effective date all the same)
ANNOUNCE_EVERY = 60.0

# what a verivali result says about a person's life (verified/corrected: found alive)
VERIVALI_LIFE = {
    VerificationResult.deceased: ("deceased", "verivali.deceased"),
    VerificationResult.moved: ("moved_out", "verivali.moved"),
    VerificationResult.ineligible: ("ineligible", "verivali.ineligible"),
    VerificationResult.verified: ("alive", "verivali.verified"),
    VerificationResult.corrected: ("alive", "verivali.verified"),
}
DECISION_REASON = {"alive": "verifier.confirmed_alive", "deceased": "verifier.confirmed_deceased",
                   "moved_out": "verifier.confirmed_moved_out"}


async def after_ingest(uow: UnitOfWork, plan: domain.LifePlan, flagged: Sequence[dict]) -> list[dict]:
    """Write an ingest batch's life plan; return its LifeStatusChange items (the caller emits
    them with the batch's other events), each dispute with its data-quality item's id."""
    s = uow.session
    await store.write_life_plan(s, plan)
    if not plan.changes:
        return []
    ids = {c["nik"]: c["id"] for c in flagged if c["kind"] == "death_while_active"}
    missing = [n for n in plan.disputed if n not in ids]
    ids |= await store.open_death_conflicts(s, missing)
    disputed_ids = {n: ids[n] for n in plan.disputed if n in ids}
    await store.set_life_conflicts(s, disputed_ids)
    return [{**c, "conflict_id": str(disputed_ids[c["nik"]])} if c["nik"] in disputed_ids else c
            for c in plan.changes]


async def apply_fact(uow: UnitOfWork, nik: str, fact: domain.LifeFact, *, village_code: str | None = None,
                     conflict_id: uuid.UUID | None = None, correlation_id: uuid.UUID | None = None
                     ) -> tuple[domain.Life, domain.LifeDecision]:
    """One person's fact (a verivali result, a verifier's decision, a Dukcapil death): decide,
    write, and announce it if the status changed. The caller holds the person's `people` row
    when there is one. Returns the status before and the decision."""
    s = uow.session
    current = (await store.lives(s, [nik], lock=True)).get(nik, domain.ALIVE)
    decision = domain.decide_life(current, fact)
    if decision.life == current:
        return current, decision
    row = domain.life_row(nik, decision.life) | {"conflict_id": conflict_id}
    village = village_code or (await store.village_of(s, [nik])).get(nik) if decision.announce else None
    # life_history holds what was announced: nobody knows this person yet, so nothing is, until
    # a program enrols them (ingest) or `announce_unannounced` finds them
    history = [row | {"previous_status": current.status}] if village is not None else []
    await store.write_lives(s, [row], history)
    if village is None:
        return current, decision
    programs = (await store.active_programs(s, [nik])).get(nik, [])
    item = domain.life_change(nik, village, current, decision.life, programs)
    uow.emit(LifeStatusChanged(changes=[LifeStatusChange.model_validate(
        item | {"conflict_id": conflict_id})]), correlation_id=correlation_id)
    return current, decision


async def after_verification(uow: UnitOfWork, nik: str, village_code: str, result: VerificationResult,
                             day: dt.date) -> None:
    """A verivali result as a verifier's life fact (not_found says nothing about life)."""
    if result not in VERIVALI_LIFE:
        return
    status, code = VERIVALI_LIFE[result]
    await apply_fact(uow, nik, domain.LifeFact(status, "verifier", day, "verivali", code),
                     village_code=village_code)


async def decide_conflict(uow: UnitOfWork, conflict: Any, status: str, reason: str, day: dt.date
                          ) -> tuple[domain.Life, domain.LifeDecision]:
    """A verifier's decision on a death_while_active item: alive, deceased or moved_out. A death
    confirmed dates from the death the programs reported (the dispute carries the earliest),
    not from the day of the decision: the exit falls in the month the person died, and nothing
    paid for the months between is taken for valid."""
    if status == "deceased":
        current = await status_of(uow.session, conflict.nik)
        if current.status in ("disputed", "deceased") and current.effective_date is not None:
            day = min(day, current.effective_date)
    fact = domain.LifeFact(status, "verifier", day, "verivali", DECISION_REASON[status], reason)
    return await apply_fact(uow, conflict.nik, fact, village_code=conflict.village_code, conflict_id=conflict.id)


async def status_of(session: Any, nik: str) -> domain.Life:
    return (await store.lives(session, [nik])).get(nik, domain.ALIVE)


async def announce_unannounced(uow: UnitOfWork, limit: int = 500) -> int:
    """Announce the stops no one has announced: a death Dukcapil reported for a NIK no program
    knew, whose first enrolment report committed at the same instant (neither transaction saw
    the other's row, docs/REGISTRY.md). Run as a singleton timer; returns how many it announced."""
    s = uow.session
    niks = await store.unannounced_lives(s, limit)
    if not niks:
        return 0
    people = await store.lock_people(s, niks)
    current = await store.lives(s, list(people), lock=True)
    programs = await store.active_programs(s, list(people))
    niks = [n for n in await store.unannounced_lives(s, limit) if n in people and n in current]
    items = [domain.life_change(n, people[n].village_code, domain.ALIVE, current[n], programs.get(n, []))
             for n in niks]
    await store.write_lives(s, [], [domain.life_row(n, current[n]) | {"conflict_id": None, "previous_status": "alive"}
                                    for n in niks])
    for i in range(0, len(items), 500):
        uow.emit(LifeStatusChanged(changes=[LifeStatusChange.model_validate(x) for x in items[i:i + 500]]))
    return len(items)


def register(reg: Registry) -> None:
    async def tick() -> None:
        async with reg.kit.unit_of_work() as uow:
            await announce_unannounced(uow)
    reg.kit.timer("life-unannounced", ANNOUNCE_EVERY, tick, singleton=True)
