"""Reporting HTTP routes: the monthly recap (JSON, CSV, XLSX, printable page) and the dashboard."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from fastapi.templating import Jinja2Templates

from contracts import wilayah
from services.kit.runtime import ServiceRuntime
from services.reporting import charts, domain, exports, report, store

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
templates.env.filters["rp"] = lambda v: "-" if v is None else f"{v:,}".replace(",", ".")
templates.env.filters["days"] = lambda v: "-" if v is None else (f"{v:g}".replace(".", ",") + " hari")
templates.env.filters["pct"] = lambda v: "-" if v is None else f"{v:.2f}".replace(".", ",") + " %"

PERIOD = Query(None, description="the month, YYYY-MM", examples=["2026-11"])


def _period(value: str | None) -> str:
    try:
        return domain.parse_period(value)
    except domain.BadPeriod as exc:
        raise HTTPException(400, detail={"error": str(exc)}) from None


def router(rt: ServiceRuntime) -> APIRouter:
    r = APIRouter(tags=["reports"])

    async def recap(period: str | None) -> dict:
        p = _period(period)
        async with rt.sessions() as s:
            return await report.monthly(s, p)

    @r.get("/reports/enrolments", summary="people per program, village and enrolment status")
    async def enrolments(program: str | None = Query(None, description="only this program")) -> dict:
        async with rt.sessions() as s:
            rows = await store.counts(s, program)
        for row in rows:
            row["village_name"] = wilayah.name_of(row["village_code"])
        return {"items": rows}

    @r.get("/reports/monthly", summary="the monthly recap to Bappeda (rekap bulanan), as JSON")
    async def monthly(period: str | None = PERIOD) -> dict:
        return await recap(period)

    @r.get("/reports/monthly.csv", summary="the monthly recap as CSV (one block per table)",
           response_class=PlainTextResponse)
    async def monthly_csv(period: str | None = PERIOD) -> Response:
        data = await recap(period)
        return Response(exports.to_csv(data), media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": f'attachment; filename="rekap-{data["period"]}.csv"'})

    @r.get("/reports/monthly.xlsx", summary="the monthly recap as an Excel workbook (one sheet per table)")
    async def monthly_xlsx(period: str | None = PERIOD) -> Response:
        data = await recap(period)
        return Response(exports.to_xlsx(data), headers={
            "Content-Disposition": f'attachment; filename="rekap-{data["period"]}.xlsx"'},
            media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")

    @r.get("/reports/monthly.html", summary="the monthly recap as a printable page", response_class=HTMLResponse)
    async def monthly_html(request: Request, period: str | None = PERIOD) -> HTMLResponse:
        data = await recap(period)
        return templates.TemplateResponse(request, "monthly.html", {"r": data, "sheets": exports.sheets(data)})

    @r.get("/dashboard", summary="dashboard (Bahasa Indonesia) with charts, no internet needed",
           response_class=HTMLResponse)
    async def dashboard(request: Request, period: str | None = PERIOD) -> HTMLResponse:
        p = _period(period or domain.period_of(domain.today()))
        async with rt.sessions() as s:
            data = await report.monthly(s, p)
            trend = await report.complaint_trend(s, p, months=12)
        return templates.TemplateResponse(request, "dashboard.html", {
            "r": data, "charts": charts.dashboard(data, trend)})

    return r
