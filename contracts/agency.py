"""The program agencies' contract: enrolment reports in, receipts out.

Field names follow G2P Connect / DCI where they fit: `message_id` and `reference_id` are the
agency's own ids and come back in the receipt; `programme_identifier`, `enrolment_status`
and `status_change_date` mirror DCI's beneficiary-registry names.

An agency publishes one JSON object per person on `agency.<program>.enrolments` (set the
`Nats-Msg-Id` header to `<program>:<message_id>` so JetStream drops a re-sent copy: it
de-duplicates across every program's reports, so the program scopes the id) and reads one
receipt per message from `agency.<program>.receipts`.
"""
from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class EnrolmentStatus(StrEnum):
    active = "active"
    suspended = "suspended"
    exited = "exited"
    deceased = "deceased"


class Sex(StrEnum):
    F = "F"
    M = "M"


class EnrolmentReport(BaseModel):
    """One person's enrolment in one program, as an agency reports it.

    Types are deliberately loose (strings): the registry checks every rule itself so that a
    rejected receipt can name all of them at once, not just the first.
    """

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)
    message_id: str = Field(min_length=1, max_length=128,
                            description="the agency's unique id for this message (G2P Connect message_id)")
    reference_id: str = Field(default="", max_length=128,
                              description="the agency's own reference for the record (G2P Connect reference_id)")
    programme_identifier: str = Field(description="program code, e.g. pkh; must match the subject",
                                      examples=["pkh"])
    nik: str = Field(description="NIK, 16 digits", json_schema_extra={"pattern": r"^\d{16}$"})
    no_kk: str = Field(description="No. KK (family card), 16 digits", json_schema_extra={"pattern": r"^\d{16}$"})
    name: str = Field(min_length=1, max_length=200)
    sex: str = Field(description="F or M", json_schema_extra={"enum": ["F", "M"]})
    birth_date: str = Field(description="YYYY-MM-DD", json_schema_extra={"format": "date"})
    village_code: str = Field(description="10-digit Kemendagri village code", examples=["3317012001"])
    address: str = Field(default="", max_length=500)
    enrolment_status: str = Field(description="active, suspended, exited or deceased",
                                  json_schema_extra={"enum": [s.value for s in EnrolmentStatus]})
    status_change_date: str = Field(description="effective date of this status, YYYY-MM-DD",
                                    json_schema_extra={"format": "date"})
    is_head_of_household: bool = Field(default=False, description="the person heads the family (kepala keluarga)")
    financial_address: dict[str, Any] | None = Field(
        default=None, description="where a payment channel pays this person in this program (contracts.payee): "
                                  "{kind: bank_account, bank_code: 3 digits, account_number: 6-20 digits} or "
                                  "{kind: cash_pickup, reference: the post office's pickup reference}; omitted: "
                                  "the last one reported stays",
        examples=[{"kind": "bank_account", "bank_code": "002", "account_number": "0123456789"}])
    proxy: dict[str, Any] | None = Field(
        default=None, description="who may collect for the person (wali): {name, relationship, nik (optional)}",
        examples=[{"name": "Budi Santoso", "relationship": "anak"}])


class ReceiptStatus(StrEnum):
    rcvd = "rcvd"
    succ = "succ"
    rjct = "rjct"


class StatusReason(BaseModel):
    status_reason_code: str = Field(description="stable machine-readable code, e.g. rjct.nik.invalid_birth_date")
    status_reason_message: str = Field(description="the same in plain words")
    field: str | None = None


class Receipt(BaseModel):
    """The registry's answer to one enrolment report."""

    model_config = ConfigDict(extra="forbid")
    message_id: str
    reference_id: str = ""
    programme_identifier: str
    status: ReceiptStatus
    status_reasons: list[StatusReason] = Field(default_factory=list)
    timestamp: dt.datetime
    correlation_id: str | None = Field(default=None, description="the registry's batch id: the `correlation_id` in "
                                                                 "the envelope of the registry events the report led to")


# a receipt batch stays far below NATS's 1 MB message limit
MAX_RECEIPTS = 500


class ReceiptBatch(BaseModel):
    """What travels on `agency.<program>.receipts`: the receipts for the reports of one program
    that the registry handled in one transaction (as G2P Connect / DCI answer a batch in one
    `on-*` callback). Every report gets exactly one receipt in some batch; a repeated report
    gets the same receipt again in a later batch."""

    model_config = ConfigDict(extra="forbid")
    programme_identifier: str
    receipts: list[Receipt] = Field(min_length=1, max_length=MAX_RECEIPTS)


# ---- proposals forwarded to the agency that owns a program (issue 17) ----

class Identifier(BaseModel):
    """One of a person's identifiers (DCI's `identifier`: a type and a value)."""

    model_config = ConfigDict(extra="forbid")
    identifier_type: str = Field(description="NIK or KK (No. KK, the family card)", examples=["NIK"])
    identifier_value: str = Field(description="16 digits", json_schema_extra={"pattern": r"^\d{16}$"})


class ProposalToAgency(BaseModel):
    """What travels on `agency.<program>.proposals`: a verifier accepted a proposal (usulan) for a
    person and asked for this agency's program; the agency decides and answers with an ordinary
    enrolment report (`agency.<program>.enrolments`) for the same NIK, which closes the proposal.

    Field names follow G2P Connect's message envelope (`message_id`, `reference_id`,
    `timestamp`) and DCI's person record in the social registry (`identifier` with
    `identifier_type` / `identifier_value`, `name`, `sex`, `birth_date`, `address`,
    `registration_date`), with the program named as DCI's `programme_identifier`. G2P Connect's
    beneficiary-management "enroll" interface has no published schema yet: these are the
    nearest names the published ones give.

    Nats-Msg-Id = `message_id`, the same for every copy of one proposal to one program.
    """

    model_config = ConfigDict(extra="forbid")
    message_id: str = Field(description="the registry's id for this message; repeats carry the same id")
    reference_id: str = Field(description="the proposal's id (a UUID); an agency may echo it as its enrolment "
                                          "report's reference_id, but the registry matches the answer by NIK "
                                          "and program")
    programme_identifier: str = Field(description="the program asked for; the agency's own", examples=["pkh"])
    identifier: list[Identifier] = Field(min_length=1, description="NIK first, then No. KK")
    name: str
    sex: Sex
    birth_date: dt.date
    village_code: str = Field(description="10-digit Kemendagri village code", examples=["3317012001"])
    address: str = ""
    registration_date: dt.date = Field(description="the day a verifier accepted the proposal into the registry")
    timestamp: dt.datetime
