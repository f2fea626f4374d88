"""Program settings over HTTP (issue 17): a program manager says who owns a program and how long
a verification stays valid for it; every staff member may read them. SQL lives in programs.py."""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path
from pydantic import BaseModel, Field, model_validator

from services.kit.auth import Principal, ProgramScope, Role, require
from services.kit.http import NoNul
from services.registry import programs

if TYPE_CHECKING:
    from services.registry.app import Registry

Manager = Annotated[Principal, Depends(require(Role.program_manager))]
Staff = Annotated[Principal, Depends(require())]
Code = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_]{1,31}$", description="program code, e.g. kamalia_merekah")]
# a verification valid for more than five years is no verification (DTSEN asks for yearly updates)
MAX_VALIDITY_MONTHS = 60


class ProgramSettingsIn(BaseModel):
    owner: Literal["regency", "agency"] = Field(description="regency: an accepted proposal enrols the person at "
                                                            "once; agency: it is forwarded to the agency on "
                                                            "agency.<program>.proposals")
    agency_name: Annotated[str, NoNul] = Field(default="", max_length=200, description="e.g. Kemensos (PKH)")
    requires_verification: bool = Field(default=False, description="the program pays only people with a valid "
                                                                   "verivali verification")
    validity_months: int | None = Field(default=None, ge=1, le=MAX_VALIDITY_MONTHS,
                                        description="how long a verification stays valid for this program "
                                                    "(e.g. 1 for one monthly round, 6 for a semiannual one); "
                                                    "null: it never expires")
    reason: Annotated[str, NoNul] = Field(min_length=3, max_length=1000, description="why (kept with the change)")

    @model_validator(mode="after")
    def _validity(self) -> ProgramSettingsIn:
        if self.validity_months is not None and not self.requires_verification:
            raise ValueError("validity_months applies only to a program that requires a verification")
        return self


class ProgramSettingsOut(BaseModel):
    code: str
    owner: str
    agency_name: str
    requires_verification: bool
    validity_months: int | None
    reason: str
    updated_by: str
    updated_at: str
    changed: bool = Field(default=True, description="false when the settings were already these")


def router(reg: Registry) -> APIRouter:
    r = APIRouter(tags=["programs"])

    @r.put("/programs/{code}", summary="set a program's owner and verification validity (a program manager, "
                                       "regency-wide, with a reason)")
    async def put_program(body: ProgramSettingsIn, code: Code, p: Manager, _s: ProgramScope) -> ProgramSettingsOut:
        if p.area:
            # the settings hold for every village of the regency: a manager limited to an area may not set them
            raise HTTPException(403, detail={"error": f"program settings are regency-wide; your area is {p.area}"})
        async with reg.kit.unit_of_work() as uow:
            before, after = await programs.put(uow.session, code, body.owner, body.agency_name,
                                               body.requires_verification, body.validity_months, body.reason, p.user)
        changed = before is None or any(getattr(before, f) != getattr(after, f) for f in
                                        ("owner", "agency_name", "requires_verification", "validity_months"))
        return ProgramSettingsOut.model_validate(after.json() | {"changed": changed})

    @r.get("/programs/{code}", summary="one program's settings")
    async def get_program(code: Code, _p: Staff) -> ProgramSettingsOut:
        async with reg.kit.sessions() as s:
            found = await programs.get(s, code)
        if found is None:
            raise HTTPException(404, detail={"error": f"no settings for program {code}"})
        return ProgramSettingsOut.model_validate(found.json())

    @r.get("/programs", summary="every program's settings")
    async def list_programs(_p: Staff) -> list[ProgramSettingsOut]:
        async with reg.kit.sessions() as s:
            found = await programs.all_programs(s)
        return [ProgramSettingsOut.model_validate(x.json()) for x in found]

    return r
