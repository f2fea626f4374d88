"""Issue 17 in reporting: a person whose life status is not `alive` is no active beneficiary in
any program, and the recap counts exits per month by reason (deceased, moved out, ineligible)
per program, village and kecamatan, in every format; rebuilt from the streams, the same.
Registry events are built by hand here (reporting's own test); tests/e2e runs the real registry."""
from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from openpyxl import load_workbook

from contracts.registry import EnrolmentsChanged, LifeStatusChange, LifeStatusChanged
from services.reporting.rebuild import rebuild
from tests.conftest import eventually
from tests.integration.test_reporting_rebuild import _same_report, snapshot
from tests.integration.test_reporting_recap import A, B, C, _enrolment, _nik, publish

pytestmark = pytest.mark.integration


def _life(n: int, village: str, status: str, day: str, previous: str = "alive", programs=("pkh",)):
    return LifeStatusChange(nik=_nik(village, n), village_code=village, life_status=status, previous_status=previous,
                            effective_date=dt.date.fromisoformat(day), source="agency", reported_by="pkh",
                            reason_code=f"test.{status}", programme_identifiers=list(programs))


async def _publish_people(js, names) -> int:
    """March 2026. Enrolled: pkh p1, p2, p3 (A), p4 (B), p5 (C); kamalia p1 (A), p6 (C).
    p1 dies on 10 March (PKH reports it; Kamalia never did): out of both, one exit each.
    p4 moves out of the regency on 20 March; p5 is found ineligible on 2 April (an April exit);
    p6 is disputed (held, no exit); p3 moves out in March but a verifier finds them at home (alive):
    no exit, active again."""
    events = [
        EnrolmentsChanged(changes=[
            _enrolment(1, "pkh", A, "active", "2026-01-05"), _enrolment(2, "pkh", A, "active", "2026-01-05"),
            _enrolment(3, "pkh", A, "active", "2026-01-05"), _enrolment(4, "pkh", B, "active", "2026-01-05"),
            _enrolment(5, "pkh", C, "active", "2026-01-05"), _enrolment(1, "kamalia_merekah", A, "active", "2026-02-01"),
            _enrolment(6, "kamalia_merekah", C, "active", "2026-02-01")]),
        EnrolmentsChanged(changes=[_enrolment(1, "pkh", A, "deceased", "2026-03-10", "active")]),
        LifeStatusChanged(changes=[_life(1, A, "deceased", "2026-03-10", programs=("pkh", "kamalia_merekah")),
                                   _life(4, B, "moved_out", "2026-03-20")]),
        LifeStatusChanged(changes=[_life(5, C, "ineligible", "2026-04-02"),
                                   _life(6, C, "disputed", "2026-03-25", programs=("kamalia_merekah",)),
                                   _life(3, A, "moved_out", "2026-03-12")]),
        LifeStatusChanged(changes=[_life(3, A, "alive", "2026-03-28", previous="moved_out")]),
    ]
    for e in events:
        await publish(js, names, e)
    return len(events)


def _enrolled(r: dict) -> dict[str, int]:
    return {p["programme_identifier"]: p["enrolled"] for p in r["programs"]}


async def test_exits_by_reason_and_only_living_people_counted_active(settings, nc, start):
    js = nc.jetstream()
    async with start("reporting", settings) as rep:
        n = await _publish_people(js, settings.names)

        async def recap(period: str) -> dict:
            return (await rep.http.get("/reports/monthly", params={"period": period})).json()

        async def april_folded():
            return (await recap("2026-04"))["exits"]["ineligible"] == 1
        await eventually(april_folded, timeout=20)

        feb, march, april = await recap("2026-02"), await recap("2026-03"), await recap("2026-04")
        assert _enrolled(feb) == {"kamalia_merekah": 2, "pkh": 5}
        # end of March: pkh p2, p3 (back), p5; kamalia none (p1 dead, p6 disputed)
        assert _enrolled(march) == {"kamalia_merekah": 0, "pkh": 3}
        assert _enrolled(april) == {"kamalia_merekah": 0, "pkh": 2}
        x = march["exits"]
        assert (x["deceased"], x["moved_out"], x["ineligible"]) == (2, 1, 0)
        assert x["programs"] == [{"programme_identifier": "kamalia_merekah", "deceased": 1, "moved_out": 0,
                                  "ineligible": 0},
                                 {"programme_identifier": "pkh", "deceased": 1, "moved_out": 1, "ineligible": 0}]
        assert x["villages"] == [
            {"programme_identifier": "kamalia_merekah", "kecamatan_code": "331701", "kecamatan_name": "Sumber",
             "village_code": A, "village_name": "Ronggo Mulyo", "deceased": 1, "moved_out": 0, "ineligible": 0},
            {"programme_identifier": "pkh", "kecamatan_code": "331701", "kecamatan_name": "Sumber",
             "village_code": A, "village_name": "Ronggo Mulyo", "deceased": 1, "moved_out": 0, "ineligible": 0},
            {"programme_identifier": "pkh", "kecamatan_code": "331701", "kecamatan_name": "Sumber",
             "village_code": B, "village_name": "Logede", "deceased": 0, "moved_out": 1, "ineligible": 0}]
        assert april["exits"]["villages"] == [
            {"programme_identifier": "pkh", "kecamatan_code": "331702", "kecamatan_name": "Bulu",
             "village_code": C, "village_name": "Pondokrejo", "deceased": 0, "moved_out": 0, "ineligible": 1}]
        counts = {(r["programme_identifier"], r["village_code"], r["enrolment_status"]): r["people"]
                  for r in (await rep.http.get("/reports/enrolments")).json()["items"]}
        assert counts == {("pkh", A, "active"): 2, ("pkh", A, "deceased"): 1, ("pkh", B, "moved_out"): 1,
                          ("pkh", C, "ineligible"): 1, ("kamalia_merekah", A, "deceased"): 1,
                          ("kamalia_merekah", C, "disputed"): 1}

        # the same figures in the CSV, the workbook, the printable page and the dashboard
        rows = list(csv.reader(io.StringIO((await rep.http.get("/reports/monthly.csv",
                                                               params={"period": "2026-03"})).text)))
        assert ["Program", "Kode kec.", "Kecamatan", "Kode desa", "Desa", "Meninggal", "Pindah keluar kabupaten",
                "Tidak layak", "Jumlah"] in rows
        assert ["pkh", "331701", "Sumber", "3317012002", "Logede", "0", "1", "0", "1"] in rows
        assert ["pkh", "331701", "Sumber", "", "Jumlah kecamatan", "1", "1", "0", "2"] in rows
        assert ["Jumlah", "", "", "", "", "2", "1", "0", "3"] in rows
        wb = load_workbook(io.BytesIO((await rep.http.get("/reports/monthly.xlsx",
                                                          params={"period": "2026-03"})).content))
        keluar = [list(r) for r in wb["keluar"].iter_rows(min_row=3, values_only=True)]
        assert ["kamalia_merekah", None, None, None, "Jumlah program", 1, 0, 0, 1] in keluar  # empty cells
        page = (await rep.http.get("/reports/monthly.html", params={"period": "2026-03"})).text
        assert "Peserta keluar bulan ini menurut alasan" in page and "Pindah keluar kabupaten" in page
        dash = (await rep.http.get("/dashboard", params={"period": "2026-03"})).text
        section = dash.split('id="peserta-keluar"')[1].split("</section>")[0]
        assert "<td>kamalia_merekah</td><td class=\"n\">1</td>" in section.replace("\n", "").replace("  ", "")

        # rebuilt from the streams: the same tables and the same recap
        live_tables, live = await snapshot(rep), march
        progress = await rebuild(settings)
        assert sum(progress.events.values()) == n
        assert await snapshot(rep) == live_tables
        assert _same_report(await recap("2026-03"), live)
