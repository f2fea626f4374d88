"""The public realisation page (issue 14): no login, no personal data, no staff names, under
the kit's one look (kit.web); printable for the notice board of a village hall."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response

from services.kit import web as kit_web
from services.reporting import domain, public

if TYPE_CHECKING:
    from services.reporting.app import Reporting

HERE = Path(__file__).parent
pages = kit_web.Pages("reporting", HERE / "templates", "Transparansi")
MONTHS = ("Januari", "Februari", "Maret", "April", "Mei", "Juni", "Juli", "Agustus", "September", "Oktober",
          "November", "Desember")


def month_name(period: str) -> str:
    return f"{MONTHS[int(period[5:7]) - 1]} {period[:4]}"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}".replace(".", ",") + " %"


pages.templates.env.globals.update(month_name=month_name, percent=percent)


def router(deps: Reporting) -> APIRouter:
    r = APIRouter(include_in_schema=False)

    @r.get("/publik/realisasi")
    async def realisation(request: Request, period: str = "") -> Response:
        p = kit_web.principal(request)  # none needed; a logged-in official keeps the menu
        try:
            period = domain.parse_period(period or domain.period_of(domain.today()))
        except domain.BadPeriod:
            return pages.render(request, "realisasi.html", p, 400, data=None, period=period,
                                error=f"Bulan {period} tidak dikenal: tulis sebagai TTTT-BB, misalnya 2026-11.")
        async with deps.kit.sessions() as s:
            data = await public.realisation(s, period)
        return pages.render(request, "realisasi.html", p, data=data, period=period)

    return r


def mount(app: FastAPI, deps: Reporting) -> None:
    pages.mount(app)  # the kit's stylesheet at /ui/kit, /ui/masuk and /ui/keluar
    app.include_router(router(deps))
