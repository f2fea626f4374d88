"""Reporting HTTP routes."""
from __future__ import annotations

from fastapi import APIRouter, Query

from contracts import wilayah
from services.kit.runtime import ServiceRuntime
from services.reporting import store


def router(rt: ServiceRuntime) -> APIRouter:
    r = APIRouter(tags=["reports"])

    @r.get("/reports/enrolments", summary="people per program, village and enrolment status")
    async def enrolments(program: str | None = Query(None, description="only this program")) -> dict:
        async with rt.sessions() as s:
            rows = await store.counts(s, program)
        for row in rows:
            row["village_name"] = wilayah.name_of(row["village_code"])
        return {"items": rows}

    return r
