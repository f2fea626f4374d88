"""A stateful property test of the ledger and budgets on a real PostgreSQL (Hypothesis
RuleBasedStateMachine): allocate, run cycles, pay, fail, retry with the same key, crash
mid-transaction and reload. Invariants: debits equal credits and every account reconciles,
spend stays within ceilings, retries change nothing."""
from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings as hsettings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from contracts.disbursement import FundingSource, Settlement, SettlementStatus
from services.disbursement import budgets, cycles, ledger, store
from services.disbursement.app import compose
from services.disbursement.config import DisbursementSettings
from services.kit.db import drop_database
from services.kit.migrations import migrate
from services.kit.settings import Settings
from tests import disbursement_support as ds

pytestmark = pytest.mark.integration
AMOUNT = 100_000
PEOPLE = ds.people(8, seed=21)
RULES = {"name": "t", "amount": {"kind": "fixed", "amount": AMOUNT}, "require_verified": False,
         "funding_mode": "order", "funding": [{"source": "csr"}, {"source": "baznas"}], "channel": "bank"}
SPLIT = {**RULES, "funding_mode": "split", "funding": [{"source": "csr", "share": 70}, {"source": "baznas", "share": 30}]}


class CrashInTransaction(Exception):
    pass


def make_machine(db_settings: Settings, loop: asyncio.AbstractEventLoop):
    cfg = DisbursementSettings(checkpoint_every=7, resume_cycles=False, _env_file=None)

    class LedgerMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            # the service's composition, not started: units of work on its own database
            self.deps = compose(db_settings, cfg)
            self.sessions = self.deps.kit.sessions
            self.run(self._reset())
            self.ceilings: dict[str, int] = {"csr": 0, "baznas": 0}
            self.settled: dict[uuid.UUID, str] = {}

        def run(self, coro):
            return loop.run_until_complete(coro)

        async def _reset(self) -> None:
            async with self.sessions.begin() as s:
                tables = ", ".join(t.name for t in store.metadata.sorted_tables)
                await s.execute(sa.text(f"truncate {tables}"))
                await s.execute(sa.insert(store.programs), [
                    {"code": "prog_a", "rules": RULES, "updated_by": "t"},
                    {"code": "prog_b", "rules": SPLIT, "updated_by": "t"}])
                await s.execute(sa.insert(store.enrolments), [
                    {"nik": p["nik"], "programme_identifier": prog, "no_kk": p["no_kk"],
                     "village_code": p["village_code"], "birth_date": p["birth_date"], "enrolment_status": "active",
                     "status_change_date": dt.date(2026, 1, 1)} for p in PEOPLE for prog in ("prog_a", "prog_b")])

        def teardown(self) -> None:
            self.run(self.deps.kit.engine.dispose())

        async def _instructions(self):
            async with self.sessions() as s:
                return (await s.execute(sa.select(store.instructions.c.id, store.instructions.c.status))).all()

        async def _allocs(self):
            async with self.sessions() as s:
                return (await s.execute(sa.select(store.allocations))).all()

        @rule(source=st.sampled_from(["csr", "baznas"]), program=st.sampled_from(["prog_a", "prog_b"]),
              ceiling=st.integers(0, 12) .map(lambda n: n * AMOUNT // 2))
        def allocate(self, source, program, ceiling):
            async def go():
                return await budgets.set_allocation(self.deps, FundingSource(source), program, 2026, ceiling,
                                                    "test", "t")
            before = {a.id: a for a in self.run(self._allocs())}
            try:
                out = self.run(go())
            except budgets.BudgetError:
                aid = next(a for a in before.values() if a.source == source and a.programme_identifier == program)
                assert ceiling < aid.reserved  # refused only when below what is reserved
                return
            assert out["ceiling"] == ceiling

        @rule(program=st.sampled_from(["prog_a", "prog_b"]), month=st.integers(1, 3))
        def run_cycle(self, program, month):
            period = f"2026-{month:02d}"
            first = self.run(cycles.run(self.deps, program, period, "t"))
            again = self.run(cycles.run(self.deps, program, period, "t"))
            assert again["created"] == 0 and again["instructions"] == first["instructions"]  # retry: nothing new

        @precondition(lambda self: True)
        @rule(data=st.data(), status=st.sampled_from(["paid", "failed"]), retry=st.booleans())
        def settle(self, data, status, retry):
            issued = [i for i in self.run(self._instructions()) if i.status == "issued"]
            if not issued:
                return
            ins = data.draw(st.sampled_from(issued))
            msg = Settlement(settlement_id=str(uuid.uuid4()), instruction_id=ins.id, status=SettlementStatus(status),
                             reason="closed" if status == "failed" else None,
                             settled_at=dt.datetime.now(dt.UTC))

            async def go():
                async with self.deps.kit.unit_of_work() as uow:
                    return (await budgets.settle(uow, cfg, [msg]))[0]
            assert self.run(go()) == status
            self.settled[ins.id] = status
            if retry:  # the channel sends it again later: nothing changes
                before = self.run(self._allocs())
                assert self.run(go()) == "duplicate"
                assert self.run(self._allocs()) == before

        @rule(data=st.data())
        def settle_a_mixed_batch(self, data):
            """One batch as the consumer hands it over: valid reports, a contradiction, an unknown
            instruction and a failure without a reason. The refused ones change nothing."""
            rows = self.run(self._instructions())
            issued = [i for i in rows if i.status == "issued"]
            done = [i for i in rows if i.status != "issued"]
            now = dt.datetime.now(dt.UTC)

            def report(iid, status, reason=None):
                return Settlement(settlement_id=str(uuid.uuid4()), instruction_id=iid,
                                  status=SettlementStatus(status), reason=reason, settled_at=now)
            picked = data.draw(st.lists(st.sampled_from(issued), unique_by=lambda i: i.id, max_size=3)) if issued else []
            batch, expected = [], []
            for i in picked:
                status = data.draw(st.sampled_from(["paid", "failed"]))
                batch.append(report(i.id, status, "closed" if status == "failed" else None))
                expected.append(status)
                # the same instruction again in the same batch, contradicting: refused
                other = "failed" if status == "paid" else "paid"
                batch.append(report(i.id, other, "late"))
                expected.append("rjct.settlement.conflict")
            batch.append(report(uuid.uuid4(), "paid"))
            expected.append("rjct.instruction.unknown")
            if issued and len(picked) < len(issued):
                rest = next(i for i in issued if i not in picked)
                batch.append(report(rest.id, "failed"))
                expected.append("rjct.settlement.reason_missing")
            if done:
                batch.append(report(done[0].id, done[0].status, "again"))
                expected.append("duplicate")
            before = self.run(self._allocs())

            async def go():
                async with self.deps.kit.unit_of_work() as uow:
                    return await budgets.settle(uow, cfg, batch)
            outcomes = self.run(go())
            assert [o if isinstance(o, str) else o.code for o in outcomes] == expected
            for i, status in zip(picked, expected[0::2], strict=False):
                self.settled[i.id] = status
            if not picked:
                assert self.run(self._allocs()) == before

        @rule()
        def crash_mid_settlement_and_reload(self):
            issued = [i for i in self.run(self._instructions()) if i.status == "issued"]
            if not issued:
                return
            before = (self.run(self._allocs()), sorted(self.run(self._instructions())))

            async def go():
                async with self.deps.kit.unit_of_work() as uow:
                    await budgets.settle(uow, cfg, [Settlement(
                        settlement_id="x", instruction_id=issued[0].id, status=SettlementStatus.paid,
                        settled_at=dt.datetime.now(dt.UTC))])
                    raise CrashInTransaction()
            with pytest.raises(CrashInTransaction):
                self.run(go())
            # the process dies: a new composition (engine), state reloaded from the database
            self.run(self.deps.kit.engine.dispose())
            self.deps = compose(db_settings, cfg)
            self.sessions = self.deps.kit.sessions
            assert (self.run(self._allocs()), sorted(self.run(self._instructions()))) == before

        @invariant()
        def books_balance(self):
            async def go():
                async with self.sessions() as s:
                    return await ledger.prove(s)
            proof = self.run(go())
            assert proof["balanced"], proof

        @invariant()
        def within_ceilings_and_consistent(self):
            for a in self.run(self._allocs()):
                assert 0 <= a.paid <= a.reserved <= a.ceiling
            for iid, status in self.settled.items():
                assert dict(self.run(self._instructions()))[iid] == status

    return LedgerMachine



def test_ledger_state_machine(infra):
    nats_url, db_url = infra
    run = "t" + uuid.uuid4().hex[:10]
    s = Settings(nats_url=nats_url, database_url=db_url, namespace=run, db_prefix=f"sinergi_{run}_", _env_file=None)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(migrate("disbursement", s.db_url("disbursement")))
        machine = make_machine(s, loop)
        machine.TestCase.settings = hsettings(max_examples=20, stateful_step_count=12, deadline=None,
                                              suppress_health_check=list(HealthCheck))
        machine.TestCase().runTest()
    finally:
        loop.run_until_complete(drop_database(s.db_url("disbursement")))
        loop.close()
