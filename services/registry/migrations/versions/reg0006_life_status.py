"""life_status, life_history: each person's life status (alive, deceased, moved out, ineligible,
disputed), who established it, and every change (issue 17)

Revision ID: reg0006
Revises: reg0005
Create Date: 2026-11-23 22:20:00

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision: str = 'reg0006'
down_revision: Union[str, Sequence[str], None] = 'reg0005'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        'life_status',
        sa.Column('nik', sa.String(16), primary_key=True),
        sa.Column('status', sa.Text(), nullable=False),
        sa.Column('source', sa.Text(), nullable=False),
        sa.Column('effective_date', sa.Date(), nullable=False),
        sa.Column('reported_by', sa.Text(), nullable=False),
        sa.Column('reason_code', sa.Text(), nullable=False, server_default=''),
        sa.Column('reason', sa.Text(), nullable=False, server_default=''),
        sa.Column('conflict_id', UUID(as_uuid=True), nullable=True),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        'life_history',
        sa.Column('id', sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column('nik', sa.String(16), nullable=False),
        sa.Column('status', sa.Text(), nullable=False),
        sa.Column('previous_status', sa.Text(), nullable=False),
        sa.Column('source', sa.Text(), nullable=False),
        sa.Column('effective_date', sa.Date(), nullable=False),
        sa.Column('reported_by', sa.Text(), nullable=False),
        sa.Column('reason_code', sa.Text(), nullable=False, server_default=''),
        sa.Column('reason', sa.Text(), nullable=False, server_default=''),
        sa.Column('conflict_id', UUID(as_uuid=True), nullable=True),
        sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index('life_history_nik', 'life_history', ['nik', 'id'])


def downgrade() -> None:
    op.drop_index('life_history_nik', table_name='life_history')
    op.drop_table('life_history')
    op.drop_table('life_status')
