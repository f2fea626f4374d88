"""Journey 1 (issue 17): an agency's enrolments reach a payment and the monthly recap, through
all four services and nothing else: the registry takes the reports, a verifier verifies, one
program manager prepares the cycle and another approves it, the post office gets the
instructions and answers paid, and reporting's realisation per source shows the money and the
recap counts the people."""
from __future__ import annotations

import pytest

from tests.conftest import eventually
from tests.e2e.journey_support import POVERTY_LINE, elderly, program_row, run_cycle, set_up_kamalia, verify, whole_system

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

VILLAGE = "3317012001"  # Ronggo Mulyo, kecamatan Sumber
PERIOD = "2026-11"


async def test_agency_enrolment_verivali_cycle_settlement_recap(settings, tmp_path):
    async with whole_system(settings, tmp_path) as system:
        await set_up_kamalia(system, 2026, ceiling=12 * 3 * POVERTY_LINE)
        reports = elderly(3, VILLAGE)
        receipts = await system.enrol("kamalia_merekah", reports)
        assert {r["status"] for r in receipts.values()} == {"succ"}, receipts
        niks = [r["nik"] for r in reports]
        await verify(system, niks)

        run = await run_cycle(system, "kamalia_merekah", PERIOD, expect_people=3)
        assert (run["created"], run["total"]) == (3, 3 * POVERTY_LINE)
        assert run["prepared_by"] == "pm-dinsos" and run["approved_by"] == "kadis"

        pos = await system.bank("pos").wait_for(lambda b: len(b.disbursements) == 3)
        assert sorted(d["payee_id"] for d in pos.disbursements.values()) == sorted(niks)
        assert {d["amount"] for d in pos.disbursements.values()} == {POVERTY_LINE}
        assert {d["payee_fa"] for d in pos.disbursements.values()} == {f"cash:POS-{i:05d}@pos" for i in (1, 2, 3)}
        await pos.answer(list(pos.disbursements))

        async def paid_in_the_recap():
            r = await system.recap(PERIOD)
            return r if program_row(r, "kamalia_merekah")["people_paid"] == 3 else None
        recap = await eventually(paid_in_the_recap, timeout=30, interval=0.2)
        assert program_row(recap, "kamalia_merekah") == {
            "programme_identifier": "kamalia_merekah", "enrolled": 3, "people_paid": 3,
            "amount_paid": 3 * POVERTY_LINE, "payments": 3}
        (csr,) = [s for s in recap["funding_sources"] if s["funding_source"] == "csr"]
        assert (csr["allocation"], csr["realised"], csr["paid_in_period"]) == (
            12 * 3 * POVERTY_LINE, 3 * POVERTY_LINE, 3 * POVERTY_LINE)
        assert csr["realisation_pct"] == 8.33  # one month of twelve
        (kec,) = recap["areas"]
        assert kec["kecamatan_name"] == "Sumber"
        (village,) = kec["villages"]
        assert (village["village_code"], village["enrolled"], village["people_paid"]) == (VILLAGE, 3, 3)
        await pos.close()
