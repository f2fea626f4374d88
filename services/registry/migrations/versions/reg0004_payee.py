"""enrolments.payee: the payee details (name, financial address, proxy) an agency reports

Revision ID: reg0004
Revises: reg0003
Create Date: 2026-11-23 20:10:00

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = 'reg0004'
down_revision: Union[str, Sequence[str], None] = 'reg0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.add_column('enrolments', sa.Column('payee', sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column('enrolments', 'payee')
