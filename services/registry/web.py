"""The verifier's pages (Dinas Sosial, TKSK): proposals and their decision, the data-quality
queue and its resolution (life-status disputes included), the verification round worklist with
results entry, person and household pages with their history (issue 14).

Server-rendered under the kit's look and login (kit.web); every page is scoped to the
verifier's area by the same use-case functions and store reads as the JSON API (api.py,
verivali.py): something outside the area reads as "not found", the same as missing.
"""
from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from contracts.lookup import LookupRequest
from contracts.registry import ProposalDecision, VerificationResult
from contracts.values import kk_problems, nik_problems
from services.kit import web as kit_web
from services.kit.auth import Principal, Role
from services.kit.web import Viewer
from services.registry import api, life, lookup, store, verivali

if TYPE_CHECKING:
    from services.registry.app import Registry

HERE = Path(__file__).parent
pages = kit_web.Pages("registry", HERE / "templates", "Verivali")
PAGE = 20

LABELS: dict[str, dict[str, str]] = {
    "result": {VerificationResult.verified: "Terverifikasi (data benar, layak)",
               VerificationResult.corrected: "Terverifikasi, data dikoreksi",
               VerificationResult.not_found: "Tidak ditemukan di alamat",
               VerificationResult.moved: "Pindah", VerificationResult.ineligible: "Tidak layak lagi",
               VerificationResult.deceased: "Meninggal"},
    "proposal": {"proposed": "Menunggu keputusan", "accepted": "Diterima", "rejected": "Ditolak"},
    "kind": {"name_mismatch": "Nama berbeda antarprogram", "birth_date_mismatch": "Tanggal lahir berbeda",
             "death_while_active": "Dilaporkan meninggal, masih aktif di program lain"},
    "life": {"alive": "Hidup", "deceased": "Meninggal", "moved_out": "Pindah ke luar kabupaten",
             "ineligible": "Tidak layak", "disputed": "Diperselisihkan (pembayaran ditahan)"},
    "life_source": {"crvs": "Dukcapil", "verifier": "Verifikator", "agency": "Instansi program", "": "-"},
    "enrolment": {"active": "Aktif", "suspended": "Ditangguhkan", "exited": "Keluar", "deceased": "Meninggal"},
    "sex": {"M": "Laki-laki", "F": "Perempuan"},
    "round": {"open": "Berjalan", "closed": "Ditutup"},
    "qstatus": {"open": "Terbuka", "resolved": "Selesai"},
}


def label(kind: str, value: Any) -> str:
    return LABELS.get(kind, {}).get(value, str(value) if value not in (None, "") else "-")


pages.templates.env.globals.update(label=label, LABELS=LABELS)


def _failure(exc: HTTPException) -> str:
    """An API refusal in the verifier's words (the API's own sentence kept after it)."""
    said = exc.detail.get("error", "") if isinstance(exc.detail, dict) else str(exc.detail)
    lead = {400: "Isian tidak dapat diterima", 403: "Di luar wilayah Anda", 404: "Tidak ditemukan di wilayah Anda",
            409: "Sudah diputuskan sebelumnya"}.get(exc.status_code, "Gagal")
    return f"{lead} ({said})" if said else lead


def _problems(exc: ValidationError) -> str:
    return "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())


def _back(path: str, msg: str, failed: bool = False, **query: str) -> RedirectResponse:
    q = {k: v for k, v in query.items() if v} | {"pesan": msg} | ({"gagal": "1"} if failed else {})
    return RedirectResponse(f"{path}?{urlencode(q)}", status_code=303)


def router(reg: Registry) -> APIRouter:  # noqa: C901 - one page per function, read top to bottom
    r = APIRouter(prefix="/ui", include_in_schema=False)

    def gate(request: Request, p: Principal | None) -> Response | None:
        """None if a verifier may see the page; else the login page or a page saying whose it is."""
        if p is None:
            return kit_web.login_redirect(request)
        if p.role is not Role.verifier:
            return pages.render(request, "bukan.html", p, 403)
        return None

    def page(request: Request, name: str, p: Principal, code: int = 200, **ctx: Any) -> HTMLResponse:
        return pages.render(request, name, p, code, message=request.query_params.get("pesan", ""),
                            failed=bool(request.query_params.get("gagal")), **ctx)

    @r.get("/")
    async def home(request: Request, p: Viewer) -> Response:
        if (stop := gate(request, p)) is not None:
            return stop
        assert p is not None
        async with reg.kit.sessions() as s:
            waiting, _ = await store.proposals_page(s, "proposed", p.area, 1, 0)
            open_items, _ = await store.data_quality_page(s, "open", None, p.area, 1, 0)
            disputes, _ = await store.data_quality_page(s, "open", "death_while_active", p.area, 1, 0)
            rounds = [x for x in await store.latest_rounds(s) if _round_visible(x, p)]
        current = next((x for x in rounds if x.status == "open"), None)
        return page(request, "beranda.html", p, waiting=waiting, open_items=open_items, disputes=disputes,
                    current=current)

    # ---- proposals (usulan) ----

    @r.get("/usulan")
    async def proposals(request: Request, p: Viewer, status: str = "proposed", offset: int = 0) -> Response:
        if (stop := gate(request, p)) is not None:
            return stop
        assert p is not None
        status = status if status in LABELS["proposal"] else "proposed"
        offset = max(offset, 0)
        async with reg.kit.sessions() as s:
            total, rows = await store.proposals_page(s, status, p.area, PAGE, offset)
        return page(request, "usulan.html", p, items=rows, total=total, status=status, offset=offset, limit=PAGE)

    @r.post("/usulan/{proposal_id}/keputusan")
    async def decide(request: Request, p: Viewer, proposal_id: str) -> Response:
        if (stop := gate(request, p)) is not None:
            return stop
        assert p is not None
        f = {k: str(v).strip() for k, v in (await request.form()).items()}
        back = {"offset": f.get("offset", "")}
        try:
            body = verivali.DecisionIn.model_validate({"decision": f.get("decision", ""), "reason": f.get("reason", "")})
            done = await verivali.decide(reg, _uuid(proposal_id), body, p)
        except ValidationError as exc:
            msg = "alasan wajib diisi untuk penolakan" if "reason" in str(exc) else _problems(exc)
            return _back("/ui/usulan", f"Gagal: {msg}", True, **back)
        except HTTPException as exc:
            return _back("/ui/usulan", f"Gagal: {_failure(exc)}", True, **back)
        if done["status"] == ProposalDecision.accepted:
            where = ", ".join(done["enrolled_in"] + done["forwarded_to"]) or "belum ada program"
            msg = f"Usulan {f.get('name', '')} diterima; program: {where}"
        else:
            msg = f"Usulan {f.get('name', '')} ditolak: {done['reason']}"
        return _back("/ui/usulan", msg, **back)

    # ---- data quality (mutu data) ----

    @r.get("/mutu")
    async def quality(request: Request, p: Viewer, status: str = "open", kind: str = "", offset: int = 0) -> Response:
        if (stop := gate(request, p)) is not None:
            return stop
        assert p is not None
        status = status if status in LABELS["qstatus"] else "open"
        kind = kind if kind in LABELS["kind"] else ""
        offset = max(offset, 0)
        async with reg.kit.sessions() as s:
            total, rows = await store.data_quality_page(s, status, kind or None, p.area, PAGE, offset)
            lives = {q.nik: await life.status_of(s, q.nik) for q in rows if q.kind == "death_while_active"}
        return page(request, "mutu.html", p, items=rows, total=total, status=status, kind=kind, offset=offset,
                    limit=PAGE, lives=lives)

    @r.post("/mutu/{conflict_id}/selesai")
    async def resolve(request: Request, p: Viewer, conflict_id: str) -> Response:
        if (stop := gate(request, p)) is not None:
            return stop
        assert p is not None
        f = {k: str(v).strip() for k, v in (await request.form()).items()}
        back = {"kind": f.get("kind", ""), "offset": f.get("offset", "")}
        try:
            body = api.Resolution.model_validate({"resolution": f.get("resolution", ""),
                                                  "life_status": f.get("life_status") or None})
            done = await api.resolve_conflict(reg, _uuid(conflict_id), body.resolution, p, body.life_status)
        except ValidationError as exc:
            msg = "tulis temuan Anda (paling sedikit 3 huruf)" if "resolution" in str(exc) else _problems(exc)
            return _back("/ui/mutu", f"Gagal: {msg}", True, **back)
        except HTTPException as exc:
            return _back("/ui/mutu", f"Gagal: {_failure(exc)}", True, **back)
        after = f"; status hidup: {label('life', done['life_status'])}" if done.get("life_status") else ""
        return _back("/ui/mutu", f"Temuan NIK {f.get('nik', '')} tersimpan{after}", **back)

    # ---- verification rounds (verivali) ----

    @r.get("/verivali")
    async def rounds(request: Request, p: Viewer) -> Response:
        if (stop := gate(request, p)) is not None:
            return stop
        assert p is not None
        async with reg.kit.sessions() as s:
            rows = [x for x in await store.latest_rounds(s) if _round_visible(x, p)]
        return page(request, "verivali.html", p, rounds=rows)

    @r.post("/verivali/buka")
    async def open_round(request: Request, p: Viewer) -> Response:
        if (stop := gate(request, p)) is not None:
            return stop
        assert p is not None
        area = str((await request.form()).get("area", "")).strip() or p.area
        try:
            body = verivali.RoundIn.model_validate({"area": area})
            if not p.covers(body.area) or len(body.area) < len(p.area):
                raise HTTPException(403, detail={"error": f"{body.area or 'kabupaten'} di luar wilayah {p.area}"})
            done = await verivali.open_round(reg, body.area, p)
        except ValidationError:
            return _back("/ui/verivali", f"Gagal: kode wilayah {area} tidak sah", True)
        except HTTPException as exc:
            return _back("/ui/verivali", f"Gagal: {_failure(exc)}", True)
        return RedirectResponse(f"/ui/verivali/{done['round_id']}?pesan={quote('Putaran dibuka')}", status_code=303)

    @r.get("/verivali/{round_id}")
    async def worklist(request: Request, p: Viewer, round_id: str, desa: str = "", jatuh_tempo: int = 0,
                       offset: int = 0) -> Response:
        if (stop := gate(request, p)) is not None:
            return stop
        assert p is not None
        offset = max(offset, 0)
        try:
            rid = _uuid(round_id)
            async with reg.kit.sessions() as s:
                rnd = await store.verification_round(s, rid)
            if rnd is None or not _round_visible(rnd, p):
                raise HTTPException(404, detail={"error": f"no verification round {round_id}"})
            data = await verivali.unverified(reg, rid, desa or None, PAGE, offset, p, bool(jatuh_tempo))
        except HTTPException as exc:
            return page(request, "beranda_kosong.html", p, exc.status_code, error=_failure(exc))
        return page(request, "putaran.html", p, rnd=rnd, data=data, desa=desa, due_only=bool(jatuh_tempo),
                    offset=offset, limit=PAGE, results=LABELS["result"])

    @r.post("/verivali/{round_id}/hasil")
    async def result(request: Request, p: Viewer, round_id: str) -> Response:
        if (stop := gate(request, p)) is not None:
            return stop
        assert p is not None
        f = {k: str(v).strip() for k, v in (await request.form()).items()}
        here = f"/ui/verivali/{quote(round_id)}"
        back = {"desa": f.get("desa", ""), "jatuh_tempo": f.get("jatuh_tempo", ""), "offset": f.get("offset", "")}
        try:
            body = verivali.ResultIn.model_validate({"nik": f.get("nik", ""), "result": f.get("result", ""),
                                                     "note": f.get("note", "")})
            done = await verivali.record_result(reg, _uuid(round_id), body, p)
        except ValidationError as exc:
            return _back(here, f"Gagal: {_problems(exc)}", True, **back)
        except HTTPException as exc:
            return _back(here, f"Gagal: {_failure(exc)}", True, **back)
        return _back(here, f"Hasil NIK {done['nik']}: {label('result', done['result'])}", **back)

    @r.post("/verivali/{round_id}/tutup")
    async def close(request: Request, p: Viewer, round_id: str) -> Response:
        if (stop := gate(request, p)) is not None:
            return stop
        assert p is not None
        here = f"/ui/verivali/{quote(round_id)}"
        try:
            rid = _uuid(round_id)
            async with reg.kit.sessions() as s:
                rnd = await store.verification_round(s, rid)
            if rnd is None or not _round_visible(rnd, p) or not rnd.area.startswith(p.area):
                # closing counts the whole round's area: only someone whose area covers it
                raise HTTPException(403, detail={"error": "the round covers more than your area"})
            done = await verivali.close_round(reg, rid, p)
        except HTTPException as exc:
            return _back(here, f"Gagal: {_failure(exc)}", True)
        return _back(here, f"Putaran ditutup: {done['verified']} terverifikasi, {done['not_verified']} belum")

    # ---- people and households ----

    @r.get("/warga")
    async def find(request: Request, p: Viewer, nik: str = "", no_kk: str = "", name: str = "",
                   village_code: str = "") -> Response:
        if (stop := gate(request, p)) is not None:
            return stop
        assert p is not None
        form = {"nik": nik.strip(), "no_kk": no_kk.strip(), "name": name.strip(),
                "village_code": village_code.strip() or (p.area if len(p.area) == 10 else "")}
        if not (form["nik"] or form["no_kk"] or form["name"]):
            return page(request, "warga_cari.html", p, form=form)
        if form["nik"] and len(form["nik"]) == 16 and form["nik"].isdigit() and not form["no_kk"]:
            return RedirectResponse(f"/ui/warga/{form['nik']}", status_code=303)
        req = LookupRequest.model_construct(nik=form["nik"] or None, no_kk=form["no_kk"] or None,
                                            name=form["name"] or None, village_code=form["village_code"] or None,
                                            limit=50)
        bad = lookup.problems(req)
        if form["village_code"] and not p.covers(form["village_code"]):
            bad = [*bad, f"desa {form['village_code']} di luar wilayah Anda"]
        if bad:
            return page(request, "warga_cari.html", p, 400, form=form, error="; ".join(bad))
        reply = await lookup.answer(reg, req, area=p.area)
        return page(request, "warga_cari.html", p, form=form, reply=reply)

    @r.get("/warga/{nik}")
    async def person(request: Request, p: Viewer, nik: str, pada: str = "") -> Response:
        if (stop := gate(request, p)) is not None:
            return stop
        assert p is not None
        missing = f"Warga dengan NIK {nik} tidak ditemukan di wilayah Anda."
        if nik_problems(nik):
            return page(request, "beranda_kosong.html", p, 404, error=missing)
        try:  # "the state on that day", as GET /people/{nik}/history?as_of=
            as_of = dt.date.fromisoformat(pada) if pada else None
        except ValueError:
            as_of, pada = None, ""
        async with reg.kit.sessions() as s:
            view = await store.person_view(s, nik)
            hist = await store.person_history_view(s, nik, as_of) if view else None
            current = await life.status_of(s, nik) if view else None
            changes = await store.life_history_of(s, nik) if view else []
        if view is None or not p.covers(view["village_code"]):  # the same answer as missing (issue 15)
            return page(request, "beranda_kosong.html", p, 404, error=missing)
        return page(request, "warga.html", p, person=view, hist=hist, life=current, changes=changes, pada=pada)

    @r.get("/keluarga/{no_kk}")
    async def household(request: Request, p: Viewer, no_kk: str) -> Response:
        if (stop := gate(request, p)) is not None:
            return stop
        assert p is not None
        missing = f"Keluarga dengan No. KK {no_kk} tidak ditemukan di wilayah Anda."
        if kk_problems(no_kk):
            return page(request, "beranda_kosong.html", p, 404, error=missing)
        async with reg.kit.sessions() as s:
            h = await store.household_view(s, no_kk)
        if h is None or not p.covers(h["village_code"]):
            return page(request, "beranda_kosong.html", p, 404, error=missing)
        return page(request, "keluarga.html", p, h=h)

    return r


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise HTTPException(404, detail={"error": f"no item {value}"}) from None


def _round_visible(rnd: Any, p: Principal) -> bool:
    """A round for the verifier's area, inside it, or containing it (a regency round has work in
    every village)."""
    return rnd.area.startswith(p.area) or p.area.startswith(rnd.area)


def mount(app: FastAPI, reg: Registry) -> None:
    pages.mount(app)  # the kit's stylesheet at /ui/kit, /ui/masuk and /ui/keluar
    app.include_router(router(reg))
