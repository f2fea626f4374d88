"""`registry.lookup`: core NATS request-reply, so intake can check a citizen in one round trip.

Request by NIK, by No. KK, or by name within a village (tolerant matching). Not on any
stream: it is a question, not a fact.
"""
from __future__ import annotations

from pydantic import BaseModel, Field, model_validator


class LookupRequest(BaseModel):
    nik: str | None = None
    no_kk: str | None = None
    name: str | None = None
    village_code: str | None = Field(default=None, description="required with name")
    limit: int = Field(default=10, ge=1, le=50)

    @model_validator(mode="after")
    def _one_key(self) -> LookupRequest:
        if not (self.nik or self.no_kk or (self.name and self.village_code)):
            raise ValueError("give nik, no_kk, or name with village_code")
        return self


class EnrolmentSummary(BaseModel):
    programme_identifier: str
    enrolment_status: str
    status_change_date: str


class PersonSummary(BaseModel):
    nik: str
    no_kk: str
    name: str
    sex: str
    birth_date: str
    village_code: str
    verification_status: str | None = None
    enrolments: list[EnrolmentSummary] = Field(default_factory=list)
    score: float | None = Field(default=None, description="name similarity, for name searches")


class LookupReply(BaseModel):
    found: bool
    people: list[PersonSummary] = Field(default_factory=list)
    error: str | None = Field(default=None, description="why the request could not be answered")
