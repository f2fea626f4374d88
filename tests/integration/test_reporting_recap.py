"""The monthly recap on a known data set, published to the real streams, against figures
computed by hand (see the comments: each number is derived there, not by the code)."""
from __future__ import annotations

import datetime as dt
import json
import uuid

import nats.errors
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from contracts.disbursement import (AllocationSet, FundingLine, KubeGrantMade, KubeGroupRegistered,
                                    KubeInstalmentPaid, KubeLoanIssued, SettlementRecorded)
from contracts.envelope import envelope
from contracts.intake import CaseEscalated, CaseReferred, CaseRegistered, CaseResolved, CompanionAssigned, VisitReportFiled
from contracts.registry import EnrolmentChange, EnrolmentsChanged
from tests import factories
from tests.conftest import eventually

pytestmark = pytest.mark.integration

A, B, C = "3317012001", "3317012002", "3317022003"  # Ronggo Mulyo, Logede (kec. Sumber); Pondokrejo (kec. Bulu)
PERIOD = "2026-03"


WIB = dt.timezone(dt.timedelta(hours=7))
_chain = iter(range(1, 10**6))
ZERO = "0" * 64


def at(day: str, hour: int = 9) -> dt.datetime:
    """A moment in Rembang's time (WIB)."""
    return dt.datetime.fromisoformat(day).replace(hour=hour, tzinfo=WIB)


async def publish(js, names, event, *, event_id: uuid.UUID | None = None, msg_id: bool = True,
                  occurred_at: dt.datetime | None = None) -> bytes:
    """One event in its envelope on its real subject, as the producing service's outbox would."""
    body = envelope(event, event.domain, event_id=event_id, occurred_at=occurred_at).model_dump_json().encode()
    eid = json.loads(body)["event_id"]
    await js.publish(names.event(event.event_type), body, headers={"Nats-Msg-Id": eid} if msg_id else None)
    return body


def _enrolment(n: int, program: str, village: str, status: str, day: str, previous: str | None = None):
    birth = dt.date(1950, 1, n)
    return EnrolmentChange(nik=_nik(village, n), no_kk=factories.kk(village, serial=n),
                           village_code=village, birth_date=birth, programme_identifier=program,
                           enrolment_status=status, previous_status=previous,
                           status_change_date=dt.date.fromisoformat(day), reported_by=program)


def _nik(village: str, n: int) -> str:
    return factories.nik(village, dt.date(1950, 1, n), "M", serial=n)


def _audit() -> dict:
    return {"chain_seq": next(_chain), "prev_hash": ZERO}


def _paid(ref: str, program: str, period: str, *lines: tuple[str, int], status: str = "paid"):
    return SettlementRecorded(**_audit(), instruction_id=uuid.uuid4(), pseudonym=f"pseudo-{ref}",
                              programme_identifier=program, period=period, status=status,
                              amount=sum(a for _s, a in lines), reason=None if status == "paid" else "rekening tutup",
                              funding=[FundingLine(source=src, allocation_id=uuid.uuid4(), amount=a) for src, a in lines],
                              settled_at=at(f"{period}-25"))


def _allocation(source: str, program: str, year: int, ceiling: int, previous: int | None = None):
    return AllocationSet(**_audit(), allocation_id=uuid.uuid4(), source=source, programme_identifier=program,
                         fiscal_year=year, ceiling=ceiling, previous_ceiling=previous, reason="APBD", set_by="pm-1")


async def publish_known_dataset(js, names) -> int:
    """Publishes the data set; returns how many events reporting must fold in."""
    ev: list[tuple] = []  # (event, occurred_at)
    # enrolments. End of March: pkh p1 (A), p3 (B) active, p2 suspended 15 Mar, p4 starts in April;
    # kamalia p5, p6 (C) active, p7 (B) exited in February. Two registry batches (at most one
    # change per person and program in each): the enrolments, then the status changes.
    enrolled = EnrolmentsChanged(changes=[
        _enrolment(1, "pkh", A, "active", "2026-01-10"),
        _enrolment(2, "pkh", A, "active", "2026-02-05"),
        _enrolment(3, "pkh", B, "active", "2026-03-01"),
        _enrolment(4, "pkh", C, "active", "2026-04-02"),
        _enrolment(5, "kamalia_merekah", C, "active", "2025-12-01"),
        _enrolment(6, "kamalia_merekah", C, "active", "2026-03-31"),
        _enrolment(7, "kamalia_merekah", B, "active", "2026-02-01")])
    changed = EnrolmentsChanged(changes=[
        _enrolment(2, "pkh", A, "suspended", "2026-03-15", "active"),
        _enrolment(7, "kamalia_merekah", B, "exited", "2026-02-20", "active")])
    ev += [(enrolled, None), (changed, None)]
    # settlements. March: pkh r1 twice (1 person, 2 payments), r3 split APBN 400k + APBD Kab 200k;
    # kamalia r5 (CSR), r6 (Baznas; a second, failed one does not count); rtlh r8 199,988,000 (APBDes).
    # Earlier: pkh r1 Feb (in the year to date), Dec 2025 (not); rtlh r8 January.
    ev += [(e, None) for e in (
        _paid("r1", "pkh", "2026-03", ("apbn", 600_000)),
        _paid("r1", "pkh", "2026-03", ("apbn", 600_000)),
        _paid("r3", "pkh", "2026-03", ("apbn", 400_000), ("apbd_kabupaten", 200_000)),
        _paid("r5", "kamalia_merekah", "2026-03", ("csr", 450_000)),
        _paid("r6", "kamalia_merekah", "2026-03", ("baznas", 450_000)),
        _paid("r6", "kamalia_merekah", "2026-03", ("baznas", 450_000), status="failed"),
        _paid("r1", "pkh", "2026-02", ("apbn", 600_000)),
        _paid("r1", "pkh", "2025-12", ("apbn", 600_000)),
        _paid("r8", "rtlh", "2026-01", ("apbdes", 199_988_000)),
        _paid("r8", "rtlh", "2026-03", ("apbdes", 199_988_000)),
        _allocation("apbdes", "rtlh", 2026, 859_588_000),
        _allocation("apbn", "pkh", 2026, 6_000_000), _allocation("apbn", "pkh", 2026, 10_000_000, 6_000_000),
        _allocation("apbd_kabupaten", "pkh", 2026, 1_000_000),
        _allocation("csr", "kamalia_merekah", 2026, 1_000_000), _allocation("apbn", "pkh", 2025, 5_000_000))]

    # complaints (Puskesos cases) and the SLRT chain
    case = {k: uuid.uuid4() for k in ("c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8")}
    common = {"category": "not_receiving_aid", "actor": "staff-1"}

    def reg(c, v, on, due, hour=9):
        return (CaseRegistered(case_id=case[c], ticket=f"PSK-{c}", kind="complaint", channel="walk_in",
                               village_code=v, level="village", status="open", person_status="found",
                               due_at=at(due, 16), **common), at(on, hour))

    def ref(c, v, level, frm, on, due, escalated=False):
        kw = dict(case_id=case[c], village_code=v, from_level=frm, level=level, status="open", due_at=at(due, 16),
                  **common)
        if escalated:
            kw.pop("actor")
            return (CaseEscalated(overdue_since=at(on, 0), **kw), at(on, 1))
        return (CaseReferred(**kw), at(on))

    def res(c, v, on, level="village"):
        return (CaseResolved(case_id=case[c], village_code=v, level=level, outcome="resolved", **common), at(on))
    ev += [
        reg("c1", A, "2026-03-02", "2026-03-16"), res("c1", A, "2026-03-05"),                       # 3 days
        reg("c2", A, "2026-03-03", "2026-03-17"), ref("c2", A, "kecamatan", "village", "2026-03-04", "2026-03-18"),
        res("c2", A, "2026-03-13", "kecamatan"),                                                    # 10 days
        reg("c3", B, "2026-03-10", "2026-03-24"), ref("c3", B, "kecamatan", "village", "2026-03-11", "2026-03-20"),
        # c4: 01:00 WIB on 1 March is still 28 February in UTC; it belongs to March
        reg("c4", C, "2026-03-01", "2026-04-08", hour=1),
        res("c5", C, "2026-03-20"), reg("c5", C, "2026-02-10", "2026-02-24"),                       # 38 days, out of order
        reg("c6", B, "2026-02-01", "2026-02-15"), res("c6", B, "2026-02-10"),                       # February only
        reg("c7", A, "2026-01-05", "2026-01-19"),                                                   # open since Jan: overdue
        reg("c8", B, "2026-03-01", "2026-03-08"),
        ref("c8", B, "kecamatan", "village", "2026-03-09", "2026-03-23", escalated=True),
        ref("c8", B, "kabupaten", "kecamatan", "2026-03-24", "2026-04-07", escalated=True),       # open, not yet due
    ]
    # home visits: ani has 3 active assignments in March (a4 ended in February), did 2 visits;
    # budi has 1 (since November), did 1 (filed twice); v5 counts for February
    asg = {k: uuid.uuid4() for k in ("a1", "a2", "a3", "a4", "a5")}

    def assign(a, comp, v, n, on, active=True):
        return (CompanionAssigned(assignment_id=asg[a], companion=comp, nik=_nik(v, n), village_code=v,
                                  active=active, actor="coord-1"), at(on))

    def visit(vid, comp, v, n, period, phys, soc):
        return (VisitReportFiled(visit_id=vid, companion=comp, nik=_nik(v, n), village_code=v,
                                 visit_date=dt.date.fromisoformat(f"{period}-10"), period=period,
                                 physical_condition=phys, social_condition=soc, aid_use="as_intended"), None)
    v4 = uuid.uuid4()
    ev += [assign("a1", "pdp-ani", A, 11, "2026-01-05"), assign("a2", "pdp-ani", A, 12, "2026-02-05"),
           assign("a3", "pdp-ani", B, 13, "2026-03-05"), assign("a4", "pdp-ani", B, 14, "2026-01-05"),
           assign("a4", "pdp-ani", B, 14, "2026-02-20", active=False),
           assign("a1", "pdp-ani", A, 11, "2026-03-01"),  # the same state again changes nothing
           assign("a5", "pdp-budi", C, 15, "2025-11-03"),
           visit(uuid.uuid4(), "pdp-ani", A, 11, "2026-03", "good", "good"),
           visit(uuid.uuid4(), "pdp-ani", A, 12, "2026-03", "fair", "good"),
           visit(v4, "pdp-budi", C, 15, "2026-03", "critical", "fair"),
           visit(v4, "pdp-budi", C, 15, "2026-03", "critical", "fair"),
           visit(uuid.uuid4(), "pdp-budi", C, 15, "2026-02", "good", "good")]
    # KUBE: g1 (A) and g2 (B) in kec. Sumber; g3 (C) is registered and funded in April
    g = {k: uuid.uuid4() for k in ("g1", "g2", "g3")}
    loan = {k: uuid.uuid4() for k in ("g1", "g2")}

    def group(k, v, members, on):
        return (KubeGroupRegistered(**_audit(), group_id=g[k], name=f"KUBE {k}", village_code=v,
                                    members=[f"m-{k}-{i}" for i in range(members)]), at(on))

    def grant(k, amount, on):
        return (KubeGrantMade(**_audit(), grant_id=uuid.uuid4(), group_id=g[k], fiscal_year=int(on[:4]),
                              funding=FundingLine(source="apbd_kabupaten", allocation_id=uuid.uuid4(), amount=amount)),
                at(on))

    def lend(k, principal, instalment, on, first_due):
        return (KubeLoanIssued(**_audit(), loan_id=loan[k], group_id=g[k], member=f"m-{k}-0", principal=principal,
                               instalment=instalment, term_months=10,
                               first_due=dt.date.fromisoformat(first_due)), at(on))

    def repay(k, amount, on):
        return (KubeInstalmentPaid(**_audit(), payment_id=uuid.uuid4(), loan_id=loan[k], group_id=g[k],
                                   member=f"m-{k}-0", amount=amount, outstanding=0,
                                   paid_on=dt.date.fromisoformat(on)), None)
    ev += [
        group("g1", A, 10, "2026-01-10"), grant("g1", 25_000_000, "2026-01-15"),
        lend("g1", 20_000_000, 2_000_000, "2026-01-20", "2026-02-28"),    # due Feb 2M, Mar 2M
        repay("g1", 2_000_000, "2026-02-27"), repay("g1", 1_000_000, "2026-03-30"),
        group("g2", B, 8, "2025-06-01"), grant("g2", 15_000_000, "2025-06-01"),
        lend("g2", 10_000_000, 1_000_000, "2025-07-01", "2026-03-31"),    # due Mar 1M
        repay("g2", 1_500_000, "2026-03-15"),
        group("g3", C, 5, "2026-04-01"), grant("g3", 9_000_000, "2026-04-01"),
    ]
    for event, when in ev:
        await publish(js, names, event, occurred_at=when)
    return len(ev)


EXPECTED_PROGRAMS = [
    {"programme_identifier": "kamalia_merekah", "enrolled": 2, "people_paid": 2, "amount_paid": 900_000, "payments": 2},
    {"programme_identifier": "pkh", "enrolled": 2, "people_paid": 2, "amount_paid": 1_800_000, "payments": 3},
    {"programme_identifier": "rtlh", "enrolled": 0, "people_paid": 1, "amount_paid": 199_988_000, "payments": 1},
]


def check_known_recap(r: dict) -> None:
    assert r["period"] == PERIOD
    assert r["programs"] == EXPECTED_PROGRAMS
    src = {s["funding_source"]: s for s in r["funding_sources"]}
    assert set(src) == {"apbdes", "apbn", "apbd_kabupaten", "csr", "baznas"}

    def fig(s):
        return (src[s]["allocation"], src[s]["realised"], src[s]["paid_in_period"], src[s]["realisation_pct"])
    # APBDes: 2 x 199,988,000 = 399,976,000 of 859,588,000 = 46.53 % (the village budget example)
    assert fig("apbdes") == (859_588_000, 399_976_000, 199_988_000, 46.53) and src["apbdes"]["label"] == "APBDes"
    # APBN: 2026 ceiling set to 6M then amended to 10M (2025's 5M excluded);
    # realised Feb 600k + Mar 600k + 600k + 400k = 2.2M = 22 %
    assert fig("apbn") == (10_000_000, 2_200_000, 1_600_000, 22.0)
    assert fig("apbd_kabupaten") == (1_000_000, 200_000, 200_000, 20.0)
    assert fig("csr") == (1_000_000, 450_000, 450_000, 45.0)
    assert fig("baznas") == (0, 450_000, 450_000, None)
    c = r["complaints"]
    # registered in March c1 c2 c3 c4 c8; resolved c1 (3 d), c2 (10 d), c5 (38 d); overdue c3, c7
    assert (c["received"], c["resolved"], c["overdue"], c["median_days_to_resolve"]) == (5, 3, 2, 10)
    assert c["referred"] == {"kecamatan": 3, "kabupaten": 1, "agency": 0}
    assert c["by_level"] == [{"level": "village", "registered": 5, "referred_in": 0, "resolved": 2},
                             {"level": "kecamatan", "registered": 0, "referred_in": 3, "resolved": 1},
                             {"level": "kabupaten", "registered": 0, "referred_in": 1, "resolved": 0},
                             {"level": "agency", "registered": 0, "referred_in": 0, "resolved": 0}]
    v = r["visits"]
    assert (v["due"], v["done"], v["coverage_pct"]) == (4, 3, 75.0)
    assert v["companions"] == [
        {"companion": "pendamping 1", "due": 3, "done": 2, "coverage_pct": 66.67,
         "conditions": {"fisik": {"good": 1, "fair": 1}, "sosial": {"good": 2}}},
        {"companion": "pendamping 2", "due": 1, "done": 1, "coverage_pct": 100.0,
         "conditions": {"fisik": {"critical": 1}, "sosial": {"fair": 1}}}]
    # Sumber: g1 + g2. fund 25M + 15M; members 10 + 8; outstanding (20M - 3M) + (10M - 1.5M);
    # arrears g1 4M due - 3M paid = 1M; repayment (3M + min(1.5M, 1M)) / (4M + 1M) = 80 %
    assert r["kube"] == [{"kecamatan_code": "331701", "kecamatan_name": "Sumber", "groups": 2,
                          "fund_amount": 40_000_000, "members": 18, "loans_outstanding": 25_500_000,
                          "arrears": 1_000_000, "repayment_rate_pct": 80.0}]
    areas = {k["kecamatan_code"]: k for k in r["areas"]}
    assert set(areas) == {"", "331701", "331702"} and areas["331702"]["kecamatan_name"] == "Bulu"
    villages = {v["village_code"]: v for k in r["areas"] for v in k["villages"]}
    zero_pay = {"people_paid": 0, "amount_paid": 0}
    assert villages[A] == {"village_code": A, "village_name": "Ronggo Mulyo", "enrolled": 1, **zero_pay,
                           "complaints_received": 2, "complaints_resolved": 2,
                           "visits_due": 2, "visits_done": 2, "kube_groups": 1}
    assert villages[B] == {"village_code": B, "village_name": "Logede", "enrolled": 1, **zero_pay,
                           "complaints_received": 2, "complaints_resolved": 0,
                           "visits_due": 1, "visits_done": 0, "kube_groups": 1}
    assert villages[C] == {"village_code": C, "village_name": "Pondokrejo", "enrolled": 2, **zero_pay,
                           "complaints_received": 1, "complaints_resolved": 1,
                           "visits_due": 1, "visits_done": 1, "kube_groups": 0}
    # settlements published before they carried a village: their money shows under an unrecorded area
    assert villages[""]["people_paid"] == 5 and villages[""]["amount_paid"] == 202_688_000
    assert areas["331701"]["totals"]["visits_due"] == 3 and areas["331701"]["totals"]["complaints_received"] == 4


async def folded(svc, n: int) -> bool:
    from sqlalchemy import func, select
    async with svc.rt.sessions() as s:
        return (await s.execute(select(func.count()).select_from(svc.rt.inbox))).scalar() >= n


async def test_monthly_recap_matches_hand_computed_figures(settings, nc, start):
    js = nc.jetstream()
    async with start("reporting", settings) as rep:
        n = await publish_known_dataset(js, settings.names)
        await eventually(lambda: folded(rep, n - 1), timeout=20)  # v4's repeat is the same visit, a new event
        resp = await rep.http.get("/reports/monthly", params={"period": PERIOD})
        assert resp.status_code == 200, resp.text
        check_known_recap(resp.json())


async def test_public_pages_show_no_usernames_coordinators_see_them_behind_login(settings, nc, start):
    """Issue 15: the unauthenticated recap and dashboard listed companion usernames to pick
    from (accounts to guess passwords for); now companions are numbered there, and their names
    are behind a coordinator's login."""
    from services.kit.auth import Role
    from tests.integration.intake_support import token
    js = nc.jetstream()
    async with start("reporting", settings) as rep:
        n = await publish_known_dataset(js, settings.names)
        await eventually(lambda: folded(rep, n - 1), timeout=20)
        for path in ("/reports/monthly", "/reports/monthly.csv", "/reports/monthly.html", "/dashboard"):
            resp = await rep.http.get(path, params={"period": PERIOD})
            assert resp.status_code == 200, (path, resp.text)
            assert "pdp-ani" not in resp.text and "pdp-budi" not in resp.text, path
        xlsx = await rep.http.get("/reports/monthly.xlsx", params={"period": PERIOD})
        assert b"pdp-ani" not in xlsx.content  # shared strings are stored as text in the zip
        path = "/reports/monthly/companions"
        assert (await rep.http.get(path, params={"period": PERIOD})).status_code == 401
        other = token(settings, Role.village_office, A)
        assert (await rep.http.get(path, params={"period": PERIOD}, headers=other)).status_code == 403
        coord = token(settings, Role.coordinator, "331701", "koordinator")
        resp = await rep.http.get(path, params={"period": PERIOD}, headers=coord)
        assert resp.status_code == 200, resp.text
        assert [c["companion"] for c in resp.json()["companions"]] == ["pdp-ani", "pdp-budi"]


async def test_redelivered_and_repeated_events_count_once_bad_ones_are_dead_lettered(settings, nc, start):
    js = nc.jetstream()
    names = settings.names
    pay = _paid("r9", "pkh", "2026-03", ("apbn", 600_000))
    subject = names.event(pay.event_type)

    def raw(event_type: str, data: dict) -> bytes:
        return json.dumps({"event_id": str(uuid.uuid4()), "event_type": event_type, "schema_version": 1,
                           "occurred_at": "2026-03-25T09:00:00+07:00", "producer": "disbursement",
                           "data": data}).encode()
    async with start("reporting", settings) as rep:
        eid = uuid.uuid4()
        # the same event twice without Nats-Msg-Id: the stream keeps both, the inbox drops one
        await publish(js, names, pay, event_id=eid, msg_id=False)
        await publish(js, names, pay, event_id=eid, msg_id=False)
        await js.publish(subject, b"{not json", headers={"Nats-Msg-Id": "junk-1"})
        await js.publish(subject, raw(pay.event_type, pay.model_dump(mode="json") | {"amount": -5}),
                         headers={"Nats-Msg-Id": "negative-1"})
        await js.publish(subject, raw("disbursement.nobody_knows_this", {"x": 1}), headers={"Nats-Msg-Id": "unknown-1"})
        # a known event type reporting has no use for: skipped, even with data it would not accept
        await js.publish(names.event("registry.people_registered"), raw("registry.people_registered", {"a": 1}))

        async def paid():
            r = (await rep.http.get("/reports/monthly", params={"period": "2026-03"})).json()
            return r["programs"]
        await eventually(paid)
        letters = await eventually(lambda: dead_letters(js, names, 3))
        reasons = {x["msg_id"]: x for x in letters}
        assert set(reasons) == {"junk-1", "negative-1", "unknown-1"}  # the skipped type is no dead letter
        assert reasons["junk-1"]["reason_code"] == "rjct.json.invalid"
        assert reasons["negative-1"]["reason_code"] == "rjct.event.invalid" and "amount" in reasons["negative-1"]["reason"]
        assert reasons["unknown-1"]["reason_code"] == "rjct.event.unknown_type"
        r = (await rep.http.get("/reports/monthly", params={"period": "2026-03"})).json()
        assert r["programs"] == [{"programme_identifier": "pkh", "enrolled": 0, "people_paid": 1,
                                  "amount_paid": 600_000, "payments": 1}]


async def dead_letters(js, names, n: int) -> list[dict] | None:
    """Every dead letter of reporting so far (read from the start, acknowledging nothing),
    once there are at least `n`."""
    sub = await js.pull_subscribe(names.deadletter("reporting"), stream=names.stream("DEADLETTER"),
                                  config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE))
    got: list[dict] = []
    try:
        while True:
            try:
                msgs = await sub.fetch(100, timeout=0.3)
            except (TimeoutError, nats.errors.TimeoutError):
                break
            got += [json.loads(m.data) for m in msgs]
    finally:
        await sub.unsubscribe()
    return got if len(got) >= n else None


@pytest.mark.parametrize("period,fragment", [
    ("2026-13", "month 13"), ("2026-3", "YYYY-MM"), ("march", "YYYY-MM"), ("", "required"), (None, "required")])
async def test_bad_period_is_a_400_saying_what_is_wrong(settings, start, period, fragment):
    async with start("reporting", settings) as rep:
        paths = ["/reports/monthly", "/reports/monthly.csv", "/reports/monthly.xlsx", "/reports/monthly.html"]
        if period:  # the dashboard shows this month when no period is given
            paths.append("/dashboard")
        for path in paths:
            resp = await rep.http.get(path, params={} if period is None else {"period": period})
            assert resp.status_code == 400, (path, resp.text)
            assert fragment in resp.json()["error"]


async def test_csv_xlsx_and_printable_page_carry_the_same_figures(settings, nc, start):
    import csv
    import io

    from openpyxl import load_workbook
    js = nc.jetstream()
    async with start("reporting", settings) as rep:
        n = await publish_known_dataset(js, settings.names)
        await eventually(lambda: folded(rep, n - 1), timeout=20)
        resp = await rep.http.get("/reports/monthly.csv", params={"period": PERIOD})
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/csv")
        assert 'filename="rekap-2026-03.csv"' in resp.headers["content-disposition"]
        rows = list(csv.reader(io.StringIO(resp.text)))
        assert ["APBDes", "859588000", "399976000", "199988000", "46.53"] in rows
        assert ["pkh", "2", "2", "1800000", "3"] in rows
        assert ["331701", "Sumber", "3317012001", "Ronggo Mulyo", "1", "0", "0", "2", "2", "2", "2", "1"] in rows

        resp = await rep.http.get("/reports/monthly.xlsx", params={"period": PERIOD})
        assert resp.status_code == 200
        wb = load_workbook(io.BytesIO(resp.content))
        assert wb.sheetnames == ["program", "keluar", "sumber_dana", "pengaduan", "kunjungan", "kube", "wilayah"]
        src = [list(r) for r in wb["sumber_dana"].iter_rows(min_row=3, values_only=True)]
        assert ["APBDes", 859_588_000, 399_976_000, 199_988_000, 46.53] in src
        kube = list(wb["kube"].iter_rows(min_row=3, values_only=True))
        assert kube == [("331701", "Sumber", 2, 40_000_000, 18, 25_500_000, 80.0, 1_000_000)]

        resp = await rep.http.get("/reports/monthly.html", params={"period": PERIOD})
        assert resp.status_code == 200 and "text/html" in resp.headers["content-type"]
        assert "Rekap bulanan" in resp.text and "859.588.000" in resp.text and "46,53 %" in resp.text
        assert "Ronggo Mulyo" in resp.text and "Kecamatan (SLRT)" in resp.text and "kritis" not in resp.text
        assert "http" not in resp.text.split("<body>")[0]  # nothing fetched from elsewhere


async def test_registry_enrolments_reach_the_recap_end_to_end(settings, nc, start):
    """The real registry turns agency reports into events; the recap counts them in their month."""
    js = nc.jetstream()
    reports = [factories.enrolment("pkh", village_code=A, effective="2026-03-10"),
               factories.enrolment("pkh", village_code=A, effective="2026-03-12"),
               factories.enrolment("pkh", village_code=C, effective="2026-04-01")]
    # the first person moves (pindah) to C in April: A must lose them, not only C gain them
    reports.append(reports[0] | {"message_id": str(uuid.uuid4()), "village_code": C,
                                 "status_change_date": "2026-04-05"})
    async with start("registry", settings), start("reporting", settings) as rep:
        for r in reports:
            await js.publish(settings.names.enrolments("pkh"), json.dumps(r).encode(),
                             headers={"Nats-Msg-Id": factories.msg_id(r)})

        async def recap(period):
            return (await rep.http.get("/reports/monthly", params={"period": period})).json()

        async def april_has_the_move():
            april = await recap("2026-04")
            villages = {v["village_code"]: v["enrolled"] for k in april["areas"] for v in k["villages"]}
            return villages == {A: 1, C: 2} and [p["enrolled"] for p in april["programs"]] == [3]
        await eventually(april_has_the_move, timeout=20)
        march = await recap("2026-03")
        assert march["programs"] == [{"programme_identifier": "pkh", "enrolled": 2, "people_paid": 0,
                                      "amount_paid": 0, "payments": 0}]
        (kec,) = march["areas"]
        assert kec["kecamatan_name"] == "Sumber" and kec["villages"][0]["village_name"] == "Ronggo Mulyo"
        assert kec["villages"][0]["enrolled"] == 2
