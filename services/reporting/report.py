"""The monthly recap to Bappeda (rekap bulanan), read from the aggregates only.

Every query reads a few rows per area and month; none touches an event or a person.
"""
from __future__ import annotations

from collections import defaultdict

import sqlalchemy as sa

from contracts import wilayah
from contracts.envelope import utcnow
from services.reporting import domain
from services.reporting.store import LEVELS


async def _q(session, sql: str, **params) -> list[sa.Row]:
    return (await session.execute(sa.text(sql), params)).all()


async def monthly(session, period: str, *, companion_names: bool = False) -> dict:
    """The recap for `period` (YYYY-MM, already checked). Companions are numbered, not named,
    unless `companion_names` (coordinators behind login, operators' `sinergi reporting recap`):
    the recap and dashboard are public pages, and listed usernames were accounts to guess
    passwords for (issue 15)."""
    year = int(period[:4])
    p0, end = domain.year_start(period), domain.period_end(period)

    # people enrolled (active at the end of the month: someone deceased, moved out, ineligible or
    # disputed is counted under that status instead) and paid in the month, per program x village
    enrolled = await _q(session, """
        select programme_identifier, village_code, sum(people)::bigint from enrolment_flow
        where period <= :p and enrolment_status = 'active' group by 1, 2""", p=period)
    exits = await _q(session, """
        select programme_identifier, village_code, reason, sum(people)::bigint from enrolment_exits
        where period = :p group by 1, 2, 3""", p=period)
    paid = await _q(session, """
        select programme_identifier, village_code, sum(people)::bigint from people_paid
        where period = :p group by 1, 2""", p=period)
    money = await _q(session, """
        select programme_identifier, village_code, funding_source,
               sum(amount) filter (where period = :p)::bigint, sum(payments) filter (where period = :p)::bigint,
               sum(amount)::bigint
        from payment_monthly where period between :p0 and :p group by 1, 2, 3""", p=period, p0=p0)
    alloc = await _q(session, """
        select funding_source, programme_identifier, sum(amount)::bigint from allocations
        where fiscal_year = :y group by 1, 2""", y=year)
    complaints = await _q(session, """
        select village_code, level, sum(registered)::bigint, sum(referred_in)::bigint, sum(resolved)::bigint
        from complaint_monthly where period = :p group by 1, 2""", p=period)
    days = await _q(session, "select days, cases from complaint_days where period = :p", p=period)
    overdue = (await _q(session, """
        select count(*) from complaint_cases where due_on < :end and received_on <= :end
        and (resolved_on is null or resolved_on > :end)""", end=end))[0][0]
    visit_rows = await _q(session, """
        select companion, village_code, sum(due)::bigint, sum(done)::bigint from (
            select companion, village_code, assigned as due, 0 as done from assignment_flow where period <= :p
            union all
            select companion, village_code, 0, done from visit_monthly where period = :p) v
        group by 1, 2""", p=period)
    conditions = await _q(session, """
        select companion, aspect, condition, visits from visit_conditions where period = :p""", p=period)
    kube = await _q(session, """
        select k.village_code, k.members, g.funded, g.disbursed, g.due, g.repaid
        from kube_groups k join (
            select group_id, sum(funded)::bigint funded, sum(disbursed)::bigint disbursed, sum(due)::bigint due,
                   sum(repaid)::bigint repaid
            from kube_monthly where period <= :p group by group_id) g using (group_id)
        where k.formed_period <= :p""", p=period)

    programs: dict[str, dict] = defaultdict(lambda: {"enrolled": 0, "people_paid": 0, "amount_paid": 0,
                                                     "payments": 0})
    areas: dict[str, dict] = defaultdict(lambda: {"enrolled": 0, "people_paid": 0, "amount_paid": 0,
                                                  "complaints_received": 0, "complaints_resolved": 0,
                                                  "visits_due": 0, "visits_done": 0, "kube_groups": 0})
    for prog, village, n in enrolled:
        programs[prog]["enrolled"] += n
        areas[village]["enrolled"] += n
    for prog, village, n in paid:
        programs[prog]["people_paid"] += n
        areas[village]["people_paid"] += n

    sources: dict[str, dict] = defaultdict(lambda: {"allocation": 0, "realised": 0, "paid_in_period": 0,
                                                    "programs": defaultdict(lambda: {"allocation": 0, "realised": 0})})
    for prog, village, source, amount, n, ytd in money:
        programs[prog]["amount_paid"] += amount or 0
        programs[prog]["payments"] += n or 0
        areas[village]["amount_paid"] += amount or 0
        s = sources[source]
        s["realised"] += ytd
        s["paid_in_period"] += amount or 0
        s["programs"][prog]["realised"] += ytd
    for source, prog, amount in alloc:
        sources[source]["allocation"] += amount
        sources[source]["programs"][prog]["allocation"] += amount

    by_level = {lv: {"level": lv, "registered": 0, "referred_in": 0, "resolved": 0} for lv in LEVELS}
    for village, level, registered, referred_in, resolved in complaints:
        lv = by_level.setdefault(level, {"level": level, "registered": 0, "referred_in": 0, "resolved": 0})
        lv["registered"] += registered
        lv["referred_in"] += referred_in
        lv["resolved"] += resolved
        areas[village]["complaints_received"] += registered
        areas[village]["complaints_resolved"] += resolved

    companions: dict[str, dict] = defaultdict(lambda: {"due": 0, "done": 0, "conditions": {"fisik": {}, "sosial": {}}})
    for comp, village, due, done in visit_rows:
        companions[comp]["due"] += due
        companions[comp]["done"] += done
        areas[village]["visits_due"] += due
        areas[village]["visits_done"] += done
    for comp, aspect, cond, n in conditions:
        companions[comp]["conditions"].setdefault(aspect, {})[cond] = n

    kube_area: dict[str, dict] = defaultdict(lambda: {"groups": 0, "fund_amount": 0, "members": 0,
                                                      "loans_outstanding": 0, "due": 0, "repaid_on_due": 0,
                                                      "arrears": 0})
    for village, members, funded, disbursed, due, repaid in kube:
        k = kube_area[wilayah.kecamatan_of(village)]
        k["groups"] += 1
        k["fund_amount"] += funded
        k["members"] += members
        k["loans_outstanding"] += max(disbursed - repaid, 0)
        k["due"] += due
        k["repaid_on_due"] += min(repaid, due)
        k["arrears"] += max(due - repaid, 0)
        areas[village]["kube_groups"] += 1

    return {
        "period": period,
        "generated_at": utcnow().isoformat(),
        "programs": [{"programme_identifier": p} | v for p, v in sorted(programs.items())],
        "funding_sources": [
            {"funding_source": s, "label": domain.SOURCE_LABELS.get(s, s), "allocation": v["allocation"], "realised": v["realised"],
             "paid_in_period": v["paid_in_period"], "realisation_pct": domain.percent(v["realised"], v["allocation"]),
             "programs": [{"programme_identifier": p, **pv, "realisation_pct": domain.percent(pv["realised"],
                                                                                              pv["allocation"])}
                          for p, pv in sorted(v["programs"].items())]}
            for s, v in sorted(sources.items())],
        "complaints": {
            "received": sum(lv["registered"] for lv in by_level.values()),
            "resolved": sum(lv["resolved"] for lv in by_level.values()),
            "referred": {lv: by_level[lv]["referred_in"] for lv in by_level if lv != "village"},
            "overdue": overdue,
            "median_days_to_resolve": domain.median_from_histogram({d: n for d, n in days}),
            "by_level": list(by_level.values()),
        },
        "visits": _visits(companions, companion_names),
        "kube": [{"kecamatan_code": kec, "kecamatan_name": wilayah.name_of(kec), "groups": v["groups"],
                  "fund_amount": v["fund_amount"], "members": v["members"],
                  "loans_outstanding": v["loans_outstanding"], "arrears": v["arrears"],
                  "repayment_rate_pct": domain.percent(v["repaid_on_due"], v["due"])}
                 for kec, v in sorted(kube_area.items())],
        "exits": _exits(exits),
        "areas": _areas(areas),
    }


def _exits(found: list[sa.Row]) -> dict:
    """People who left a program in the month, by reason (deceased, moved_out, ineligible): in
    all, per program, and per program and village with its kecamatan."""
    reasons = domain.EXIT_REASONS
    rows: dict[tuple[str, str], dict] = defaultdict(lambda: dict.fromkeys(reasons, 0))
    for prog, village, reason, n in found:
        if reason in reasons:
            rows[(prog, village)][reason] += n
    per_program: dict[str, dict] = defaultdict(lambda: dict.fromkeys(reasons, 0))
    detail = []
    for (prog, village), v in sorted(rows.items(), key=lambda kv: (wilayah.kecamatan_of(kv[0][1]), kv[0][1],
                                                                   kv[0][0])):
        if not any(v.values()):
            continue  # an exit a verifier overturned
        for reason, n in v.items():
            per_program[prog][reason] += n
        kec, kec_name, _code, village_name = domain.area_names(village)
        detail.append({"programme_identifier": prog, "kecamatan_code": kec, "kecamatan_name": kec_name,
                       "village_code": village, "village_name": village_name} | v)
    return {r: sum(p[r] for p in per_program.values()) for r in reasons} | {
        "programs": [{"programme_identifier": p} | v for p, v in sorted(per_program.items())],
        "villages": detail}


def _visits(companions: dict[str, dict], names: bool) -> dict:
    due = sum(c["due"] for c in companions.values())
    done = sum(c["done"] for c in companions.values())
    return {"due": due, "done": done, "coverage_pct": domain.percent(done, due),
            "companions": [{"companion": c if names else f"pendamping {i}", "due": v["due"], "done": v["done"],
                            "coverage_pct": domain.percent(v["done"], v["due"]), "conditions": v["conditions"]}
                           for i, (c, v) in enumerate(sorted(companions.items()), 1)]}


def _areas(villages: dict[str, dict]) -> list[dict]:
    """Kecamatan with their villages, each with its name from the region list, and subtotals."""
    kec: dict[str, dict] = {}
    for code, v in sorted(villages.items()):
        if not any(v.values()):
            continue
        k = wilayah.kecamatan_of(code)
        entry = kec.setdefault(k, {"kecamatan_code": k, "kecamatan_name": wilayah.name_of(k),
                                   "totals": dict.fromkeys(v, 0), "villages": []})
        for key, n in v.items():
            entry["totals"][key] += n
        entry["villages"].append({"village_code": code, "village_name": wilayah.name_of(code)} | v)
    return list(kec.values())


async def complaint_trend(session, period: str, months: int = 12) -> list[dict]:
    """Complaints received (at desa) and resolved per month, for the `months` ending at `period`."""
    periods = domain.periods_back(period, months)
    rows = {p: (a, r) for p, a, r in await _q(session, """
        select period, sum(registered)::bigint, sum(resolved)::bigint
        from complaint_monthly where period between :a and :b group by period""", a=periods[0], b=period)}
    return [{"period": p, "received": (rows.get(p) or (0, 0))[0] or 0, "resolved": (rows.get(p) or (0, 0))[1] or 0}
            for p in periods]
