"""Events the registry (Basis Data Terpadu) emits on the REGISTRY stream."""
from __future__ import annotations

import datetime as dt
from typing import ClassVar

from pydantic import Field

from contracts.agency import EnrolmentStatus, Sex
from contracts.envelope import Event
from contracts.values import NIK, NoKK, ProgramCode, VillageCode


class PersonRegistered(Event):
    """A person entered the registry for the first time, or their identity data changed."""

    event_type: ClassVar[str] = "registry.person_registered"
    domain: ClassVar[str] = "registry"
    nik: NIK
    no_kk: NoKK
    name: str
    sex: Sex
    birth_date: dt.date
    village_code: VillageCode
    is_new: bool = Field(description="true the first time this NIK is seen")


class EnrolmentChanged(Event):
    """A person's enrolment in a program changed (new, or a new status)."""

    event_type: ClassVar[str] = "registry.enrolment_changed"
    domain: ClassVar[str] = "registry"
    nik: NIK
    no_kk: NoKK
    village_code: VillageCode
    birth_date: dt.date
    programme_identifier: ProgramCode
    enrolment_status: EnrolmentStatus
    previous_status: EnrolmentStatus | None = None
    status_change_date: dt.date
    reported_by: str = Field(description="the agency (program) that reported it")
    reference_id: str = ""
