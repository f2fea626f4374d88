"""What disbursement and a payment channel (a bank, the post office) exchange on the CHANNEL
stream, in G2P Connect's disburse shape
(field names as in G2P-Connect/specs src/disburse: payer_fa, payer_name, payee_fa, payee_name,
amount, currency_code, scheduled_timestamp, note, status, status_reason_code, status_reason_message;
`disbursement_id`, `payee_id`, `proxy` and `retry_of` are Sinergi's additions). These carry personal data (the channel pays a
person): NATS lets each channel read and write only its own `channel.<name>.*`.

- `channel.<c>.instructions`: `DisburseRequest`, up to MAX_ITEMS disbursements per message
  (Nats-Msg-Id = `transaction_id`); each `disbursement_id` is Sinergi's instruction id: pay it
  at most once.
  A message with `cancellations` instead of `disbursements` is a `DisburseCancel`: withdraw
  those disbursements (the payee died, moved out, or payment is held): do not pay them, and
  answer each `rjct` with `rjct.cancelled` (a `succ` after it is refused, see DISBURSEMENT.md).
- `channel.<c>.settlements`: `OnDisburse`, the channel's per-item answers (`succ` or `rjct` with a
  reason code), Nats-Msg-Id `<c>:<settlement_id>`. A single `contracts.disbursement.Settlement`
  is still accepted there.
- `channel.<c>.statements`: `Statement`, the day's settled items; Sinergi reconciles it and
  reports what does not match (`disbursement.statement_reconciled`, GET /reconciliation/...).
"""
from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from contracts.payee import Proxy
from contracts.values import Rupiah

# 500 disbursements of ~400 bytes each: ~200 KB, far below NATS's 1 MB
MAX_ITEMS = 500
# a statement line is ~150 bytes: 2,000 lines ~300 KB; a busier day sends several statements
MAX_STATEMENT_ITEMS = 2000
# Sinergi's dotted codes (rjct.account.closed), or G2P Connect's own (RJCT_INVALID_PAYEE_FA)
CODE = r"^((succ|rjct)(\.[a-z0-9_]+){0,4}|(SUCC|RJCT)(_[A-Z0-9]+){1,6})$"


class Disburse(BaseModel):
    """One payment to one person."""

    model_config = ConfigDict(extra="forbid")
    disbursement_id: uuid.UUID = Field(description="Sinergi's instruction id; pay each at most once")
    reference_id: str = Field(description="<program>/<period>/<NIK>, the idempotency key")
    programme_identifier: str
    period: str = Field(description="the cycle: 2026-11 (month), 2026-T4 (quarterly stage), 2026-11-banjir (one-off)")
    payee_id: str = Field(description="the payee's NIK (16 digits)")
    payee_name: str | None = Field(default=None, description="null when the agency has not reported it")
    payee_fa: str | None = Field(default=None, description="financial address: account:<number>@<bank code> or "
                                                           "cash:<reference>@pos; null: none known (answer rjct)")
    proxy: Proxy | None = Field(default=None, description="who may collect for the payee (wali)")
    no_kk: str
    village_code: str
    amount: Rupiah
    currency_code: str = Field(default="IDR", description="ISO 4217")
    scheduled_timestamp: dt.datetime
    note: str = Field(max_length=99, description="the note on the payee's statement (G2P Connect: at most 99)")
    retry_of: uuid.UUID | None = Field(default=None, description="the failed disbursement this one pays again")


class DisburseRequest(BaseModel):
    """A batch of payments for one channel (G2P Connect `disburse`)."""

    model_config = ConfigDict(extra="forbid")
    transaction_id: uuid.UUID = Field(description="this message's id (also its Nats-Msg-Id)")
    payer_fa: str = Field(description="the paying program: program:<code>@sinergi")
    payer_name: str = Field(default="", max_length=200, description="the paying program's name, for the statement")
    disbursements: list[Disburse] = Field(min_length=1, max_length=MAX_ITEMS)


class CancelItem(BaseModel):
    """One disbursement to withdraw."""

    model_config = ConfigDict(extra="forbid")
    disbursement_id: uuid.UUID = Field(description="the instruction issued earlier on this channel")
    status_reason_code: str = Field(max_length=80, description="why, e.g. cncl.payee.deceased, cncl.payee.moved_out, "
                                                              "cncl.payee.ineligible, cncl.payment.held")
    status_reason_message: str | None = Field(default=None, max_length=500)


class DisburseCancel(BaseModel):
    """Disbursements withdrawn before payment, on the same `channel.<c>.instructions` subject as
    the batches (the channel's one consumer reads both; Nats-Msg-Id = `transaction_id`)."""

    model_config = ConfigDict(extra="forbid")
    transaction_id: uuid.UUID = Field(description="this message's id (also its Nats-Msg-Id)")
    payer_fa: str = Field(description="the paying program: program:<code>@sinergi")
    cancellations: list[CancelItem] = Field(min_length=1, max_length=MAX_ITEMS)


class DisburseStatus(StrEnum):
    succ = "succ"
    rjct = "rjct"


class DisburseResult(BaseModel):
    """A channel's answer for one disbursement."""

    model_config = ConfigDict(extra="forbid")
    disbursement_id: uuid.UUID
    status: DisburseStatus
    status_reason_code: str | None = Field(default=None, pattern=CODE, max_length=80,
                                           description="required for rjct, e.g. rjct.payee_fa.invalid, "
                                                       "rjct.account.closed, rjct.pickup.expired, or G2P "
                                                       "Connect's RJCT_INVALID_PAYEE_FA, RJCT_INVALID_AMOUNT")
    status_reason_message: str | None = Field(default=None, max_length=500)
    channel_reference: str = Field(default="", max_length=128)
    timestamp: dt.datetime = Field(description="when it was paid or refused")


class OnDisburse(BaseModel):
    """The channel's per-item answers (G2P Connect `on-disburse`), up to MAX_ITEMS."""

    model_config = ConfigDict(extra="forbid")
    settlement_id: str = Field(min_length=1, max_length=128, description="the channel's unique id for this message")
    results: list[DisburseResult] = Field(min_length=1, max_length=MAX_ITEMS)


class StatementItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    disbursement_id: uuid.UUID
    amount: Rupiah
    channel_reference: str = Field(default="", max_length=128)


class Statement(BaseModel):
    """The items a channel paid on one day (WIB). Publish with Nats-Msg-Id `<c>:<statement_id>`."""

    model_config = ConfigDict(extra="forbid")
    statement_id: str = Field(min_length=1, max_length=128)
    statement_date: dt.date
    items: list[StatementItem] = Field(max_length=MAX_STATEMENT_ITEMS)
