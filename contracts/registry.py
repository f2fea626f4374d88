"""Events the registry (Basis Data Terpadu) emits on the REGISTRY stream.

Personal data only where a consumer needs it: identity (name, birth date) travels in
`person_registered` alone; the others carry the NIK as the key and what changed.
Names follow DCI's beneficiary registry where it has one (`programme_identifier`,
`enrolment_status`, `status_change_date`).
"""
from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum
from typing import ClassVar

from pydantic import Field

from contracts.agency import EnrolmentStatus, Sex
from contracts.envelope import Event
from contracts.values import NIK, NoKK, ProgramCode, VillageCode


class VerificationResult(StrEnum):
    """What a verivali visit found (hasil verifikasi)."""

    verified = "verified"          # found, data correct, still eligible
    corrected = "corrected"        # found, data corrected on the spot, eligible
    not_found = "not_found"        # not at the address
    moved = "moved"                # pindah
    ineligible = "ineligible"      # no longer poor enough (tidak layak)
    deceased = "deceased"          # meninggal

    @property
    def counts_as_verified(self) -> bool:
        return self in (VerificationResult.verified, VerificationResult.corrected)


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
    reported_by: str = Field(default="", description="the program that reported it, or `verivali` for an "
                                                     "accepted proposal")


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
    verification_status: VerificationResult | None = Field(
        default=None, description="the person's latest verivali result (None: never verified); disbursement "
                                  "pays only `verified` people")
    verification_period: str | None = Field(default=None, description="the round that result belongs to")


class ConflictKind(StrEnum):
    name_mismatch = "name_mismatch"
    birth_date_mismatch = "birth_date_mismatch"
    death_while_active = "death_while_active"


class ConflictFlagged(Event):
    """Programs disagree about one person; a verifier must look (data-quality queue).

    No names or dates: the queue in the registry shows them to staff who may see them.
    """

    event_type: ClassVar[str] = "registry.conflict_flagged"
    domain: ClassVar[str] = "registry"
    conflict_id: uuid.UUID
    nik: NIK
    kind: ConflictKind
    village_code: VillageCode
    programme_identifiers: list[str] = Field(description="the programs whose reports disagree")


class ProposalDecision(StrEnum):
    accepted = "accepted"
    rejected = "rejected"


class ProposalDecided(Event):
    """A verifier accepted or rejected a proposal to add a person (usulan)."""

    event_type: ClassVar[str] = "registry.proposal_decided"
    domain: ClassVar[str] = "registry"
    proposal_id: uuid.UUID
    nik: NIK
    village_code: VillageCode
    decision: ProposalDecision
    reason: str = Field(default="", description="why; required for a rejection")
    decided_by: str
    programme_identifier: str | None = None
    case_id: uuid.UUID | None = Field(default=None, description="intake's case, when the proposal came from intake")


class VerificationRoundOpened(Event):
    event_type: ClassVar[str] = "registry.verification_round_opened"
    domain: ClassVar[str] = "registry"
    round_id: uuid.UUID
    period: str = Field(description="e.g. 2026-H2 (semiannual) or 2026-11 (monthly)")
    cadence: str
    area: str = Field(default="", description="region code prefix the round covers; empty: the whole regency")


class VerificationRoundClosed(Event):
    event_type: ClassVar[str] = "registry.verification_round_closed"
    domain: ClassVar[str] = "registry"
    round_id: uuid.UUID
    period: str
    verified: int
    not_verified: int


class VerificationRecorded(Event):
    """One person's result in a verification round, with the enrolments it applies to."""

    event_type: ClassVar[str] = "registry.verification_recorded"
    domain: ClassVar[str] = "registry"
    round_id: uuid.UUID
    period: str
    nik: NIK
    village_code: VillageCode
    result: VerificationResult
    verified: bool = Field(description="true if the result counts as verified (verified or corrected)")
    programme_identifiers: list[str] = Field(default_factory=list,
                                             description="the person's active enrolments at that moment")
    recorded_by: str
