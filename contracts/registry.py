"""Events the registry (Basis Data Terpadu) emits on the REGISTRY stream.

Personal data only where a consumer needs it: names travel in `people_registered` alone; the
others carry the NIK as the key and what changed. Bulk changes travel in batches (one event
per registry transaction and up to MAX_ITEMS items), not one message per person.
Names follow DCI's beneficiary registry where it has one (`programme_identifier`,
`enrolment_status`, `status_change_date`).
"""
from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum
from typing import ClassVar

from pydantic import BaseModel, Field

from contracts.agency import EnrolmentStatus, Sex
from contracts.envelope import Event
from contracts.payee import Payee
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


# Bulk ingest commits a thousand reports in one transaction; its changes travel together, a
# few events per batch instead of one per person (one JetStream message each cost more than
# the database writes). At most MAX_ITEMS per event keeps a message far below NATS's 1 MB.
MAX_ITEMS = 500


class PersonIdentity(BaseModel):
    """A person as the registry now knows them (new, or identity data changed)."""

    nik: NIK
    no_kk: NoKK
    name: str
    sex: Sex
    birth_date: dt.date
    village_code: VillageCode
    is_new: bool = Field(description="true the first time this NIK is seen")
    reported_by: str = Field(default="", description="the program that reported it, or `verivali` for an "
                                                     "accepted proposal")


class PeopleRegistered(Event):
    """People entered the registry for the first time, or their identity data changed (one
    registry transaction's worth, in the order applied)."""

    event_type: ClassVar[str] = "registry.people_registered"
    domain: ClassVar[str] = "registry"
    people: list[PersonIdentity] = Field(min_length=1, max_length=MAX_ITEMS)


class EnrolmentChange(BaseModel):
    """One person's enrolment in a program changed (new, or a new status)."""

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
    payee: Payee | None = Field(default=None, description="who a payment channel pays: name, financial address, "
                                                          "proxy (wali), as the agency reported them; None: not "
                                                          "reported with this change (the last known stay)")


class EnrolmentsChanged(Event):
    """Enrolments changed by one registry transaction (an ingest batch), in the order applied;
    at most one change per (NIK, program) per event."""

    event_type: ClassVar[str] = "registry.enrolments_changed"
    domain: ClassVar[str] = "registry"
    changes: list[EnrolmentChange] = Field(min_length=1, max_length=MAX_ITEMS)


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
    programmes_requested: list[str] = Field(default_factory=list, description="the programs asked for")
    enrolled_in: list[str] = Field(default_factory=list,
                                   description="programs the regency owns: enrolled at once on acceptance")
    forwarded_to: list[str] = Field(default_factory=list,
                                    description="programs of outside agencies: the proposal went to each on "
                                                "`agency.<program>.proposals`; its enrolment report completes it")


class ProposalFulfilled(Event):
    """An outside agency's enrolment report answered a forwarded proposal (the loop closes): the
    case that started it follows `enrolment_status`."""

    event_type: ClassVar[str] = "registry.proposal_fulfilled"
    domain: ClassVar[str] = "registry"
    proposal_id: uuid.UUID
    case_id: uuid.UUID | None = None
    nik: NIK
    village_code: VillageCode
    programme_identifier: str
    enrolment_status: EnrolmentStatus


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


class LifeStatus(StrEnum):
    """A person's life status in the registry (issue 17): one per person, whichever program or
    source reported it. Everything but `alive` stops payments from its effective date."""

    alive = "alive"            # living in the regency, payable where a program's rules allow
    deceased = "deceased"      # meninggal
    moved_out = "moved_out"    # pindah keluar kabupaten
    ineligible = "ineligible"  # verivali found the household no longer eligible (tidak layak)
    disputed = "disputed"      # sources disagree: payments held until a verifier decides

    @property
    def stops_payment(self) -> bool:
        return self is not LifeStatus.alive

    @property
    def is_exit(self) -> bool:
        """The person leaves every program for good (reporting counts exits by this reason)."""
        return self in (LifeStatus.deceased, LifeStatus.moved_out, LifeStatus.ineligible)


class LifeSource(StrEnum):
    """Who established a life status, strongest first: the civil registry's (Dukcapil) death
    notification outranks a verifier's decision, which outranks a program's report."""

    crvs = "crvs"          # Dukcapil, the civil registry (DCI CRVS -> SP-MIS)
    verifier = "verifier"  # a verivali result, or a verifier resolving a dispute
    agency = "agency"      # a program agency's enrolment report


class LifeStatusChange(BaseModel):
    """One person's life status changed. No name: consumers key on the NIK."""

    nik: NIK
    village_code: VillageCode
    life_status: LifeStatus
    previous_status: LifeStatus
    effective_date: dt.date = Field(description="from this date nothing is paid (date of death, of moving out, of "
                                                "the verifier's finding); for `alive`, the date payments resume")
    source: LifeSource
    reported_by: str = Field(description="the program code, `dukcapil`, or `verivali`; never a staff member's name")
    reason_code: str = Field(default="", description="why, stable and machine-readable, e.g. "
                                                     "`crvs.death_notification`, `verivali.deceased`, "
                                                     "`conflict.deceased_vs_active`, `verifier.confirmed_alive`")
    programme_identifiers: list[str] = Field(default_factory=list,
                                             description="the person's enrolments at that moment")
    conflict_id: uuid.UUID | None = Field(default=None, description="the data-quality item a verifier must decide "
                                                                    "(set when life_status is `disputed`)")


class LifeStatusChanged(Event):
    """People's life status changed (registry transaction's worth, in the order applied). The
    registry announces each change once, whichever program or source reported it; a repeated
    report of the same status announces nothing."""

    event_type: ClassVar[str] = "registry.life_status_changed"
    domain: ClassVar[str] = "registry"
    changes: list[LifeStatusChange] = Field(min_length=1, max_length=MAX_ITEMS)


class VerificationExpiry(BaseModel):
    """A person's verification is past its validity for these programs (program data)."""

    nik: NIK
    village_code: VillageCode
    programme_identifiers: list[str] = Field(min_length=1, description="the programs whose validity it exceeded")
    verification_period: str | None = Field(default=None, description="the round of the expired result")
    expired_on: dt.date


class VerificationsExpired(Event):
    """Verifications ran past their validity: the programs that require one treat these people
    as not verified until a new verivali result (VerificationRecorded) arrives."""

    event_type: ClassVar[str] = "registry.verifications_expired"
    domain: ClassVar[str] = "registry"
    expiries: list[VerificationExpiry] = Field(min_length=1, max_length=MAX_ITEMS)
