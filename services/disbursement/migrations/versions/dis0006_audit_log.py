"""audit_log: the disbursement's trail of staff writes (kit.audit; issue 15)

Revision ID: dis0006
Revises: dis0005
Create Date: 2026-11-23 20:40:00

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = 'dis0006'
down_revision: Union[str, Sequence[str], None] = 'dis0005'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('audit_log',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=True), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('actor', sa.Text(), nullable=False),
    sa.Column('role', sa.Text(), nullable=False),
    sa.Column('actor_area', sa.Text(), server_default='', nullable=False),
    sa.Column('action', sa.Text(), nullable=False),
    sa.Column('target', sa.Text(), nullable=True),
    sa.Column('area', sa.Text(), nullable=True),
    sa.Column('detail', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('client', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('audit_log_actor_at', 'audit_log', ['actor', 'at'], unique=False)
    op.create_index('audit_log_target', 'audit_log', ['target'], unique=False)


def downgrade() -> None:
    op.drop_index('audit_log_target', table_name='audit_log')
    op.drop_index('audit_log_actor_at', table_name='audit_log')
    op.drop_table('audit_log')
