"""Events the intake service (Puskesos, SLRT referrals, home visits) emits on the INTAKE stream.

Confidentiality: complaint text and the reporter's identity stay in intake's database;
these events carry ids, category, village and status only.
"""
from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum
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
    programme_identifier: str | None = Field(default=None, description="program asked for, if any (older form "
                                                                     "of `programmes_requested`)")
    programmes_requested: list[str] = Field(default_factory=list, max_length=20,
                                            description="the programs the person is proposed for (issue 17)")
    submitted_by: str = Field(description="user id of the front-office staff")
    case_id: uuid.UUID | None = None


# --- the Puskesos case (pengaduan / permohonan) and the SLRT referral chain ---------------

class CaseCategory(StrEnum):
    """What a complaint or request is about (kategori pengaduan)."""

    not_receiving_aid = "not_receiving_aid"        # tidak menerima bantuan
    wrong_data = "wrong_data"                      # data salah
    excluded_from_program = "excluded_from_program"  # tidak terdaftar di program
    health = "health"                              # kesehatan
    education = "education"                        # pendidikan
    housing = "housing"                            # perumahan / RTLH
    disability = "disability"                      # disabilitas
    elderly_care = "elderly_care"                  # lansia
    other = "other"                                # lainnya


class CaseKind(StrEnum):
    complaint = "complaint"    # pengaduan
    request = "request"        # permohonan


class Channel(StrEnum):
    walk_in = "walk_in"        # datang langsung
    phone = "phone"            # telepon
    letter = "letter"          # surat
    online = "online"          # daring


class CaseLevel(StrEnum):
    """Where a case sits on the SLRT referral chain, in order."""

    village = "village"          # Puskesos (desa/kelurahan)
    kecamatan = "kecamatan"      # SLRT supervisor
    kabupaten = "kabupaten"      # SLRT regional manager
    agency = "agency"            # the program's agency (Dinsos, Kemensos, Baznas...)

    def next(self) -> CaseLevel | None:
        order = list(CaseLevel)
        i = order.index(self)
        return order[i + 1] if i + 1 < len(order) else None


class CaseStatus(StrEnum):
    open = "open"                # waiting for the office at its level
    in_progress = "in_progress"  # being handled (ditangani)
    answered = "answered"        # the citizen has been given an answer (dijawab)
    resolved = "resolved"        # closed with an outcome (selesai)


class PersonStatus(StrEnum):
    """What the registry lookup at registration found."""

    found = "found"                  # in the registry (programs attached to the case)
    possible_match = "possible_match"  # no NIK given; name search found candidates
    proposed = "proposed"            # not found; a proposal to add the person was submitted
    not_found = "not_found"          # not found and no NIK/KK to propose with
    accepted = "accepted"            # the proposal was accepted by the registry
    rejected = "rejected"            # the proposal was rejected


class CaseRegistered(Event):
    """The front office registered a complaint or request. No text, no reporter identity."""

    event_type: ClassVar[str] = "intake.case_registered"
    domain: ClassVar[str] = "intake"
    case_id: uuid.UUID
    ticket: str = Field(description="the number the citizen quotes, e.g. PSK-3317012001-2026-000123")
    kind: CaseKind
    category: CaseCategory
    channel: Channel
    village_code: VillageCode
    level: CaseLevel
    status: CaseStatus
    person_status: PersonStatus
    proposal_id: uuid.UUID | None = None
    due_at: dt.datetime = Field(description="deadline at the current level")
    actor: str = Field(description="user id of the staff who did it")


class CaseStatusChanged(Event):
    """A case's status changed at its level (handled, answered, proposal decided, reopened)."""

    event_type: ClassVar[str] = "intake.case_status_changed"
    domain: ClassVar[str] = "intake"
    case_id: uuid.UUID
    category: CaseCategory
    village_code: VillageCode
    level: CaseLevel
    status: CaseStatus
    previous_status: CaseStatus
    action: str = Field(description="handle, answer, reopen, proposal_accepted, proposal_rejected")
    person_status: PersonStatus | None = None
    actor: str


class CaseReferred(Event):
    """Staff referred a case up the SLRT chain (rujukan)."""

    event_type: ClassVar[str] = "intake.case_referred"
    domain: ClassVar[str] = "intake"
    case_id: uuid.UUID
    category: CaseCategory
    village_code: VillageCode
    from_level: CaseLevel
    level: CaseLevel
    status: CaseStatus
    programme_identifier: str | None = Field(default=None, description="the agency's program, at agency level")
    due_at: dt.datetime
    actor: str


class CaseEscalated(Event):
    """An overdue case moved to the next level automatically."""

    event_type: ClassVar[str] = "intake.case_escalated"
    domain: ClassVar[str] = "intake"
    case_id: uuid.UUID
    category: CaseCategory
    village_code: VillageCode
    from_level: CaseLevel
    level: CaseLevel
    status: CaseStatus
    overdue_since: dt.datetime
    due_at: dt.datetime
    actor: str = "system"


class CaseResolved(Event):
    """A case was closed with an outcome at its level."""

    event_type: ClassVar[str] = "intake.case_resolved"
    domain: ClassVar[str] = "intake"
    case_id: uuid.UUID
    category: CaseCategory
    village_code: VillageCode
    level: CaseLevel
    status: CaseStatus = CaseStatus.resolved
    outcome: str = Field(description="resolved, not_eligible, withdrawn, referred_out")
    actor: str


# --- home visits (pendampingan) -----------------------------------------------------------

class Condition(StrEnum):
    """A companion's rating of a physical or social condition."""

    good = "good"        # baik
    fair = "fair"        # cukup
    poor = "poor"        # kurang
    critical = "critical"  # buruk / perlu tindakan segera


class AidUse(StrEnum):
    as_intended = "as_intended"      # sesuai peruntukan
    partly = "partly"                # sebagian
    not_as_intended = "not_as_intended"  # tidak sesuai
    not_received = "not_received"    # belum diterima


class Need(StrEnum):
    health = "health"
    food = "food"
    housing = "housing"
    education = "education"
    assistive_device = "assistive_device"
    income = "income"
    documents = "documents"
    care = "care"
    other = "other"


class CompanionAssigned(Event):
    """A beneficiary was assigned to (or removed from) a companion's monthly visits."""

    event_type: ClassVar[str] = "intake.companion_assigned"
    domain: ClassVar[str] = "intake"
    assignment_id: uuid.UUID
    companion: str = Field(description="the companion's user id")
    nik: NIK
    village_code: VillageCode
    programme_identifier: str | None = None
    active: bool = Field(default=True, description="false when the assignment ended")
    actor: str


class VisitReportFiled(Event):
    """A companion filed a home-visit report. Ratings and need codes only; notes stay in intake."""

    event_type: ClassVar[str] = "intake.visit_report_filed"
    domain: ClassVar[str] = "intake"
    visit_id: uuid.UUID
    companion: str
    nik: NIK
    village_code: VillageCode
    programme_identifier: str | None = None
    visit_date: dt.date
    period: str = Field(description="the calendar month the visit counts for, YYYY-MM")
    physical_condition: Condition
    social_condition: Condition
    aid_use: AidUse
    needs: list[Need] = Field(default_factory=list)
