"""life status per person pseudonym, exits per month by reason (issue 17)

Revision ID: rep0006
Revises: rep0005
Create Date: 2026-11-23 22:40:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = 'rep0006'
down_revision: Union[str, Sequence[str], None] = 'rep0005'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.add_column('enrolment_state', sa.Column('exit_reason', sa.Text(), nullable=True))
    op.add_column('enrolment_state', sa.Column('exit_on', sa.Date(), nullable=True))
    op.create_index('enrolment_state_person', 'enrolment_state', ['person_ref'])
    op.create_table('life_state',
    sa.Column('person_ref', sa.Text(), nullable=False),
    sa.Column('life_status', sa.Text(), nullable=False),
    sa.Column('effective', sa.Date(), nullable=False),
    sa.PrimaryKeyConstraint('person_ref')
    )
    op.create_table('enrolment_exits',
    sa.Column('programme_identifier', sa.Text(), nullable=False),
    sa.Column('village_code', sa.String(length=10), nullable=False),
    sa.Column('period', sa.String(length=7), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('people', sa.BigInteger(), server_default='0', nullable=False),
    sa.PrimaryKeyConstraint('programme_identifier', 'village_code', 'period', 'reason')
    )
    # earlier events never carried a life status; `sinergi reporting rebuild` folds the
    # registry.life_status_changed events published since into these tables


def downgrade() -> None:
    op.drop_table('enrolment_exits')
    op.drop_table('life_state')
    op.drop_index('enrolment_state_person', table_name='enrolment_state')
    op.drop_column('enrolment_state', 'exit_on')
    op.drop_column('enrolment_state', 'exit_reason')
