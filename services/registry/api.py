"""Registry HTTP routes for staff."""
from __future__ import annotations

from fastapi import APIRouter, HTTPException, Path

from contracts.values import nik_problems
from services.kit.runtime import ServiceRuntime
from services.registry import store


def router(rt: ServiceRuntime) -> APIRouter:
    r = APIRouter(tags=["people"])

    @r.get("/people/{nik}", summary="one person with their enrolments in every program")
    async def get_person(nik: str = Path(description="NIK, 16 digits")) -> dict:
        problems = nik_problems(nik)
        if problems:
            raise HTTPException(400, detail={"error": "invalid NIK", "problems": [p.message for p in problems]})
        async with rt.sessions() as s:
            person = await store.person_view(s, nik)
        if person is None:
            raise HTTPException(404, detail={"error": f"no person with NIK {nik} in the registry"})
        return person

    return r
