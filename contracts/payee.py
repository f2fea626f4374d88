"""Who a payment channel pays: the payee's name, financial address and proxy (wali).

An agency reports them with an enrolment (contracts.agency.EnrolmentReport), the registry keeps
them with the person and hands them to disbursement in `registry.enrolments_changed`;
disbursement puts them only in the payment channel's own instructions
(contracts.channel.DisburseRequest), never on the audit stream or in reports.

A financial address follows G2P Connect's `<id>@<provider>` form when written as one string
(`payee_fa`): `account:<account number>@<bank code>` for a bank account, `cash:<reference>@pos`
for a cash pickup at the post office.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.values import NIK


class BankAccount(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)
    kind: Literal["bank_account"] = "bank_account"
    bank_code: str = Field(pattern=r"^\d{3}$", description="Bank Indonesia's 3-digit bank code, e.g. 002 (BRI)")
    account_number: str = Field(pattern=r"^\d{6,20}$", description="digits only")

    @property
    def fa(self) -> str:
        return f"account:{self.account_number}@{self.bank_code}"


class CashPickup(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)
    kind: Literal["cash_pickup"] = "cash_pickup"
    reference: str = Field(pattern=r"^[A-Z0-9][A-Z0-9-]{3,31}$",
                           description="the post office's pickup reference (upper-case letters, digits, -)")

    @property
    def fa(self) -> str:
        return f"cash:{self.reference}@pos"


FinancialAddress = Annotated[BankAccount | CashPickup, Field(discriminator="kind")]


class Proxy(BaseModel):
    """Someone who collects for the payee (wali), e.g. for a frail elderly person."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)
    name: str = Field(min_length=1, max_length=200)
    nik: NIK | None = None
    relationship: str = Field(min_length=1, max_length=50, description="e.g. anak (child), tetangga (neighbour)")


class Payee(BaseModel):
    """Payment details of one person, as the registry keeps them."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, max_length=200)
    financial_address: FinancialAddress | None = None
    proxy: Proxy | None = None
