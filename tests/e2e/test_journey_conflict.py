"""Journey 4 (issue 17): programs disagree. PKH's agency reports a woman deceased while Kamalia
Merekah has her active: the registry puts her in dispute, and no program pays her while it
lasts; a verifier visits, finds her alive and says so, and the next cycle pays her again (no
arrears: Kamalia's rules have none). The recap never counted her as an exit, and counts her
active again. All four services run together (journey_support.py), driven only from outside."""
from __future__ import annotations

import pytest

from tests.conftest import eventually
from tests.e2e.journey_support import (POVERTY_LINE, decide_dispute, elderly, life_status, months_from_now,
                                       program_row, reported_by, run_cycle, set_up_kamalia_for, verify, whole_system)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

VILLAGE = "3317022003"  # Pondokrejo, kecamatan Bulu
KAMALIA = "kamalia_merekah"


async def test_conflicting_reports_hold_payment_until_a_verifier_decides_alive(settings, tmp_path):
    this, nxt, today = months_from_now()
    async with whole_system(settings, tmp_path) as system:
        await set_up_kamalia_for(system, [this, nxt], people=2)
        sumi, rukmini = elderly(2, VILLAGE, first_serial=21)
        await system.enrol("pkh", [reported_by("pkh", sumi)])
        await system.enrol(KAMALIA, [sumi, rukmini])
        await verify(system, [sumi["nik"], rukmini["nik"]])

        async def would_pay(n: int) -> bool:
            r = await system.call("disbursement", "POST", f"/cycles/{KAMALIA}/{this}/preview", as_="pm-dinsos")
            return bool(r.json()["would_issue"] == n)
        await eventually(lambda: would_pay(2), timeout=20, interval=0.2)

        # PKH says Mbah Sumi died on the first of the month; Kamalia has her active
        first = today.replace(day=1)
        await system.enrol("pkh", [reported_by("pkh", sumi, enrolment_status="deceased",
                                               status_change_date=first.isoformat())])
        await eventually(lambda: _is(system, sumi["nik"], "disputed"), timeout=20)
        await eventually(lambda: would_pay(1), timeout=20, interval=0.2)  # held
        await run_cycle(system, KAMALIA, this)
        pos = await system.bank("pos").wait_for(lambda b: len(b.disbursements) == 1)
        assert pos.to(sumi["nik"]) == [] and len(pos.to(rukmini["nik"])) == 1
        await pos.answer(pos.unanswered())

        async def held_in_the_recap() -> dict | None:
            r = await system.recap(this)
            return r if program_row(r, KAMALIA)["people_paid"] == 1 else None
        recap = await eventually(held_in_the_recap, timeout=30, interval=0.2)
        assert program_row(recap, KAMALIA)["enrolled"] == 1  # disputed: not an active beneficiary
        assert recap["exits"]["deceased"] == 0  # held, not gone

        # the verifier visits: she is alive, PKH's report was wrong
        await decide_dispute(system, sumi["nik"], "alive", "kunjungan rumah: masih hidup, laporan PKH keliru")
        await eventually(lambda: _is(system, sumi["nik"], "alive"), timeout=20)
        run = await run_cycle(system, KAMALIA, nxt, expect_people=2)
        assert (run["created"], run["total"]) == (2, 2 * POVERTY_LINE)  # her month in dispute is not paid late
        await pos.wait_for(lambda b: len(b.disbursements) == 3)
        (to_sumi,) = pos.to(sumi["nik"])
        assert to_sumi["amount"] == POVERTY_LINE
        await pos.answer(pos.unanswered())

        async def paid_again() -> dict | None:
            r = await system.recap(nxt)
            return r if program_row(r, KAMALIA)["people_paid"] == 2 else None
        after = await eventually(paid_again, timeout=30, interval=0.2)
        assert program_row(after, KAMALIA)["enrolled"] == 2
        assert (await system.recap(this))["exits"]["deceased"] == 0
        await pos.close()


async def _is(system, nik: str, status: str) -> bool:
    return await life_status(system, nik) == status

