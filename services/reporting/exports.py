"""The recap as tables (Indonesian headings, as Bappeda reads them) for CSV, XLSX and print."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from openpyxl import Workbook
from openpyxl.styles import Font

from services.reporting.domain import CONDITION_LABELS, LEVEL_LABELS


@dataclass
class Sheet:
    key: str        # short name (XLSX sheet title)
    title: str      # heading
    headers: list[str]
    rows: list[list]


def _cond(c: dict) -> str:
    return "; ".join(f"{aspect} {CONDITION_LABELS.get(k, k)}: {n}" for aspect, d in sorted(c.items())
                     for k, n in sorted(d.items()))


EXIT_LABELS = {"deceased": "Meninggal", "moved_out": "Pindah keluar kabupaten", "ineligible": "Tidak layak"}


def _exit_rows(x: dict) -> list[list]:
    """Per program and village, a subtotal per kecamatan and program, then per program and in all."""
    reasons = list(EXIT_LABELS)
    rows: list[list] = []
    subtotal: dict[tuple[str, str], list[int]] = {}
    for v in x["villages"]:
        counts = [v[k] for k in reasons]
        rows.append([v["programme_identifier"], v["kecamatan_code"], v["kecamatan_name"], v["village_code"],
                     v["village_name"] or "(wilayah tidak tercatat)", *counts, sum(counts)])
        key = (v["kecamatan_code"], v["programme_identifier"])
        subtotal[key] = [a + b for a, b in zip(subtotal.get(key, [0] * len(reasons)), counts, strict=True)]
    names = {v["kecamatan_code"]: v["kecamatan_name"] for v in x["villages"]}
    for (kec, prog), counts in sorted(subtotal.items()):
        rows.append([prog, kec, names[kec], "", "Jumlah kecamatan", *counts, sum(counts)])
    for p in x["programs"]:
        counts = [p[k] for k in reasons]
        rows.append([p["programme_identifier"], "", "", "", "Jumlah program", *counts, sum(counts)])
    if x["programs"]:
        counts = [x[k] for k in reasons]
        rows.append(["Jumlah", "", "", "", "", *counts, sum(counts)])
    return rows


def sheets(r: dict) -> list[Sheet]:
    c = r["complaints"]
    areas_rows = []
    for k in r["areas"]:
        areas_rows.extend([k["kecamatan_code"], k["kecamatan_name"], v["village_code"],
                           v["village_name"] or "(wilayah tidak tercatat)",
                           v["enrolled"], v["people_paid"], v["amount_paid"], v["complaints_received"],
                           v["complaints_resolved"], v["visits_due"], v["visits_done"], v["kube_groups"]]
                          for v in k["villages"])
        t = k["totals"]
        areas_rows.append([k["kecamatan_code"], k["kecamatan_name"], "", "Jumlah kecamatan", t["enrolled"],
                           t["people_paid"], t["amount_paid"], t["complaints_received"], t["complaints_resolved"],
                           t["visits_due"], t["visits_done"], t["kube_groups"]])
    return [
        Sheet("program", "Peserta dan pembayaran per program",
              ["Program", "Peserta aktif", "Penerima dibayar", "Jumlah dibayar (Rp)", "Transaksi"],
              [[p["programme_identifier"], p["enrolled"], p["people_paid"], p["amount_paid"], p["payments"]]
               for p in r["programs"]]),
        Sheet("keluar", "Peserta keluar bulan ini menurut alasan",
              ["Program", "Kode kec.", "Kecamatan", "Kode desa", "Desa", *EXIT_LABELS.values(), "Jumlah"],
              _exit_rows(r["exits"])),
        Sheet("sumber_dana", "Realisasi per sumber dana (tahun berjalan)",
              ["Sumber dana", "Anggaran (Rp)", "Realisasi (Rp)", "Dibayar bulan ini (Rp)", "Realisasi (%)"],
              [[s["label"], s["allocation"], s["realised"], s["paid_in_period"], s["realisation_pct"]]
               for s in r["funding_sources"]]),
        Sheet("pengaduan", "Pengaduan",
              ["Tingkat", "Diterima", "Dirujuk masuk", "Selesai"],
              [[LEVEL_LABELS.get(lv["level"], lv["level"]), lv["registered"], lv["referred_in"], lv["resolved"]]
               for lv in c["by_level"]]
              + [["Jumlah", c["received"], sum(c["referred"].values()), c["resolved"]],
                 ["Lewat batas waktu (akhir bulan)", c["overdue"], "", ""],
                 ["Median hari penyelesaian", c["median_days_to_resolve"], "", ""]]),
        Sheet("kunjungan", "Kunjungan rumah per pendamping",
              ["Pendamping", "Wajib", "Dilakukan", "Cakupan (%)", "Ringkasan kondisi"],
              [[v["companion"], v["due"], v["done"], v["coverage_pct"], _cond(v["conditions"])]
               for v in r["visits"]["companions"]]
              + [["Jumlah", r["visits"]["due"], r["visits"]["done"], r["visits"]["coverage_pct"], ""]]),
        Sheet("kube", "KUBE per kecamatan",
              ["Kode", "Kecamatan", "Kelompok", "Dana (Rp)", "Anggota", "Pinjaman beredar (Rp)",
               "Tingkat pengembalian (%)", "Tunggakan (Rp)"],
              [[k["kecamatan_code"], k["kecamatan_name"], k["groups"], k["fund_amount"], k["members"],
                k["loans_outstanding"], k["repayment_rate_pct"], k["arrears"]] for k in r["kube"]]),
        Sheet("wilayah", "Rincian per kecamatan dan desa",
              ["Kode kec.", "Kecamatan", "Kode desa", "Desa", "Peserta aktif", "Penerima dibayar",
               "Jumlah dibayar (Rp)", "Pengaduan masuk", "Pengaduan selesai", "Kunjungan wajib",
               "Kunjungan dilakukan", "KUBE"], areas_rows),
    ]


def to_csv(r: dict) -> str:
    """One file, one block per table (title row, header row, rows, blank line)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([f"Rekap bulanan {r['period']}"])
    for sh in sheets(r):
        w.writerow([])
        w.writerow([sh.title])
        w.writerow(sh.headers)
        w.writerows([["" if v is None else v for v in row] for row in sh.rows])
    return buf.getvalue()


def to_xlsx(r: dict) -> bytes:
    wb = Workbook()
    wb.remove(wb.active)
    for sh in sheets(r):
        ws = wb.create_sheet(sh.key)
        ws.append([f"{sh.title} — {r['period']}"])
        ws["A1"].font = Font(bold=True)
        ws.append(sh.headers)
        for cell in ws[2]:
            cell.font = Font(bold=True)
        for row in sh.rows:
            ws.append(row)
        for col in ws.columns:
            ws.column_dimensions[col[0].column_letter].width = max(10, min(40, max(len(str(c.value or ""))
                                                                                     for c in col[1:]) + 2))
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()
