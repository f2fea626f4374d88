"""programs (owner, verification validity), the programs a proposal asks for, proposals forwarded
to agencies, and each verification expiry announced once (issue 17)

Revision ID: reg0007
Revises: reg0006
Create Date: 2026-11-23 22:40:00

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, UUID

revision: str = 'reg0007'
down_revision: Union[str, Sequence[str], None] = 'reg0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        'programs',
        sa.Column('code', sa.Text(), primary_key=True),
        sa.Column('owner', sa.Text(), nullable=False),
        sa.Column('agency_name', sa.Text(), nullable=False, server_default=''),
        sa.Column('requires_verification', sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column('validity_months', sa.Integer(), nullable=True),
        sa.Column('reason', sa.Text(), nullable=False, server_default=''),
        sa.Column('updated_by', sa.Text(), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("owner in ('regency', 'agency')", name='programs_owner'),
    )
    op.add_column('proposals', sa.Column('programmes_requested', ARRAY(sa.Text()), nullable=False,
                                         server_default='{}'))
    op.create_table(
        'proposal_forwards',
        sa.Column('proposal_id', UUID(as_uuid=True), primary_key=True),
        sa.Column('programme_identifier', sa.Text(), primary_key=True),
        sa.Column('nik', sa.String(16), nullable=False),
        sa.Column('village_code', sa.String(10), nullable=False),
        sa.Column('case_id', UUID(as_uuid=True), nullable=True),
        sa.Column('forwarded_at', sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column('fulfilled_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('enrolment_status', sa.Text(), nullable=True),
    )
    op.create_index('proposal_forwards_open', 'proposal_forwards', ['nik', 'programme_identifier'],
                    postgresql_where=sa.text('fulfilled_at is null'))
    op.create_table(
        'verification_expiries',
        sa.Column('nik', sa.String(16), primary_key=True),
        sa.Column('programme_identifier', sa.Text(), primary_key=True),
        sa.Column('verified_at', sa.DateTime(timezone=True), primary_key=True),
        sa.Column('expired_on', sa.Date(), nullable=False),
        sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )


def downgrade() -> None:
    op.drop_table('verification_expiries')
    op.drop_index('proposal_forwards_open', table_name='proposal_forwards')
    op.drop_table('proposal_forwards')
    op.drop_column('proposals', 'programmes_requested')
    op.drop_table('programs')
