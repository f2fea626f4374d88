"""The disbursement service's own tables. PostgreSQL is the system of record for money.

Amounts are BIGINT rupiah. The ledger is append-only: one row per balanced transfer.
"""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, UUID

from services.kit.outbox import inbox_table, outbox_table

metadata = sa.MetaData()
outbox = outbox_table(metadata)
inbox = inbox_table(metadata)

_now = sa.func.now()

# The hash chain's head; one row. Every transaction that writes audit events locks it first, so
# chain order is commit order (and every money transaction is serialised behind it).
chain_head = sa.Table(
    "chain_head", metadata,
    sa.Column("id", sa.SmallInteger, primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("checkpoint_seq", sa.BigInteger, nullable=False, server_default="0"),
)

# copy of the registry's enrolments, fed only by registry events
enrolments = sa.Table(
    "enrolments", metadata,
    sa.Column("nik", sa.String(16), primary_key=True),
    sa.Column("programme_identifier", sa.Text, primary_key=True),
    sa.Column("no_kk", sa.String(16), nullable=False),
    sa.Column("village_code", sa.String(10), nullable=False),
    sa.Column("birth_date", sa.Date, nullable=False),
    sa.Column("enrolment_status", sa.Text, nullable=False),
    sa.Column("status_change_date", sa.Date, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.Index("enrolments_program_status", "programme_identifier", "enrolment_status", "nik"),
)

# latest verification result per person (registry.verification_recorded)
verifications = sa.Table(
    "verifications", metadata,
    sa.Column("nik", sa.String(16), primary_key=True),
    sa.Column("verified", sa.Boolean, nullable=False),
    sa.Column("result", sa.Text, nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
)

programs = sa.Table(
    "programs", metadata,
    sa.Column("code", sa.Text, primary_key=True),
    sa.Column("rules", JSONB, nullable=False),
    sa.Column("updated_by", sa.Text, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
)

# garis kemiskinan per regency and year (rupiah per person per month)
poverty_lines = sa.Table(
    "poverty_lines", metadata,
    sa.Column("regency", sa.String(4), primary_key=True),
    sa.Column("year", sa.Integer, primary_key=True),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.CheckConstraint("amount > 0", name="poverty_line_positive"),
)

allocations = sa.Table(
    "allocations", metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("programme_identifier", sa.Text, nullable=False),
    sa.Column("fiscal_year", sa.Integer, nullable=False),
    sa.Column("ceiling", sa.BigInteger, nullable=False),
    # reserved = outstanding payable + paid; the database itself refuses a ceiling breach
    sa.Column("reserved", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("paid", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.UniqueConstraint("source", "programme_identifier", "fiscal_year", name="allocation_key"),
    sa.CheckConstraint("reserved <= ceiling", name="allocation_within_ceiling"),
    sa.CheckConstraint("paid <= reserved AND paid >= 0 AND reserved >= 0", name="allocation_paid_within_reserved"),
)

allocation_changes = sa.Table(
    "allocation_changes", metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("allocation_id", UUID(as_uuid=True), nullable=False, index=True),
    sa.Column("ceiling", sa.BigInteger, nullable=False),
    sa.Column("previous_ceiling", sa.BigInteger),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("set_by", sa.Text, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
)

cycles = sa.Table(
    "cycles", metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("programme_identifier", sa.Text, nullable=False),
    sa.Column("period", sa.String(7), nullable=False),
    sa.Column("status", sa.Text, nullable=False),  # running, completed
    sa.Column("started_by", sa.Text, nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.Column("completed_at", sa.DateTime(timezone=True)),
    sa.UniqueConstraint("programme_identifier", "period", name="cycle_key"),
)

instructions = sa.Table(
    "instructions", metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),  # uuid5 of the idempotency key
    sa.Column("programme_identifier", sa.Text, nullable=False),
    sa.Column("period", sa.String(7), nullable=False),
    sa.Column("nik", sa.String(16), nullable=False),
    sa.Column("pseudonym", sa.String(64), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("channel", sa.Text, nullable=False),
    sa.Column("exclusivity_class", sa.Text),
    sa.Column("cycle_id", UUID(as_uuid=True), nullable=False),
    sa.Column("status", sa.Text, nullable=False),  # issued, paid, failed
    sa.Column("reason", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.Column("settled_at", sa.DateTime(timezone=True)),
    sa.UniqueConstraint("programme_identifier", "period", "nik", name="instruction_idempotency"),
    sa.CheckConstraint("amount > 0", name="instruction_amount_positive"),
    # no person gets two cash programs of the same class in the same month, whatever races
    sa.Index("instruction_exclusivity", "exclusivity_class", "period", "nik", unique=True,
             postgresql_where=sa.text("exclusivity_class is not null")),
)

# The double-entry ledger. Money moves from `credit_account` to `debit_account`; each row is one
# balanced transfer. Accounts: funding/<source>, budget/<allocation>, payable/<allocation>
# (program reservation owed to beneficiaries), paid/<allocation>, kube/... (see docs).
ledger = sa.Table(
    "ledger", metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("debit_account", sa.Text, nullable=False),
    sa.Column("credit_account", sa.Text, nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("allocation_id", UUID(as_uuid=True)),
    sa.Column("ref", UUID(as_uuid=True)),  # instruction, grant, loan or payment id
    sa.CheckConstraint("amount > 0", name="transfer_amount_positive"),
    sa.CheckConstraint("debit_account <> credit_account", name="transfer_two_accounts"),
    sa.Index("ledger_ref", "ref"),
)

# --- KUBE revolving funds -----------------------------------------------------------------
kube_groups = sa.Table(
    "kube_groups", metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("village_code", sa.String(10), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
)

kube_members = sa.Table(
    "kube_members", metadata,
    sa.Column("group_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("nik", sa.String(16), primary_key=True),
    sa.Column("pseudonym", sa.String(64), nullable=False),
    sa.Column("joined_on", sa.Date, nullable=False),
)

kube_savings = sa.Table(
    "kube_savings", metadata,
    sa.Column("group_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("nik", sa.String(16), primary_key=True),
    sa.Column("month", sa.String(7), primary_key=True),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.CheckConstraint("amount >= 0", name="saving_non_negative"),
)

kube_meetings = sa.Table(
    "kube_meetings", metadata,
    sa.Column("group_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("held_on", sa.Date, primary_key=True),
    sa.Column("attendees", JSONB, nullable=False),  # list of NIKs present
)

kube_loans = sa.Table(
    "kube_loans", metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("group_id", UUID(as_uuid=True), nullable=False, index=True),
    sa.Column("nik", sa.String(16), nullable=False),
    sa.Column("principal", sa.BigInteger, nullable=False),
    sa.Column("instalment", sa.BigInteger, nullable=False),
    sa.Column("term_months", sa.Integer, nullable=False),
    sa.Column("issued_on", sa.Date, nullable=False),
    sa.Column("first_due", sa.Date, nullable=False),
    sa.Column("repaid", sa.BigInteger, nullable=False, server_default="0"),
    sa.CheckConstraint("repaid <= principal", name="loan_not_overpaid"),
)

kube_payments = sa.Table(
    "kube_payments", metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("loan_id", UUID(as_uuid=True), nullable=False, index=True),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("paid_on", sa.Date, nullable=False),
)
