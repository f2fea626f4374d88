"""issue 12, channel side: cycle keys beyond months, retries (live-instruction unique index),
payee details in the enrolment copy, channel statements and unmatched items

Revision ID: dis0005
Revises: dis0004
Create Date: 2026-11-23 20:00:00

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = 'dis0005'
down_revision: Union[str, Sequence[str], None] = 'dis0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.alter_column('cycles', 'period', type_=sa.String(length=40))
    op.alter_column('instructions', 'period', type_=sa.String(length=40))
    op.add_column('instructions', sa.Column('retry_of', sa.UUID(), nullable=True))
    op.drop_constraint('instruction_idempotency', 'instructions', type_='unique')
    op.create_index('instruction_live', 'instructions', ['programme_identifier', 'period', 'nik'], unique=True,
                    postgresql_where=sa.text("status <> 'failed'"))
    op.drop_index('instruction_exclusivity', table_name='instructions')
    op.create_index('instruction_exclusivity', 'instructions', ['exclusivity_class', 'period', 'nik'], unique=True,
                    postgresql_where=sa.text("exclusivity_class is not null and status <> 'failed'"))
    op.add_column('enrolments', sa.Column('payee', postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.create_table('statements',
                    sa.Column('channel', sa.Text(), nullable=False),
                    sa.Column('statement_id', sa.Text(), nullable=False),
                    sa.Column('statement_date', sa.Date(), nullable=False),
                    sa.Column('items', sa.Integer(), nullable=False),
                    sa.Column('matched', sa.Integer(), nullable=False),
                    sa.Column('unmatched', sa.Integer(), nullable=False),
                    sa.Column('total', sa.BigInteger(), nullable=False),
                    sa.Column('received_at', sa.DateTime(timezone=True), server_default=sa.text('now()'),
                              nullable=False),
                    sa.PrimaryKeyConstraint('channel', 'statement_id'))
    op.create_table('unmatched_items',
                    sa.Column('channel', sa.Text(), nullable=False),
                    sa.Column('statement_id', sa.Text(), nullable=False),
                    sa.Column('disbursement_id', sa.Text(), nullable=False),
                    sa.Column('amount', sa.BigInteger(), nullable=False),
                    sa.Column('reason_code', sa.Text(), nullable=False),
                    sa.Column('reason', sa.Text(), nullable=False),
                    sa.PrimaryKeyConstraint('channel', 'statement_id', 'disbursement_id'))


def downgrade() -> None:
    op.drop_table('unmatched_items')
    op.drop_table('statements')
    op.drop_column('enrolments', 'payee')
    op.drop_index('instruction_exclusivity', table_name='instructions')
    op.create_index('instruction_exclusivity', 'instructions', ['exclusivity_class', 'period', 'nik'], unique=True,
                    postgresql_where=sa.text('exclusivity_class is not null'))
    op.drop_index('instruction_live', table_name='instructions')
    op.create_unique_constraint('instruction_idempotency', 'instructions', ['programme_identifier', 'period', 'nik'])
    op.drop_column('instructions', 'retry_of')
    op.alter_column('instructions', 'period', type_=sa.String(length=7))
    op.alter_column('cycles', 'period', type_=sa.String(length=7))
