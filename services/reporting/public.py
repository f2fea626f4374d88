"""The public realisation page's figures (issue 14): money paid per funding source and per
village, for the APBDes-style transparency tables a village hall pins up.

Read from the aggregates only (payment_monthly, people_paid, allocations): no NIK, no name,
no staff. A village's count of people paid is shown only from SMALL_CELL up: one or two
people paid in a village could be recognised by their neighbours, so fewer read "< 3".
"""
from __future__ import annotations

from collections import defaultdict

import sqlalchemy as sa

from services.reporting import domain, report

SMALL_CELL = 3
UNKNOWN = "Desa tidak tercatat"


async def realisation(session, period: str) -> dict:
    """Funding sources as the dashboard shows them (allocation, realised this year, this month)
    and one row per village: realised this year per source, paid this month, people paid."""
    recap = await report.monthly(session, period)
    money = (await session.execute(sa.text("""
        select village_code, funding_source, sum(amount) filter (where period = :p)::bigint, sum(amount)::bigint
        from payment_monthly where period between :p0 and :p group by 1, 2"""),
        {"p": period, "p0": domain.year_start(period)})).all()
    people = dict((await session.execute(sa.text("""
        select village_code, sum(people)::bigint from people_paid where period = :p group by 1"""),
        {"p": period})).all())
    villages: dict[str, dict] = defaultdict(lambda: {"by_source": defaultdict(int), "realised": 0, "month": 0})
    for village, source, month, ytd in money:
        v = villages[village]
        v["by_source"][source] += ytd or 0
        v["realised"] += ytd or 0
        v["month"] += month or 0
    sources = [s["funding_source"] for s in recap["funding_sources"]]
    rows = []
    for village, v in sorted(villages.items(), key=lambda kv: (not kv[0], domain.area_names(kv[0])[1] or "", kv[0])):
        # settlements from before disbursement named the payee's village count under ""
        kec, kec_name, _code, name = domain.area_names(village) if village else ("", "-", "", UNKNOWN)
        n = people.get(village, 0)
        rows.append({"village_code": village, "village_name": name or village, "kecamatan_code": kec,
                     "kecamatan_name": kec_name or kec, "by_source": [v["by_source"].get(s, 0) for s in sources],
                     "realised": v["realised"], "paid_in_period": v["month"],
                     "people_paid": n if n >= SMALL_CELL or n == 0 else None})
    totals = {"by_source": [sum(r["by_source"][i] for r in rows) for i in range(len(sources))],
              "realised": sum(r["realised"] for r in rows), "paid_in_period": sum(r["paid_in_period"] for r in rows)}
    return {"period": period, "funding_sources": recap["funding_sources"], "villages": rows, "totals": totals,
            "small_cell": SMALL_CELL}
