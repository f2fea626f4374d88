"""Server-rendered pages in Bahasa Indonesia for the Puskesos front and back office.

Plain HTML forms under the kit's one look and one login (kit.web: base template, stylesheet,
navigation, /ui/masuk and the staff-token cookie), no CDN: usable on a cheap laptop and a
slow connection. The pages call the same functions as the API.
"""
from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError

from contracts import wilayah
from contracts.envelope import utcnow
from contracts.intake import CaseCategory, CaseKind, CaseLevel, CaseStatus, Channel, PersonStatus
from services.intake import cases, fieldwork, visits
from services.intake.domain import ACTIONS, LEVEL_ROLES, RuleError, period_of, today_wib
from services.kit import web as kit_web
from services.kit.auth import Principal, Role, staff_accounts
from services.kit.web import COOKIE, Viewer, principal, principal_of  # noqa: F401 - the names intake's pages use

if TYPE_CHECKING:
    from services.intake.app import Intake

HERE = Path(__file__).parent
pages = kit_web.Pages("intake", HERE / "templates", "Puskesos")
templates = pages.templates

LABELS: dict[str, dict[str, str]] = {
    "category": {
        CaseCategory.not_receiving_aid: "Tidak menerima bantuan", CaseCategory.wrong_data: "Data salah",
        CaseCategory.excluded_from_program: "Tidak terdaftar di program", CaseCategory.health: "Kesehatan",
        CaseCategory.education: "Pendidikan", CaseCategory.housing: "Perumahan",
        CaseCategory.disability: "Disabilitas", CaseCategory.elderly_care: "Lansia", CaseCategory.other: "Lainnya"},
    "channel": {Channel.walk_in: "Datang langsung", Channel.phone: "Telepon", Channel.letter: "Surat",
                Channel.online: "Daring"},
    "kind": {CaseKind.complaint: "Pengaduan", CaseKind.request: "Permohonan"},
    "level": {CaseLevel.village: "Desa (Puskesos)", CaseLevel.kecamatan: "Kecamatan (Supervisor SLRT)",
              CaseLevel.kabupaten: "Kabupaten (Manajer SLRT)", CaseLevel.agency: "Instansi program"},
    "status": {CaseStatus.open: "Baru", CaseStatus.in_progress: "Sedang ditangani", CaseStatus.answered: "Dijawab",
               CaseStatus.resolved: "Selesai"},
    "person_status": {PersonStatus.found: "Terdaftar di basis data terpadu",
                      PersonStatus.possible_match: "Mungkin terdaftar (cocok nama)",
                      PersonStatus.proposed: "Tidak terdaftar: diusulkan",
                      PersonStatus.not_found: "Tidak terdaftar (NIK/KK belum ada)",
                      PersonStatus.accepted: "Usulan diterima", PersonStatus.rejected: "Usulan ditolak"},
    "action": {"register": "Didaftarkan", "handle": "Ditangani", "answer": "Dijawab", "refer": "Dirujuk",
               "resolve": "Diselesaikan", "escalate": "Dieskalasi otomatis (lewat tenggat)",
               "proposal_accepted": "Usulan diterima", "proposal_rejected": "Usulan ditolak"},
    "outcome": {"resolved": "Selesai", "not_eligible": "Tidak memenuhi syarat", "withdrawn": "Dicabut pelapor",
                "referred_out": "Dirujuk ke luar"},
    "condition": {"good": "Baik", "fair": "Cukup", "poor": "Kurang", "critical": "Buruk (perlu tindakan)"},
    "aid_use": {"as_intended": "Sesuai peruntukan", "partly": "Sebagian", "not_as_intended": "Tidak sesuai",
                "not_received": "Belum diterima"},
    "need": {"health": "Kesehatan", "food": "Pangan", "housing": "Rumah", "education": "Pendidikan",
             "assistive_device": "Alat bantu", "income": "Penghasilan", "documents": "Dokumen",
             "care": "Perawatan", "other": "Lainnya"},
}
FIELD_LABELS = {"reporter.nik": "NIK", "reporter.name": "Nama", "reporter.no_kk": "No. KK",
                "reporter.address": "Alamat", "reporter.contact": "Kontak", "reporter": "Pelapor",
                "village_code": "Desa", "category": "Kategori", "channel": "Kanal", "kind": "Jenis",
                "text": "Isi pengaduan", "answer": "Jawaban"}


def label(kind: str, value: Any) -> str:
    return LABELS.get(kind, {}).get(value, str(value) if value is not None else "-")


templates.env.globals.update(label=label, LABELS=LABELS)


def _login_redirect() -> RedirectResponse:
    return RedirectResponse(kit_web.LOGIN, status_code=303)


def _page(request: Request, name: str, p: Principal | None, status_code: int = 200, **ctx: Any) -> HTMLResponse:
    return pages.render(request, name, p, status_code, **ctx)


def _problems(exc: ValidationError) -> list[str]:
    out = []
    for e in exc.errors():
        field = ".".join(str(x) for x in e["loc"])
        out.append(f"{FIELD_LABELS.get(field, field or 'Formulir')}: {e['msg']}")
    return out


def router(deps: Intake) -> APIRouter:
    r = APIRouter(prefix="/ui", include_in_schema=False)

    @r.get("/")
    async def home(request: Request, p: Viewer) -> Response:
        if p is None:
            return _login_redirect()
        if kit_web.HOME[p.role][0] != "intake":  # a verifier's, manager's or auditor's pages are elsewhere
            return RedirectResponse(kit_web.home_url(request, p), status_code=303)
        return _page(request, "beranda.html", p)

    @r.get("/cek")
    async def check(request: Request, p: Viewer, nik: str = "", name: str = "", village_code: str = "") -> Response:
        if p is None:
            return _login_redirect()
        form = {"nik": nik, "name": name, "village_code": village_code or (p.area if len(p.area) == 10 else "")}
        if not (nik or name):
            return _page(request, "cek.html", p, form=form)
        try:
            result = await cases.check_person(deps, p, nik=nik, name=name, village_code=form["village_code"])
        except RuleError as exc:
            return _page(request, "cek.html", p, exc.status, form=form, error=exc.message)
        except cases.RegistryUnavailable:
            return _page(request, "cek.html", p, 503, form=form, error="Basis data terpadu tidak menjawab; coba lagi.")
        return _page(request, "cek.html", p, form=form, result=result)

    @r.get("/daftar")
    async def register_form(request: Request, p: Viewer, nik: str = "", name: str = "") -> Response:
        if p is None:
            return _login_redirect()
        # a fresh key per form: a double click or a resubmitted page registers one case
        return _page(request, "daftar.html", p, form={"village_code": p.area if len(p.area) == 10 else "",
                                                      "nik": nik, "name": name, "request_key": uuid.uuid4().hex})

    @r.post("/daftar")
    async def register(request: Request, p: Viewer) -> Response:
        if p is None:
            return _login_redirect()
        f = {k: str(v).strip() for k, v in (await request.form()).items()}
        raw = {"reporter": {k: f.get(k) or None for k in ("nik", "name", "no_kk")}
               | {"address": f.get("address", ""), "contact": f.get("contact", "")},
               "village_code": f.get("village_code", ""), "kind": f.get("kind") or "complaint",
               "category": f.get("category", ""), "channel": f.get("channel", ""), "text": f.get("text", "")}
        try:
            data = cases.CaseIn.model_validate(raw)
            done = await cases.register(deps, p, data, request_key=f.get("request_key") or None)
        except ValidationError as exc:
            return _page(request, "daftar.html", p, 422, form=f, errors=_problems(exc))
        except RuleError as exc:
            return _page(request, "daftar.html", p, exc.status, form=f, errors=[exc.message])
        except cases.RegistryUnavailable:
            return _page(request, "daftar.html", p, 503, form=f,
                         errors=["Basis data terpadu tidak menjawab. Pengaduan belum tersimpan; coba lagi."])
        return RedirectResponse(f"/ui/kasus/{quote(done['ticket'])}?baru=1", status_code=303)

    @r.get("/cari")
    async def find(request: Request, p: Viewer, tiket: str = "") -> Response:
        if p is None:
            return _login_redirect()
        tiket = tiket.strip().upper()
        if tiket and await cases.get_case(deps, p, tiket):
            return RedirectResponse(f"/ui/kasus/{quote(tiket)}", status_code=303)
        return _page(request, "beranda.html", p, 404 if tiket else 200, tiket=tiket,
                     error=f"Tiket {tiket} tidak ditemukan di wilayah Anda." if tiket else None)

    @r.get("/antrean")
    async def queue(request: Request, p: Viewer, offset: int = 0, terlambat: int = 0) -> Response:
        if p is None:
            return _login_redirect()
        limit, offset = 20, max(offset, 0)
        if terlambat:
            page = await cases.list_cases(deps, p, overdue_at=utcnow(), limit=limit, offset=offset)
        else:
            page = await cases.list_cases(deps, p, queue=True, limit=limit, offset=offset)
        return _page(request, "antrean.html", p, page=page, limit=limit, overdue=bool(terlambat), now=utcnow())

    @r.get("/kasus/{ref}")
    async def case_page(request: Request, p: Viewer, ref: str, baru: int = 0, pesan: str = "") -> Response:
        if p is None:
            return _login_redirect()
        case = await cases.get_case(deps, p, ref)
        if case is None:
            return _page(request, "beranda.html", p, 404, error=f"Kasus {ref} tidak ditemukan di wilayah Anda.")
        steps = await cases.history(deps, p, ref) or []
        level = CaseLevel(case["level"])
        can_act = p.role in LEVEL_ROLES[level] and case["status"] != CaseStatus.resolved
        return _page(request, "kasus.html", p, case=case, steps=steps, new=bool(baru), message=pesan,
                     can_act=can_act, next_level=level.next(), needs_programme=level.next() is CaseLevel.agency)

    @r.post("/kasus/{ref}/{action}")
    async def case_action(request: Request, p: Viewer, ref: str, action: str) -> Response:
        if p is None:
            return _login_redirect()
        if action not in ACTIONS:
            raise HTTPException(404)
        f = {k: str(v).strip() for k, v in (await request.form()).items()}
        try:
            await cases.act(deps, p, ref, action, note=f.get("note", ""), answer=f.get("answer") or None,
                            outcome=f.get("outcome") or None, programme=f.get("programme_identifier") or None)
        except RuleError as exc:
            return RedirectResponse(f"/ui/kasus/{quote(ref)}?pesan={quote('Gagal: ' + exc.message)}", status_code=303)
        return RedirectResponse(f"/ui/kasus/{quote(ref)}?pesan={quote(label('action', action))}", status_code=303)

    return r


def visit_router(deps: Intake) -> APIRouter:
    """Companions' monthly visits and the coordinator's recap."""
    r = APIRouter(prefix="/ui", include_in_schema=False)

    def this_month() -> str:
        return period_of(today_wib(utcnow()))

    @r.get("/kunjungan")
    async def caseload() -> Response:
        # the companion's page moved to /ui/pendamping (a phone page that works offline)
        return RedirectResponse("/ui/pendamping", status_code=303)

    @r.get("/rekap")
    async def recap(request: Request, p: Viewer, period: str = "") -> Response:
        if p is None:
            return _login_redirect()
        period = period or this_month()
        if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", period):
            return _page(request, "beranda.html", p, 422, error=f"Periode {period} bukan bulan (YYYY-MM).")
        try:
            data = await visits.summary(deps, p, period, limit=500)
        except RuleError as exc:
            return _page(request, "beranda.html", p, exc.status, error=exc.message)
        return _page(request, "rekap.html", p, data=data, period=period)

    return r


PERIOD = re.compile(r"\d{4}-(0[1-9]|1[0-2])")


def _companions_in(request: Request, p: Principal) -> list[str]:
    """The companions' accounts in the coordinator's area (for the form's suggestions); none
    when the service runs without an accounts file (tokens only)."""
    users = staff_accounts(request)
    if users is None:
        return []
    return sorted(u.username for u in users.load().values()
                  if u.role is Role.companion and not u.disabled and u.area.startswith(p.area))


def _villages_of(area: str) -> list[str]:
    return wilayah.villages_in(area) if len(area) >= 6 else []


def field_router(deps: Intake) -> APIRouter:
    """The coordinator's pages (assignments, coverage, overdue cases per office) and the
    companion's phone page, which keeps a report on the phone until it can be sent (issue 14)."""
    r = APIRouter(prefix="/ui", include_in_schema=False)

    def this_month() -> str:
        return period_of(today_wib(utcnow()))

    @r.get("/koordinator")
    async def assignment_board(request: Request, p: Viewer, desa: str = "", belum: int = 0, offset: int = 0,
                               pesan: str = "", gagal: int = 0) -> Response:
        if p is None:
            return _login_redirect()
        limit, offset = 50, max(offset, 0)
        try:
            page = await fieldwork.board(deps, p, village=desa if desa and p.covers(desa) else None,
                                         unassigned_only=bool(belum), limit=limit, offset=offset)
        except RuleError as exc:
            return _page(request, "beranda.html", p, exc.status, error=exc.message)
        return _page(request, "koordinator.html", p, page=page, desa=desa, belum=bool(belum), message=pesan,
                     failed=bool(gagal), villages=_villages_of(p.area), companions=_companions_in(request, p))

    def back(f: dict[str, str], msg: str, failed: bool) -> RedirectResponse:
        query = f"pesan={quote(msg)}" + ("&gagal=1" if failed else "")
        for k in ("desa", "belum", "offset"):
            if f.get(k):
                query += f"&{k}={quote(f[k])}"
        return RedirectResponse(f"/ui/koordinator?{query}#papan", status_code=303)

    @r.post("/koordinator/tugaskan")
    async def assign(request: Request, p: Viewer) -> Response:
        if p is None:
            return _login_redirect()
        f = {k: str(v).strip() for k, v in (await request.form()).items()}
        try:
            data = visits.AssignmentIn.model_validate({"companion": f.get("companion", ""), "nik": f.get("nik", ""),
                                                        "programme_identifier": f.get("programme_identifier") or None})
            done = await visits.assign(deps, p, data)
        except ValidationError as exc:
            return back(f, "Gagal: " + "; ".join(_problems(exc)), True)
        except RuleError as exc:
            return back(f, "Gagal: " + exc.message, True)
        return back(f, f"NIK {done['nik']} ditugaskan ke {done['companion']}", False)

    @r.post("/koordinator/akhiri")
    async def unassign(request: Request, p: Viewer) -> Response:
        if p is None:
            return _login_redirect()
        f = {k: str(v).strip() for k, v in (await request.form()).items()}
        try:
            done = await fieldwork.unassign(deps, p, f.get("nik", ""), f.get("programme_identifier", ""))
        except RuleError as exc:
            return back(f, "Gagal: " + exc.message, True)
        return back(f, f"Penugasan NIK {done['nik']} ke {done['companion']} diakhiri", False)

    @r.get("/koordinator/cakupan")
    async def coverage(request: Request, p: Viewer, period: str = "") -> Response:
        if p is None:
            return _login_redirect()
        period = period or this_month()
        if not PERIOD.fullmatch(period):
            return _page(request, "beranda.html", p, 422, error=f"Periode {period} bukan bulan (YYYY-MM).")
        try:
            data = await fieldwork.coverage(deps, p, period)
        except RuleError as exc:
            return _page(request, "beranda.html", p, exc.status, error=exc.message)
        return _page(request, "cakupan.html", p, data=data, period=period)

    @r.get("/koordinator/terlambat")
    async def overdue(request: Request, p: Viewer) -> Response:
        if p is None:
            return _login_redirect()
        try:
            data = await fieldwork.overdue_by_office(deps, p)
        except RuleError as exc:
            return _page(request, "beranda.html", p, exc.status, error=exc.message)
        return _page(request, "terlambat.html", p, data=data)

    @r.get("/pendamping")
    async def my_beneficiaries(request: Request, p: Viewer, pesan: str = "", gagal: int = 0) -> Response:
        if p is None:
            return _login_redirect()
        period = this_month()
        try:
            items = await visits.caseload(deps, p, p.user, period)
        except RuleError as exc:
            return _page(request, "beranda.html", p, exc.status, error=exc.message)
        # a fresh id per rendered form: the same form posted twice is one report; the phone's
        # script gives each report it keeps an id of its own
        return _page(request, "pendamping.html", p, items=items, period=period, message=pesan, failed=bool(gagal),
                     today=today_wib(utcnow()).isoformat(), visit_id=str(uuid.uuid4()),
                     visited=sum(1 for i in items if i["visited_on"]))

    @r.post("/pendamping/lapor")
    async def file_report(request: Request, p: Viewer) -> Response:
        """A plain form post (no script: answered with a redirect) or the phone's script
        sending a kept report (Accept: application/json: answered with {ok, message})."""
        wants_json = "application/json" in request.headers.get("accept", "")
        if p is None:
            if wants_json:  # the script keeps the report and asks the companion to log in again
                return JSONResponse({"ok": False, "message": "Sesi berakhir: masuk lagi."}, status_code=401)
            return _login_redirect()
        form = await request.form()
        raw: dict[str, Any] = {k: str(form.get(k, "")).strip() for k in (
            "visit_id", "visit_date", "physical_condition", "social_condition", "aid_use", "notes")}
        raw["nik"], _, programme = str(form.get("beneficiary", "")).partition("/")
        raw["programme_identifier"] = programme or None
        raw["visit_id"] = raw["visit_id"] or None
        raw["needs"] = [str(v) for v in form.getlist("needs")]
        status, replayed = 201, False
        try:
            done = await visits.file_visit(deps, p, visits.VisitIn.model_validate(raw))
        except ValidationError as exc:
            status, msg = 422, "Gagal: " + "; ".join(_problems(exc))
        except RuleError as exc:
            status, msg = exc.status, "Gagal: " + exc.message
        else:
            replayed = bool(done.get("replayed"))
            msg = f"Laporan kunjungan {raw['nik']} untuk {done['period']} terkirim"
        if wants_json:
            return JSONResponse({"ok": status == 201, "replayed": replayed, "message": msg,
                                 "nik": raw["nik"], "visit_date": raw["visit_date"]},
                                status_code=200 if status == 201 else status)
        return RedirectResponse(f"/ui/pendamping?pesan={quote(msg)}" + ("&gagal=1" if status != 201 else ""),
                                status_code=303)

    @r.get("/sw.js")
    async def service_worker() -> Response:
        # served from /ui/ (a worker controls only pages at or below its own path); always
        # checked again, so a new version reaches the phones at their next visit online
        return FileResponse(HERE / "static" / "pendamping-sw.js", media_type="text/javascript",
                            headers={"Cache-Control": "no-cache"})

    return r


def mount(app: FastAPI, deps: Intake) -> None:
    pages.mount(app)  # the kit's stylesheet at /ui/kit, /ui/masuk and /ui/keluar
    app.mount("/ui/static", StaticFiles(directory=str(HERE / "static")), name="intake-static")
    app.include_router(router(deps))
    app.include_router(visit_router(deps))
    app.include_router(field_router(deps))
