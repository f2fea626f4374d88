"""The monthly recap on a known data set, published to the real streams, against figures
computed by hand (see the comments: each number is derived there, not by the code)."""
from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from nats.js.errors import NotFoundError

from contracts.envelope import envelope, utcnow
from contracts.registry import EnrolmentChanged
from tests import factories
from tests.conftest import eventually

pytestmark = pytest.mark.integration

A, B, C = "3317012001", "3317012002", "3317022003"  # Ronggo Mulyo, Logede (kec. Sumber); Pondokrejo (kec. Bulu)
PERIOD = "2026-03"


async def publish(js, names, event_type: str, data, *, event_id: uuid.UUID | None = None, msg_id: bool = True):
    """One event in its envelope on its real subject, as the producing service's outbox would."""
    if isinstance(data, EnrolmentChanged):
        body = envelope(data, "registry", event_id=event_id).model_dump_json().encode()
        eid = json.loads(body)["event_id"]
    else:
        eid = str(event_id or uuid.uuid4())
        body = json.dumps({"event_id": eid, "event_type": event_type, "schema_version": 1,
                           "occurred_at": utcnow().isoformat(), "producer": event_type.split(".")[0],
                           "data": data}, default=str).encode()
    await js.publish(names.event(event_type), body, headers={"Nats-Msg-Id": eid} if msg_id else None)
    return body


def _enrolment(n: int, program: str, village: str, status: str, day: str, previous: str | None = None):
    birth = dt.date(1950, 1, n)
    return EnrolmentChanged(nik=factories.nik(village, birth, "M", serial=n), no_kk=factories.kk(village, serial=n),
                            village_code=village, birth_date=birth, programme_identifier=program,
                            enrolment_status=status, previous_status=previous,
                            status_change_date=dt.date.fromisoformat(day), reported_by=program)


def _pay(ref: str, program: str, village: str, source: str, amount: int, period: str) -> dict:
    return {"payment_id": str(uuid.uuid4()), "programme_identifier": program, "person_ref": f"pseudo-{ref}",
            "village_code": village, "funding_source": source, "amount": amount, "period": period}


async def publish_known_dataset(js, names) -> int:
    """Publishes the data set; returns how many events reporting must fold in."""
    ev = []
    # enrolments. End of March: pkh p1 (A), p3 (B) active, p2 suspended 15 Mar, p4 starts in April;
    # kamalia p5, p6 (C) active, p7 (B) exited in February.
    ev += [("registry.enrolment_changed", e) for e in (
        _enrolment(1, "pkh", A, "active", "2026-01-10"),
        _enrolment(2, "pkh", A, "active", "2026-02-05"),
        _enrolment(3, "pkh", B, "active", "2026-03-01"),
        _enrolment(4, "pkh", C, "active", "2026-04-02"),
        _enrolment(2, "pkh", A, "suspended", "2026-03-15", "active"),
        _enrolment(5, "kamalia_merekah", C, "active", "2025-12-01"),
        _enrolment(6, "kamalia_merekah", C, "active", "2026-03-31"),
        _enrolment(7, "kamalia_merekah", B, "active", "2026-02-01"),
        _enrolment(7, "kamalia_merekah", B, "exited", "2026-02-20", "active"))]
    # payments. March: pkh r1 twice (1 person, 2 payments), r3; kamalia r5 (CSR), r6 (Baznas);
    # rtlh r8 199,988,000 (APBDes). Earlier: pkh r1 Feb (in year to date), Dec 2025 (not); rtlh r8 Jan.
    ev += [("disbursement.payment_settled", p) for p in (
        _pay("r1", "pkh", A, "APBN", 600_000, "2026-03"),
        _pay("r1", "pkh", A, "APBN", 600_000, "2026-03"),
        _pay("r3", "pkh", B, "APBN", 600_000, "2026-03"),
        _pay("r5", "kamalia_merekah", C, "CSR", 450_000, "2026-03"),
        _pay("r6", "kamalia_merekah", C, "Baznas", 450_000, "2026-03"),
        _pay("r1", "pkh", A, "APBN", 600_000, "2026-02"),
        _pay("r1", "pkh", A, "APBN", 600_000, "2025-12"),
        _pay("r8", "rtlh", A, "APBDes", 199_988_000, "2026-01"),
        _pay("r8", "rtlh", A, "APBDes", 199_988_000, "2026-03"))]
    ev += [("disbursement.budget_allocated", {"funding_source": s, "programme_identifier": p, "fiscal_year": y,
                                              "amount": a}) for s, p, y, a in (
        ("APBDes", "rtlh", 2026, 859_588_000), ("APBN", "pkh", 2026, 6_000_000), ("APBN", "pkh", 2026, 4_000_000),
        ("CSR", "kamalia_merekah", 2026, 1_000_000), ("APBN", "pkh", 2025, 5_000_000))]
    # complaints
    case = {k: str(uuid.uuid4()) for k in ("c1", "c2", "c3", "c4", "c5", "c6", "c7")}

    def rec(c, v, on, due):
        return ("intake.complaint_received", {"case_id": case[c], "village_code": v, "received_on": on, "due_on": due})

    def res(c, v, on):
        return ("intake.complaint_resolved", {"case_id": case[c], "village_code": v, "resolved_on": on})

    def ref(c, v, level, on):
        return ("intake.complaint_referred", {"case_id": case[c], "village_code": v, "level": level,
                                              "referred_on": on})
    ev += [
        rec("c1", A, "2026-03-02", "2026-03-16"), res("c1", A, "2026-03-05"),                       # 3 days
        rec("c2", A, "2026-03-03", "2026-03-17"), ref("c2", A, "kecamatan", "2026-03-04"),
        res("c2", A, "2026-03-13"),                                                                 # 10 days
        rec("c3", B, "2026-03-10", "2026-03-24"), ref("c3", B, "kecamatan", "2026-03-11"),
        ref("c3", B, "kabupaten", "2026-03-12"),                                                    # open, overdue
        rec("c4", C, "2026-03-25", "2026-04-08"),                                                   # open, not yet due
        res("c5", C, "2026-03-20"), rec("c5", C, "2026-02-10", "2026-02-24"),                       # 38 days, out of order
        rec("c6", B, "2026-02-01", "2026-02-15"), res("c6", B, "2026-02-10"),                       # February only
        rec("c7", A, "2026-01-05", "2026-01-19"),                                                   # open since Jan: overdue
    ]
    # home visits: ani owes 3 in March, did 2; budi owes 1, did 1 (reported twice); v5 is February's
    vid = {k: str(uuid.uuid4()) for k in ("v1", "v2", "v3", "v4", "v5")}

    def due(v, comp, village, period):
        return ("intake.visit_scheduled", {"visit_id": vid[v], "companion_id": comp, "village_code": village,
                                           "period": period})

    def done(v, comp, village, on, phys, soc):
        return ("intake.visit_recorded", {"visit_id": vid[v], "companion_id": comp, "village_code": village,
                                          "visited_on": on, "physical_condition": phys, "social_condition": soc})
    ev += [due("v1", "pdp-ani", A, PERIOD), due("v2", "pdp-ani", A, PERIOD), due("v3", "pdp-ani", B, PERIOD),
           due("v4", "pdp-budi", C, PERIOD), due("v5", "pdp-budi", C, "2026-02"),
           done("v1", "pdp-ani", A, "2026-03-05", "baik", "baik"), done("v2", "pdp-ani", A, "2026-03-20", "Sedang", "baik"),
           done("v4", "pdp-budi", C, "2026-03-07", "buruk", "sedang"),
           done("v4", "pdp-budi", C, "2026-03-07", "buruk", "sedang"),
           done("v5", "pdp-budi", C, "2026-02-25", "baik", "baik")]
    # KUBE: g1 (A) and g2 (B) in kec. Sumber; g3 (C) is funded in April
    g = {k: str(uuid.uuid4()) for k in ("g1", "g2", "g3")}

    def kube(kind, grp, amount, on):
        return (f"disbursement.kube_{kind}", {"group_id": g[grp], "amount": amount, "on": on})
    ev += [
        ("disbursement.kube_funded", {"group_id": g["g1"], "village_code": A, "members": 10,
                                      "fund_amount": 25_000_000, "funded_on": "2026-01-15"}),
        kube("loan_disbursed", "g1", 20_000_000, "2026-01-20"),
        kube("instalment_due", "g1", 2_000_000, "2026-02-28"), kube("instalment_due", "g1", 2_000_000, "2026-03-31"),
        kube("instalment_paid", "g1", 2_000_000, "2026-02-27"), kube("instalment_paid", "g1", 1_000_000, "2026-03-30"),
        ("disbursement.kube_funded", {"group_id": g["g2"], "village_code": B, "members": 8,
                                      "fund_amount": 15_000_000, "funded_on": "2025-06-01"}),
        kube("loan_disbursed", "g2", 10_000_000, "2025-07-01"),
        kube("instalment_due", "g2", 1_000_000, "2026-03-31"), kube("instalment_paid", "g2", 1_500_000, "2026-03-15"),
        ("disbursement.kube_funded", {"group_id": g["g3"], "village_code": C, "members": 5,
                                      "fund_amount": 9_000_000, "funded_on": "2026-04-01"}),
    ]
    for event_type, data in ev:
        await publish(js, names, event_type, data)
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
    # APBDes: 2 x 199,988,000 = 399,976,000 of 859,588,000 = 46.53 % (the village budget example)
    assert {k: src["APBDes"][k] for k in ("allocation", "realised", "paid_in_period", "realisation_pct")} == {
        "allocation": 859_588_000, "realised": 399_976_000, "paid_in_period": 199_988_000, "realisation_pct": 46.53}
    # APBN: 2026 allocation 6M + 4M (2025's 5M excluded); realised Feb 600k + Mar 1.8M = 2.4M: 24 %
    assert (src["APBN"]["allocation"], src["APBN"]["realised"], src["APBN"]["realisation_pct"]) == (
        10_000_000, 2_400_000, 24.0)
    assert (src["CSR"]["allocation"], src["CSR"]["realised"], src["CSR"]["realisation_pct"]) == (1_000_000, 450_000, 45.0)
    assert (src["Baznas"]["allocation"], src["Baznas"]["realised"], src["Baznas"]["realisation_pct"]) == (0, 450_000, None)
    c = r["complaints"]
    assert (c["received"], c["resolved"], c["overdue"], c["median_days_to_resolve"]) == (4, 3, 2, 10)
    assert c["referred"] == {"kecamatan": 2, "kabupaten": 1, "agency": 0}
    assert c["by_level"] == [{"level": "desa", "arrived": 4, "resolved": 2},
                             {"level": "kecamatan", "arrived": 2, "resolved": 1},
                             {"level": "kabupaten", "arrived": 1, "resolved": 0},
                             {"level": "agency", "arrived": 0, "resolved": 0}]
    v = r["visits"]
    assert (v["due"], v["done"], v["coverage_pct"]) == (4, 3, 75.0)
    assert v["companions"] == [
        {"companion": "pdp-ani", "due": 3, "done": 2, "coverage_pct": 66.67,
         "conditions": {"fisik": {"baik": 1, "sedang": 1}, "sosial": {"baik": 2}}},
        {"companion": "pdp-budi", "due": 1, "done": 1, "coverage_pct": 100.0,
         "conditions": {"fisik": {"buruk": 1}, "sosial": {"sedang": 1}}}]
    # Sumber: g1 + g2. fund 25M + 15M; members 10 + 8; outstanding (20M - 3M) + (10M - 1.5M);
    # arrears g1 4M due - 3M paid = 1M; repayment (3M + min(1.5M, 1M)) / (4M + 1M) = 80 %
    assert r["kube"] == [{"kecamatan_code": "331701", "kecamatan_name": "Sumber", "groups": 2,
                          "fund_amount": 40_000_000, "members": 18, "loans_outstanding": 25_500_000,
                          "arrears": 1_000_000, "repayment_rate_pct": 80.0}]
    areas = {k["kecamatan_code"]: k for k in r["areas"]}
    assert set(areas) == {"331701", "331702"} and areas["331702"]["kecamatan_name"] == "Bulu"
    villages = {v["village_code"]: v for k in r["areas"] for v in k["villages"]}
    assert villages[A] == {"village_code": A, "village_name": "Ronggo Mulyo", "enrolled": 1, "people_paid": 2,
                           "amount_paid": 201_188_000, "complaints_received": 2, "complaints_resolved": 2,
                           "visits_due": 2, "visits_done": 2, "kube_groups": 1}
    assert villages[B] == {"village_code": B, "village_name": "Logede", "enrolled": 1, "people_paid": 1,
                           "amount_paid": 600_000, "complaints_received": 1, "complaints_resolved": 0,
                           "visits_due": 1, "visits_done": 0, "kube_groups": 1}
    assert villages[C] == {"village_code": C, "village_name": "Pondokrejo", "enrolled": 2, "people_paid": 2,
                           "amount_paid": 900_000, "complaints_received": 1, "complaints_resolved": 1,
                           "visits_due": 1, "visits_done": 1, "kube_groups": 0}
    assert areas["331701"]["totals"]["amount_paid"] == 201_788_000


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


async def test_redelivered_and_repeated_events_count_once_bad_ones_are_dead_lettered(settings, nc, start):
    js = nc.jetstream()
    names = settings.names
    pay = _pay("r9", "pkh", A, "APBN", 600_000, "2026-03")
    async with start("reporting", settings) as rep:
        eid = uuid.uuid4()
        # the same event twice without Nats-Msg-Id: the stream keeps both, the inbox drops one
        await publish(js, names, "disbursement.payment_settled", pay, event_id=eid, msg_id=False)
        await publish(js, names, "disbursement.payment_settled", pay, event_id=eid, msg_id=False)
        await js.publish(names.event("disbursement.payment_settled"), b"{not json", headers={"Nats-Msg-Id": "junk-1"})
        await publish(js, names, "disbursement.payment_settled", pay | {"amount": -5}, event_id=uuid.uuid4())
        await publish(js, names, "disbursement.something_reporting_ignores", {"x": 1})
        await publish(js, names, "registry.person_registered", {"anything": "skipped"})

        async def paid():
            r = (await rep.http.get("/reports/monthly", params={"period": "2026-03"})).json()
            return r["programs"]
        progs = await eventually(paid)
        sub = await js.pull_subscribe(names.deadletter("reporting"), stream=names.stream("DEADLETTER"))
        letters = []

        async def two_letters():
            try:
                letters.extend(await sub.fetch(10, timeout=0.5))
            except (TimeoutError, NotFoundError):
                pass
            return len(letters) >= 2
        await eventually(two_letters)
        reasons = [json.loads(m.data) for m in letters]
        assert {x["msg_id"] for x in reasons} >= {"junk-1"}
        assert any("amount" in x["reason"] for x in reasons)
        r = (await rep.http.get("/reports/monthly", params={"period": "2026-03"})).json()
        assert r["programs"] == [{"programme_identifier": "pkh", "enrolled": 0, "people_paid": 1,
                                  "amount_paid": 600_000, "payments": 1}]


@pytest.mark.parametrize("period,fragment", [
    ("2026-13", "month 13"), ("2026-3", "YYYY-MM"), ("march", "YYYY-MM"), ("", "required"), (None, "required")])
async def test_bad_period_is_a_400_saying_what_is_wrong(settings, start, period, fragment):
    async with start("reporting", settings) as rep:
        for path in ("/reports/monthly", "/reports/monthly.csv", "/reports/monthly.xlsx", "/reports/monthly.html"):
            resp = await rep.http.get(path, params={} if period is None else {"period": period})
            assert resp.status_code == 400, (path, resp.text)
            assert fragment in resp.json()["detail"]["error"]


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
        assert ["331701", "Sumber", "3317012001", "Ronggo Mulyo", "1", "2", "201188000", "2", "2", "2", "2", "1"] in rows

        resp = await rep.http.get("/reports/monthly.xlsx", params={"period": PERIOD})
        assert resp.status_code == 200
        wb = load_workbook(io.BytesIO(resp.content))
        assert wb.sheetnames == ["program", "sumber_dana", "pengaduan", "kunjungan", "kube", "wilayah"]
        src = [list(r) for r in wb["sumber_dana"].iter_rows(min_row=3, values_only=True)]
        assert ["APBDes", 859_588_000, 399_976_000, 199_988_000, 46.53] in src
        kube = list(wb["kube"].iter_rows(min_row=3, values_only=True))
        assert kube == [("331701", "Sumber", 2, 40_000_000, 18, 25_500_000, 80.0, 1_000_000)]

        resp = await rep.http.get("/reports/monthly.html", params={"period": PERIOD})
        assert resp.status_code == 200 and "text/html" in resp.headers["content-type"]
        assert "Rekap bulanan" in resp.text and "859.588.000" in resp.text and "46,53 %" in resp.text
        assert "Ronggo Mulyo" in resp.text and "http" not in resp.text.split("<body>")[0].replace("http-equiv", "")
