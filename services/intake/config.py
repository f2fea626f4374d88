"""Intake's own settings (env prefix `SINERGI_INTAKE_`), beside the shared kit Settings."""
from __future__ import annotations

import datetime as dt

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.intake import CaseLevel


class IntakeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SINERGI_INTAKE_", env_file=".env", extra="ignore")

    # working days an office has before a case escalates to the next level
    deadline_days: dict[CaseLevel, int] = Field(default_factory=lambda: {
        CaseLevel.village: 3, CaseLevel.kecamatan: 5, CaseLevel.kabupaten: 7, CaseLevel.agency: 14})
    holidays: list[dt.date] = Field(default_factory=list, description="public holidays (not working days)")
    escalation_interval_seconds: float = 300.0
    lookup_timeout_seconds: float = 3.0
    # programs whose beneficiaries get monthly home visits from a companion
    visit_programs: list[str] = Field(default_factory=lambda: ["kamalia_merekah", "pkh"])

    @field_validator("deadline_days")
    @classmethod
    def _non_negative(cls, v: dict[CaseLevel, int]) -> dict[CaseLevel, int]:
        bad = {k.value: d for k, d in v.items() if d < 0}
        if bad:
            raise ValueError(f"deadline days must be 0 or more, got {bad}")
        return v

    def days(self, level: CaseLevel) -> int:
        return self.deadline_days.get(level, 3)

    @property
    def holiday_set(self) -> frozenset[dt.date]:
        return frozenset(self.holidays)
