"""Events the intake service (Puskesos, SLRT referrals, home visits) emits on the INTAKE stream.

Confidentiality: complaint text and the reporter's identity stay in intake's database;
these events carry ids, category, village and status only.
"""
from __future__ import annotations

import datetime as dt
import uuid
from typing import ClassVar

from pydantic import Field

from contracts.agency import Sex
from contracts.envelope import Event
from contracts.values import NIK, NoKK, VillageCode


class ProposalSubmitted(Event):
    """The front office proposes adding a person missing from the registry (usulan).

    The registry keeps it as `proposed` until a verifier decides (registry.proposal_decided).
    Carries personal data because the registry needs it to create the person.
    """

    event_type: ClassVar[str] = "intake.proposal_submitted"
    domain: ClassVar[str] = "intake"
    proposal_id: uuid.UUID
    nik: NIK
    no_kk: NoKK
    name: str = Field(min_length=1, max_length=200)
    sex: Sex
    birth_date: dt.date
    village_code: VillageCode
    address: str = ""
    programme_identifier: str | None = Field(default=None, description="program asked for, if any")
    submitted_by: str = Field(description="user id of the front-office staff")
    case_id: uuid.UUID | None = None
