"""Reporting HTTP routes: the monthly recap (JSON, CSV, XLSX, printable page) and the dashboard."""
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response

from contracts import wilayah
from services.kit import web as kit_web
from services.kit.auth import Principal, Role, require
from services.reporting import charts, domain, exports, report, store, views

if TYPE_CHECKING:
    from services.reporting.app import Reporting

# the dashboard under the kit's look (kit.web: base template, stylesheet, menu for a logged-in
# official); the printable recap stays a page of its own
pages = kit_web.Pages("reporting", Path(__file__).parent / "templates", "Dasbor")
templates = pages.templates
templates.env.filters["rp"] = lambda v: "-" if v is None else f"{v:,}".replace(",", ".")
templates.env.filters["days"] = lambda v: "-" if v is None else (f"{v:g}".replace(".", ",") + " hari")
templates.env.filters["pct"] = lambda v: "-" if v is None else f"{v:.2f}".replace(".", ",") + " %"

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PERIOD = Query(None, description="the month, YYYY-MM", examples=["2026-11"])


def _parse(value: str | None) -> str:
    try:
        return domain.parse_period(value)
    except domain.BadPeriod as exc:
        raise HTTPException(400, detail={"error": str(exc)}) from None


def _period(period: str | None = PERIOD) -> str:
    return _parse(period)


def _period_or_now(period: str | None = PERIOD) -> str:
    """The dashboard shows this month when no period is given."""
    return _parse(period or domain.period_of(domain.today()))


Period = Annotated[str, Depends(_period)]
PeriodOrNow = Annotated[str, Depends(_period_or_now)]


def router(deps: "Reporting") -> APIRouter:
    # no `from __future__ import annotations` in this module: FastAPI must read `Session`, a
    # name local to this function, from the route signatures
    r = APIRouter(tags=["reports"])

    Session = Annotated[store.Reader, Depends(store.reader(deps.kit.sessions))]

    @r.get("/reports/enrolments", summary="people per program, village and enrolment status")
    async def enrolments(s: Session, program: str | None = Query(None, description="only this program")
                         ) -> views.EnrolmentCounts:
        rows = await store.counts(s, program)
        for row in rows:
            row["village_name"] = wilayah.name_of(row["village_code"])
        return views.EnrolmentCounts.model_validate({"items": rows})

    @r.get("/reports/monthly", summary="the monthly recap to Bappeda (rekap bulanan), as JSON")
    async def monthly(s: Session, period: Period) -> views.MonthlyRecap:
        return views.MonthlyRecap.model_validate(await report.monthly(s, period))

    @r.get("/reports/monthly.csv", summary="the monthly recap as CSV (one block per table)",
           response_class=PlainTextResponse)
    async def monthly_csv(s: Session, period: Period) -> Response:
        data = await report.monthly(s, period)
        return Response(exports.to_csv(data), media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": f'attachment; filename="rekap-{data["period"]}.csv"'})

    @r.get("/reports/monthly.xlsx", summary="the monthly recap as an Excel workbook (one sheet per table)",
           response_class=Response, responses={200: {"content": {XLSX: {}}, "description": "the workbook"}})
    async def monthly_xlsx(s: Session, period: Period) -> Response:
        data = await report.monthly(s, period)
        return Response(exports.to_xlsx(data), headers={
            "Content-Disposition": f'attachment; filename="rekap-{data["period"]}.xlsx"'},
            media_type=XLSX)

    @r.get("/reports/monthly.html", summary="the monthly recap as a printable page", response_class=HTMLResponse)
    async def monthly_html(request: Request, s: Session, period: Period) -> HTMLResponse:
        data = await report.monthly(s, period)
        return templates.TemplateResponse(request, "monthly.html", {"r": data, "sheets": exports.sheets(data)})

    @r.get("/dashboard", summary="dashboard (Bahasa Indonesia) with charts, no internet needed",
           response_class=HTMLResponse)
    async def dashboard(request: Request, s: Session, period: PeriodOrNow) -> HTMLResponse:
        data = await report.monthly(s, period)
        trend = await report.complaint_trend(s, period, months=12)
        return pages.render(request, "dashboard.html", kit_web.principal(request), r=data,
                            charts=charts.dashboard(data, trend))

    @r.get("/reports/monthly/companions", summary="coordinator: home visits per companion, by username")
    async def companions(_p: Annotated[Principal, Depends(require(Role.coordinator))], s: Session,
                         period: Period) -> views.CompanionVisits:  # the token first: no caller learns what
        # a period check says; the public recap numbers companions, their usernames only behind login (issue 15)
        data = await report.monthly(s, period, companion_names=True)
        return views.CompanionVisits.model_validate({"period": period, **data["visits"]})

    return r
