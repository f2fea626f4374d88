"""issue 17: life statuses and verification expiries from the registry; cancelled instructions
leave the live-instruction indexes (arrears may pay their cycle later)

Revision ID: dis0007
Revises: dis0006
Create Date: 2026-11-23 22:40:00

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = 'dis0007'
down_revision: Union[str, Sequence[str], None] = 'dis0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

LIVE = "status not in ('failed', 'cancelled')"


def upgrade() -> None:
    op.create_table('life_statuses',
                    sa.Column('nik', sa.String(length=16), nullable=False),
                    sa.Column('life_status', sa.Text(), nullable=False),
                    sa.Column('effective_date', sa.Date(), nullable=False),
                    sa.Column('source', sa.Text(), nullable=False),
                    sa.Column('reason_code', sa.Text(), nullable=False),
                    sa.Column('held_from', sa.Date(), nullable=True),
                    sa.Column('held_until', sa.Date(), nullable=True),
                    sa.Column('changed_at', sa.DateTime(timezone=True), nullable=False),
                    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'),
                              nullable=False),
                    sa.PrimaryKeyConstraint('nik'))
    op.create_table('verification_expiries',
                    sa.Column('programme_identifier', sa.Text(), nullable=False),
                    sa.Column('nik', sa.String(length=16), nullable=False),
                    sa.Column('expired_on', sa.Date(), nullable=False),
                    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
                    sa.PrimaryKeyConstraint('programme_identifier', 'nik'))
    op.drop_index('instruction_live', table_name='instructions')
    op.create_index('instruction_live', 'instructions', ['programme_identifier', 'period', 'nik'], unique=True,
                    postgresql_where=sa.text(LIVE))
    op.drop_index('instruction_exclusivity', table_name='instructions')
    op.create_index('instruction_exclusivity', 'instructions', ['exclusivity_class', 'period', 'nik'], unique=True,
                    postgresql_where=sa.text(f"exclusivity_class is not null and {LIVE}"))


def downgrade() -> None:
    op.drop_index('instruction_exclusivity', table_name='instructions')
    op.create_index('instruction_exclusivity', 'instructions', ['exclusivity_class', 'period', 'nik'], unique=True,
                    postgresql_where=sa.text("exclusivity_class is not null and status <> 'failed'"))
    op.drop_index('instruction_live', table_name='instructions')
    op.create_index('instruction_live', 'instructions', ['programme_identifier', 'period', 'nik'], unique=True,
                    postgresql_where=sa.text("status <> 'failed'"))
    op.drop_table('verification_expiries')
    op.drop_table('life_statuses')
