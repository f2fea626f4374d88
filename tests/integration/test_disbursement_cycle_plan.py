"""The cycle's per-chunk lookups stay index ranges on real PostgreSQL (issue 12, speed).

A chunk asks "who in this NIK range already has an instruction in this cycle (any status)". The
only index on (program, period, NIK) is partial (live instructions, for the uniqueness a retry
needs), and a query without the status terms could not use it: PostgreSQL scanned every
instruction once per chunk, so a million-person cycle grew quadratically. This test reads the
plan, not a time."""
from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from services.disbursement import cycles
from services.kit.migrations import migrate

pytestmark = pytest.mark.integration


def _nik(i: int) -> str:
    return f"3317{i:012d}"


async def test_issued_lookup_is_two_index_ranges_and_sees_every_status(settings):
    url = settings.db_url("disbursement")
    await migrate("disbursement", url)
    engine = create_async_engine(url)
    try:
        async with engine.begin() as c:
            # 120,000 instructions of this cycle, even NIKs for this program, odd ones for another of the
            # same exclusivity class; every 1,000th failed and every 1,000th + 1 cancelled
            await c.execute(sa.text("""
                insert into instructions (id, programme_identifier, period, nik, pseudonym, amount, channel,
                                          exclusivity_class, cycle_id, status)
                select gen_random_uuid(), case when g % 2 = 0 then 'kamalia_merekah' else 'lansia_sejahtera' end,
                       '2026-11', '3317' || lpad(g::text, 12, '0'), 'x', 600000, 'pos',
                       'cash_elderly', gen_random_uuid(),
                       case when g % 1000 = 0 then 'failed' when g % 1000 = 1 then 'cancelled' else 'issued' end
                from generate_series(1, 120000) g"""))
            await c.execute(sa.text("analyze instructions"))
            rng = {"lo": _nik(40_000), "hi": _nik(49_999), "per": "2026-11"}
            mine = {_nik(i) for i in range(40_000, 50_000, 2)}
            for key, params, want in (("program", rng | {"p": "kamalia_merekah"}, mine),
                                      ("class", rng | {"cls": "cash_elderly"}, {_nik(i) for i in range(40_000, 50_000)})):
                sql = cycles.ISSUED_SQL[key]
                found = set((await c.execute(sa.text(sql), params)).scalars())
                # every status counts: a failed instruction is paid again by a retry, a cancelled one
                # is final; the cycle issues neither a second time
                assert found == want, key
                plan = json.dumps((await c.execute(sa.text("explain (format json) " + sql), params)).scalar())
                assert "Seq Scan" not in plan, (key, plan)
                assert "instruction_not_live" in plan, (key, plan)
                assert ("instruction_live" if key == "program" else "instruction_exclusivity") in plan, (key, plan)
    finally:
        await engine.dispose()
