"""KUBE revolving funds through the HTTP API on real NATS and PostgreSQL: group, savings and
meetings, eligibility, grant within a ceiling, loan sizing, instalments (idempotent), arrears,
fund history; every money movement on the ledger and the audit stream."""
from __future__ import annotations

import datetime as dt
import uuid

import pytest

from services.disbursement import audit
from tests import disbursement_support as ds
from tests.conftest import eventually

pytestmark = pytest.mark.integration


async def test_kube_group_fund_loans_and_arrears(settings, nc, start):
    js = nc.jetstream()
    a, b = ds.people(2, seed=31)
    async with start("disbursement", settings) as svc:
        h = ds.headers(settings)
        r = await svc.http.post("/kube/groups", headers=h, json={
            "name": "KUBE Mina Makmur", "village_code": a["village_code"],
            "members": [{"nik": a["nik"], "joined_on": "2026-01-05"}, {"nik": b["nik"], "joined_on": "2026-01-05"}]})
        assert r.status_code == 200, r.text
        gid = r.json()["group_id"]
        bad = await svc.http.post("/kube/groups", headers=h, json={"name": "x", "village_code": "3317999999",
                                                                   "members": [{"nik": "123", "joined_on": "2026-01-01"}]})
        assert bad.status_code == 422 and "village" in bad.text.lower()

        for month in ("2026-02", "2026-03", "2026-04"):
            assert (await svc.http.put(f"/kube/groups/{gid}/savings/{a['nik']}/{month}", headers=h,
                                       json={"amount": 20_000})).status_code == 200
        await svc.http.put(f"/kube/groups/{gid}/savings/{b['nik']}/2026-04", headers=h, json={"amount": 20_000})
        for day in ("2026-02-10", "2026-03-10", "2026-04-10"):
            assert (await svc.http.put(f"/kube/groups/{gid}/meetings/{day}", headers=h,
                                       json={"attendees": [a["nik"]]})).status_code == 200
        el = (await svc.http.get(f"/kube/groups/{gid}/eligibility/{a['nik']}", headers=h,
                                 params={"as_of": "2026-05-02"})).json()
        assert el["eligible"], el
        el = (await svc.http.get(f"/kube/groups/{gid}/eligibility/{b['nik']}", headers=h,
                                 params={"as_of": "2026-05-02"})).json()
        assert not el["eligible"] and any("2026-02" in r for r in el["reasons"]) and any("0 of 3" in r for r in el["reasons"])

        # grant: needs an allocation for (source, kube, year), within its ceiling
        r = await svc.http.post(f"/kube/groups/{gid}/grants", headers=h,
                                json={"source": "apbd_kabupaten", "fiscal_year": 2026, "amount": 5_000_000})
        assert r.status_code == 409 and "missing" in r.text
        await svc.http.put("/allocations/apbd_kabupaten/kube/2026", headers=h,
                           json={"ceiling": 6_000_000, "reason": "KUBE 2026"})
        r = await svc.http.post(f"/kube/groups/{gid}/grants", headers=h,
                                json={"source": "apbd_kabupaten", "fiscal_year": 2026, "amount": 5_000_000})
        assert r.status_code == 200, r.text
        r = await svc.http.post(f"/kube/groups/{gid}/grants", headers=h,
                                json={"source": "apbd_kabupaten", "fiscal_year": 2026, "amount": 1_000_001})
        assert r.status_code == 409  # would exceed the ceiling

        r = await svc.http.post(f"/kube/groups/{gid}/loans", headers=h, json={
            "nik": b["nik"], "need": 1_000_000, "monthly_capacity": 100_000, "term_months": 10, "issued_on": "2026-05-02"})
        assert r.status_code == 409 and "not eligible" in r.text
        r = await svc.http.post(f"/kube/groups/{gid}/loans", headers=h, json={
            "nik": a["nik"], "need": 3_000_000, "monthly_capacity": 150_000, "term_months": 12, "issued_on": "2026-05-02"})
        assert r.status_code == 200, r.text
        loan = r.json()
        assert loan["principal"] == 1_800_000 and loan["instalment"] == 150_000 and loan["limited_by"] == "capacity"

        pay = {"payment_id": str(uuid.uuid4()), "amount": 150_000, "paid_on": "2026-06-02"}
        r1 = await svc.http.post(f"/kube/loans/{loan['loan_id']}/instalments", headers=h, json=pay)
        r2 = await svc.http.post(f"/kube/loans/{loan['loan_id']}/instalments", headers=h, json=pay)
        assert r1.json()["outstanding"] == 1_650_000 and r2.json() == r1.json() | {"duplicate": True}
        r = await svc.http.post(f"/kube/loans/{loan['loan_id']}/instalments", headers=h,
                                json={**pay, "payment_id": str(uuid.uuid4()), "amount": 9_999_999})
        assert r.status_code == 422 and "outstanding" in r.text

        arr = (await svc.http.get(f"/kube/groups/{gid}/arrears", headers=h, params={"as_of": "2026-08-20"})).json()
        # due 06-02, 07-02, 08-02; one paid: 300,000 overdue since 07-02 (49 days)
        assert arr["loans"][0]["overdue"] == 300_000 and arr["loans"][0]["days_overdue"] == 49
        assert arr["overdue_by_bucket"]["31-60"] == 300_000

        f = (await svc.http.get(f"/kube/groups/{gid}/fund", headers=h)).json()
        assert f["dana_abadi"] == 5_000_000 and f["outstanding_loans"] == 1_650_000
        assert f["fund_balance"] == 5_000_000 - 1_800_000 + 150_000
        proof = (await svc.http.get("/ledger/proof", headers=h)).json()
        assert proof["balanced"], proof

        stream = settings.names.stream("DISBURSEMENT")

        async def on_stream():
            msgs = await audit.read_stream(js, stream, settings.names.subject("disbursement.>"), idle=0.5)
            return msgs if sum(b"chain_checkpoint" not in m.data for m in msgs) >= 5 else None
        msgs = await eventually(on_stream)
        rep = audit.verify(msgs, stream)
        assert rep.ok, rep.failures
        kinds = [m[1].split(b'"event_type":"')[1].split(b'"')[0].decode() for m in msgs]
        kinds = [k for k in kinds if k != "disbursement.chain_checkpoint"]  # the timer may sign in between
        assert kinds[:5] == ["disbursement.kube_group_registered", "disbursement.allocation_set",
                             "disbursement.kube_grant_made", "disbursement.kube_loan_issued",
                             "disbursement.kube_instalment_paid"]
        assert rep.totals["allocations"][0]["kube_granted"] == 5_000_000
        assert a["nik"].encode() not in b"".join(m[1] for m in msgs)
    _ = dt
