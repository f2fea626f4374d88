"""maker-checker: cycle preparations and their frozen lists

Revision ID: dis0004
Revises: dis0003
Create Date: 2026-11-23 20:00:00

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision: str = 'dis0004'
down_revision: Union[str, Sequence[str], None] = 'dis0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "cycle_preparations",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("programme_identifier", sa.Text, nullable=False),
        sa.Column("period", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("prepared_by", sa.Text, nullable=False),
        sa.Column("prepared_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("terms", sa.Text, nullable=False),
        sa.Column("people", sa.Integer, nullable=False),
        sa.Column("total", sa.BigInteger, nullable=False),
        sa.Column("summary", JSONB, nullable=False),
        sa.Column("decided_by", sa.Text),
        sa.Column("decided_at", sa.DateTime(timezone=True)),
        sa.Column("decision_reason", sa.Text),
    )
    op.create_index("preparation_open", "cycle_preparations", ["programme_identifier", "period"], unique=True,
                    postgresql_where=sa.text("status = 'prepared'"))
    op.create_table(
        "cycle_preparation_people",
        sa.Column("preparation_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("nik", sa.String(16), primary_key=True),
    )


def downgrade() -> None:
    op.drop_table("cycle_preparation_people")
    op.drop_table("cycle_preparations")
