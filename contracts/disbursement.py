"""Events the disbursement service emits on the DISBURSEMENT stream (`disbursement.>`), the
stream auditors read, and the messages it exchanges with payment channels.

No raw NIK or name on `disbursement.>`: `pseudonym` is HMAC-SHA256(regency key, NIK) in hex,
so an auditor can follow one person across events without learning who it is.

Every audit event carries `chain_seq` and `prev_hash`: `prev_hash` is the SHA-256 (hex) of the
exact bytes of the event with `chain_seq - 1` as published (the whole envelope JSON). The
chain, not the arrival order, defines the order; `disbursement.chain_checkpoint` signs the
head with the regency's Ed25519 key. Amounts are integer rupiah.

Payment channels (bank, post office) read batches of disbursements on
`channel.<name>.instructions` and answer per item on `channel.<name>.settlements`
(contracts.channel, G2P Connect's disburse / on-disburse); a single `Settlement` is still
accepted there.
"""
from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from contracts.envelope import Event
from contracts.values import Period, ProgramCode, Rupiah, SignedRupiah

GENESIS_HASH = "0" * 64


class FundingSource(StrEnum):
    """Sumber dana."""

    apbn = "apbn"                      # state budget
    apbd_provinsi = "apbd_provinsi"    # provincial budget
    apbd_kabupaten = "apbd_kabupaten"  # regency budget
    apbdes = "apbdes"                  # village budget
    baznas = "baznas"                  # national zakat agency
    csr = "csr"                        # corporate social responsibility
    donation = "donation"              # individual donations
    other = "other"                    # other lawful, non-binding sources


class AuditEvent(Event):
    """Base of every event on `disbursement.>`: its place in the hash chain."""

    domain: ClassVar[str] = "disbursement"
    chain_seq: int = Field(ge=1, description="position in the hash chain, 1, 2, 3, ... without gaps")
    prev_hash: str = Field(pattern=r"^[0-9a-f]{64}$",
                           description="SHA-256 hex of the published bytes of event chain_seq-1 (zeros for the first)")


class FundingLine(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    source: FundingSource
    allocation_id: uuid.UUID
    amount: Rupiah


class AllocationSet(AuditEvent):
    """A budget allocation (source, program, fiscal year) was set or amended; the ceiling is
    the most that may ever be reserved against it."""

    event_type: ClassVar[str] = "disbursement.allocation_set"
    allocation_id: uuid.UUID
    source: FundingSource
    programme_identifier: ProgramCode
    fiscal_year: int
    ceiling: Rupiah
    previous_ceiling: Rupiah | None = Field(default=None, description="null when the allocation is new")
    reason: str
    set_by: str


class BudgetReserved(AuditEvent):
    """Budget reserved for a batch of payment instructions of one cycle (one line per allocation)."""

    event_type: ClassVar[str] = "disbursement.budget_reserved"
    cycle_id: uuid.UUID
    programme_identifier: ProgramCode
    period: Period
    lines: list[FundingLine]
    instructions: int = Field(ge=0)
    cycle_key: str | None = Field(default=None, description="the cycle when it is not the month itself: a quarterly "
                                                            "stage (2026-T4) or a one-off (2026-11-banjir); `period` "
                                                            "is then the month it pays in")


class IssuedInstruction(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    instruction_id: uuid.UUID
    pseudonym: str = Field(description="HMAC-SHA256(regency key, NIK), hex")
    amount: Rupiah
    funding: list[FundingLine]
    retry_of: uuid.UUID | None = Field(default=None, description="the failed instruction this one pays again")


class PaymentInstructionsIssued(AuditEvent):
    """Payment instructions created and sent to a channel (a batch of one cycle)."""

    event_type: ClassVar[str] = "disbursement.payment_instructions_issued"
    cycle_id: uuid.UUID
    programme_identifier: ProgramCode
    period: Period
    channel: str
    items: list[IssuedInstruction]
    total: Rupiah
    cycle_key: str | None = Field(default=None, description="the cycle when it is not the month itself: a quarterly "
                                                            "stage (2026-T4) or a one-off (2026-11-banjir); `period` "
                                                            "is then the month it pays in")


class SettlementStatus(StrEnum):
    paid = "paid"
    failed = "failed"


class SettlementRecorded(AuditEvent):
    """A channel reported an instruction paid or failed."""

    event_type: ClassVar[str] = "disbursement.settlement_recorded"
    instruction_id: uuid.UUID
    pseudonym: str
    programme_identifier: ProgramCode
    period: Period
    status: SettlementStatus
    amount: Rupiah
    reason: str | None = None
    funding: list[FundingLine]
    settled_at: dt.datetime
    village_code: str | None = Field(default=None, pattern=r"^\d{10}$",
                                     description="the payee's village (Kemendagri code), for realisation per area")
    cycle_key: str | None = Field(default=None, description="the cycle when it is not the month itself: a quarterly "
                                                            "stage (2026-T4) or a one-off (2026-11-banjir); `period` "
                                                            "is then the month it pays in")


class BudgetReleased(AuditEvent):
    """A reservation given back to its allocation (a failed payment)."""

    event_type: ClassVar[str] = "disbursement.budget_released"
    instruction_id: uuid.UUID
    programme_identifier: ProgramCode
    period: Period
    lines: list[FundingLine]
    reason: str
    cycle_key: str | None = Field(default=None, description="the cycle when it is not the month itself: a quarterly "
                                                            "stage (2026-T4) or a one-off (2026-11-banjir); `period` "
                                                            "is then the month it pays in")


class CancelledInstruction(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    instruction_id: uuid.UUID
    pseudonym: str = Field(description="HMAC-SHA256(regency key, NIK), hex")
    programme_identifier: ProgramCode
    period: Period = Field(description="the month the instruction paid in")
    cycle_key: str | None = Field(default=None, description="the cycle when it is not the month itself")
    channel: str
    amount: Rupiah
    funding: list[FundingLine] = Field(description="the reservation given back to each allocation")


class InstructionsCancelled(AuditEvent):
    """Unpaid instructions withdrawn because the person's life status stops payment from
    `effective_date` (the registry's `registry.life_status_changed`): each reservation went back
    to its allocation (a `disbursement.budget_released` per instruction beside this event) and
    the channel was told to cancel them. One event per registry announcement and person."""

    event_type: ClassVar[str] = "disbursement.instructions_cancelled"
    pseudonym: str
    life_status: str = Field(description="deceased, moved_out, ineligible or disputed (contracts.registry.LifeStatus)")
    effective_date: dt.date = Field(description="instructions for cycles starting on or after it are cancelled")
    reason_code: str = Field(description="the registry's reason, e.g. crvs.death_notification")
    source: str = Field(description="who established it: crvs, verifier or agency")
    items: list[CancelledInstruction] = Field(min_length=1)
    total: Rupiah


class CycleCompleted(AuditEvent):
    """A cycle finished: totals for the whole (program, period)."""

    event_type: ClassVar[str] = "disbursement.cycle_completed"
    cycle_id: uuid.UUID
    programme_identifier: ProgramCode
    period: Period
    instructions: int
    total: Rupiah
    unfunded: int = Field(description="eligible people left unpaid because every allocation was exhausted")
    excluded_exclusivity: int = Field(description="eligible people already paid by a program of the same class")
    cycle_key: str | None = Field(default=None, description="the cycle when it is not the month itself: a quarterly "
                                                            "stage (2026-T4) or a one-off (2026-11-banjir); `period` "
                                                            "is then the month it pays in")


class StatementReconciled(AuditEvent):
    """A payment channel's daily statement compared with the books: counts only (the unmatched
    items themselves are listed to staff by GET /reconciliation/{channel}/{statement_id})."""

    event_type: ClassVar[str] = "disbursement.statement_reconciled"
    channel: str
    statement_id: str
    statement_date: dt.date
    items: int = Field(description="lines in the statement")
    matched: int
    unmatched: int = Field(description="statement lines that disagree with the books, and payments the books "
                                       "record for that day that the statement lacks")
    total: Rupiah = Field(description="the statement's sum")


class KubeGroupRegistered(AuditEvent):
    """A joint business group (Kelompok Usaha Bersama) and its members (pseudonyms)."""

    event_type: ClassVar[str] = "disbursement.kube_group_registered"
    group_id: uuid.UUID
    name: str
    village_code: str
    members: list[str] = Field(description="pseudonyms")


class KubeGrantMade(AuditEvent):
    """A grant from a funding source to a group's revolving fund."""

    event_type: ClassVar[str] = "disbursement.kube_grant_made"
    grant_id: uuid.UUID
    group_id: uuid.UUID
    funding: FundingLine
    fiscal_year: int


class KubeLoanIssued(AuditEvent):
    """A loan from a group's fund to a member."""

    event_type: ClassVar[str] = "disbursement.kube_loan_issued"
    loan_id: uuid.UUID
    group_id: uuid.UUID
    member: str = Field(description="pseudonym")
    principal: Rupiah
    instalment: Rupiah
    term_months: int
    first_due: dt.date


class KubeInstalmentPaid(AuditEvent):
    """An instalment paid back into the group's fund (to its controlled account)."""

    event_type: ClassVar[str] = "disbursement.kube_instalment_paid"
    payment_id: uuid.UUID
    loan_id: uuid.UUID
    group_id: uuid.UUID
    member: str
    amount: Rupiah
    outstanding: SignedRupiah
    paid_on: dt.date


class ChainCheckpoint(AuditEvent):
    """The regency signs the chain head: `signature` is Ed25519 over
    `sinergi-chain|<stream>|<head_seq>|<head_hash>` (UTF-8), base64. Whoever keeps a checkpoint
    detects any later rewrite of the events up to `head_seq`."""

    event_type: ClassVar[str] = "disbursement.chain_checkpoint"
    head_seq: int
    head_hash: str
    key_id: str = Field(description="SHA-256 hex of the raw public key, first 16 characters")
    signature: str


class ProgramRulesSet(AuditEvent):
    """A program's rules were defined or changed (who, why, before and after)."""

    event_type: ClassVar[str] = "disbursement.program_rules_set"
    programme_identifier: ProgramCode
    rules: dict[str, Any]
    previous_rules: dict[str, Any] | None = Field(default=None, description="null when the program is new")
    reason: str
    set_by: str


class PovertyLineSet(AuditEvent):
    """The regency's poverty line (garis kemiskinan) for a year was set or changed."""

    event_type: ClassVar[str] = "disbursement.poverty_line_set"
    regency: str
    year: int
    amount: Rupiah
    previous_amount: Rupiah | None = None
    reason: str
    set_by: str


class CyclePrepared(AuditEvent):
    """A cycle's list and totals were frozen by a program manager (the maker); nothing is paid
    until another account approves it."""

    event_type: ClassVar[str] = "disbursement.cycle_prepared"
    preparation_id: uuid.UUID
    programme_identifier: ProgramCode
    period: str
    people: int
    total: Rupiah
    amount_per_person: Rupiah
    per_source: list[dict[str, Any]]
    prepared_by: str
    expires_at: dt.datetime


class CycleApproved(AuditEvent):
    """A second account (the checker, never the preparer) approved a prepared cycle."""

    event_type: ClassVar[str] = "disbursement.cycle_approved"
    preparation_id: uuid.UUID
    programme_identifier: ProgramCode
    period: str
    people: int
    total: Rupiah
    prepared_by: str
    approved_by: str


class CycleRejected(AuditEvent):
    """A prepared cycle was rejected (or withdrawn); it can never be approved."""

    event_type: ClassVar[str] = "disbursement.cycle_rejected"
    preparation_id: uuid.UUID
    programme_identifier: ProgramCode
    period: str
    rejected_by: str
    reason: str


# --- a payment channel's single report (CHANNEL stream; the batch forms are in contracts.channel)

class Settlement(BaseModel):
    """A channel's answer for one instruction. Publish with Nats-Msg-Id = `settlement_id`."""

    model_config = ConfigDict(extra="forbid")
    settlement_id: str = Field(min_length=1, max_length=128, description="the channel's unique id for this report")
    instruction_id: uuid.UUID
    status: SettlementStatus
    reason: str | None = Field(default=None, max_length=500, description="required when failed")
    channel_reference: str = ""
    settled_at: dt.datetime
