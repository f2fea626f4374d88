"""Intake's own tables. Complaint text and the reporter's identity live only here."""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, UUID

from services.kit.audit import audit_table
from services.kit.outbox import inbox_table, outbox_table

metadata = sa.MetaData()
outbox = outbox_table(metadata)
inbox = inbox_table(metadata)
# who read or changed which case or visit, and when (kit.audit; ids and codes only)
audit_log = audit_table(metadata)

cases = sa.Table(
    "cases", metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("ticket", sa.Text, nullable=False, unique=True),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("category", sa.Text, nullable=False),
    sa.Column("channel", sa.Text, nullable=False),
    sa.Column("village_code", sa.String(10), nullable=False),
    sa.Column("level", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("person_status", sa.Text, nullable=False),
    # the reporter (confidential): NIK if known, else name; profile holds KK, sex, birth date, address
    sa.Column("nik", sa.String(16), index=True),
    sa.Column("reporter_name", sa.Text, nullable=False, server_default=""),
    sa.Column("contact", sa.Text, nullable=False, server_default=""),
    sa.Column("profile", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("text", sa.Text, nullable=False),
    # what the registry said at registration: enrolments (found) or candidates (name search)
    sa.Column("programs", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
    sa.Column("matches", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
    sa.Column("proposal_id", UUID(as_uuid=True), unique=True),
    sa.Column("programme_identifier", sa.Text),
    sa.Column("answer", sa.Text),
    sa.Column("outcome", sa.Text),
    sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("registered_by", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("resolved_at", sa.DateTime(timezone=True)),
    # `<user>:<Idempotency-Key>`: a repeated registration (double click, retry) is the same case
    sa.Column("request_key", sa.Text, unique=True),
    sa.Index("cases_queue", "level", "village_code", "status"),
    sa.Index("cases_due", "due_at", postgresql_where=sa.text("status <> 'resolved'")),
)

# every step of a case, who and when: the case history (append-only)
case_steps = sa.Table(
    "case_steps", metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("case_id", UUID(as_uuid=True), sa.ForeignKey("cases.id"), nullable=False, index=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("from_level", sa.Text),
    sa.Column("level", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("note", sa.Text, nullable=False, server_default=""),
    sa.Column("event_id", UUID(as_uuid=True)),
)

# ticket serials per village and year (row-locked by the upsert that takes the next one)
ticket_counters = sa.Table(
    "ticket_counters", metadata,
    sa.Column("village_code", sa.String(10), primary_key=True),
    sa.Column("year", sa.Integer, primary_key=True),
    sa.Column("last", sa.Integer, nullable=False),
)

# people enrolled in a program with home visits, kept from registry.enrolments_changed
beneficiaries = sa.Table(
    "beneficiaries", metadata,
    sa.Column("nik", sa.String(16), primary_key=True),
    sa.Column("programme_identifier", sa.Text, primary_key=True),
    sa.Column("village_code", sa.String(10), nullable=False, index=True),
    sa.Column("enrolment_status", sa.Text, nullable=False),
    sa.Column("status_change_date", sa.Date, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

assignments = sa.Table(
    "assignments", metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("companion", sa.Text, nullable=False, index=True),
    sa.Column("nik", sa.String(16), nullable=False),
    sa.Column("programme_identifier", sa.Text, nullable=False),
    sa.Column("village_code", sa.String(10), nullable=False),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("assigned_by", sa.Text, nullable=False),
    sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ended_at", sa.DateTime(timezone=True)),
    # one companion at a time per beneficiary and program
    sa.Index("assignments_one_active", "nik", "programme_identifier", unique=True,
             postgresql_where=sa.text("active")),
)

visits = sa.Table(
    "visits", metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("companion", sa.Text, nullable=False, index=True),
    sa.Column("nik", sa.String(16), nullable=False),
    sa.Column("programme_identifier", sa.Text, nullable=False),
    sa.Column("village_code", sa.String(10), nullable=False),
    sa.Column("visit_date", sa.Date, nullable=False),
    sa.Column("period", sa.String(7), nullable=False),
    sa.Column("physical_condition", sa.Text, nullable=False),
    sa.Column("social_condition", sa.Text, nullable=False),
    sa.Column("aid_use", sa.Text, nullable=False),
    sa.Column("needs", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
    sa.Column("notes", sa.Text, nullable=False, server_default=""),
    sa.Column("filed_at", sa.DateTime(timezone=True), nullable=False),
    # the field rule: one visit per beneficiary (and program) per calendar month
    sa.UniqueConstraint("nik", "programme_identifier", "period", name="visits_once_a_month"),
)
