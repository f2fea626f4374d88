"""The shapes reporting's JSON routes answer (issue 15: every route a model, so the OpenAPI shows
them and schemathesis checks each answer against them).

`report.monthly` builds the recap as plain dicts (the CSV, XLSX and page renderers read the
same dicts); the routes hand them to these models. Every model forbids fields it does not
name: a field added to the recap without its place here fails the route (and its tests) at
once instead of being dropped from the answer without a word.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


Pct = float | None  # to two decimals; None when there is nothing to divide by


class EnrolmentCount(_Strict):
    programme_identifier: str
    village_code: str
    village_name: str | None = None
    enrolment_status: str
    people: int


class EnrolmentCounts(_Strict):
    items: list[EnrolmentCount]


class ProgramRow(_Strict):
    programme_identifier: str
    enrolled: int = Field(description="active beneficiaries who are alive at the end of the month")
    people_paid: int
    amount_paid: int = Field(description="rupiah")
    payments: int


class SourceProgram(_Strict):
    programme_identifier: str
    allocation: int
    realised: int
    realisation_pct: Pct


class FundingSourceRow(_Strict):
    funding_source: str
    label: str
    allocation: int = Field(description="the year's ceilings, rupiah")
    realised: int = Field(description="paid from January to the month, rupiah")
    paid_in_period: int
    realisation_pct: Pct
    programs: list[SourceProgram]


class LevelRow(_Strict):
    level: str
    registered: int
    referred_in: int
    resolved: int


class Complaints(_Strict):
    received: int
    resolved: int
    referred: dict[str, int] = Field(description="cases referred up, per level they reached")
    overdue: int
    median_days_to_resolve: float | None
    by_level: list[LevelRow]


class CompanionRow(_Strict):
    companion: str = Field(description="`pendamping <n>` on public pages; the username only for coordinators")
    due: int
    done: int
    coverage_pct: Pct
    conditions: dict[str, dict[str, int]] = Field(description="aspect (fisik, sosial) -> condition -> visits")


class Visits(_Strict):
    due: int
    done: int
    coverage_pct: Pct
    companions: list[CompanionRow]


class CompanionVisits(Visits):
    period: str


class KubeRow(_Strict):
    kecamatan_code: str
    kecamatan_name: str | None
    groups: int
    fund_amount: int
    members: int
    loans_outstanding: int
    arrears: int
    repayment_rate_pct: Pct


class ExitCounts(_Strict):
    deceased: int
    moved_out: int
    ineligible: int


class ExitProgram(ExitCounts):
    programme_identifier: str


class ExitVillage(ExitProgram):
    kecamatan_code: str
    kecamatan_name: str | None
    village_code: str
    village_name: str | None


class Exits(ExitCounts):
    programs: list[ExitProgram]
    villages: list[ExitVillage]


class AreaTotals(_Strict):
    enrolled: int
    people_paid: int
    amount_paid: int
    complaints_received: int
    complaints_resolved: int
    visits_due: int
    visits_done: int
    kube_groups: int


class VillageRow(AreaTotals):
    village_code: str
    village_name: str | None


class AreaRow(_Strict):
    kecamatan_code: str
    kecamatan_name: str | None
    totals: AreaTotals
    villages: list[VillageRow]


class MonthlyRecap(_Strict):
    """The monthly recap to Bappeda (rekap bulanan): aggregates only, no person, no staff name."""

    period: str
    generated_at: str
    programs: list[ProgramRow]
    funding_sources: list[FundingSourceRow]
    complaints: Complaints
    visits: Visits
    kube: list[KubeRow]
    exits: Exits
    areas: list[AreaRow]
