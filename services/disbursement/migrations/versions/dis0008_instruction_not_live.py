"""issue 12, speed: an index on the few instructions that are not live (failed, cancelled), so
a cycle chunk's "already has an instruction" lookup is two index ranges, never a scan

Since dis0005 the only index on (program, period, NIK) is the partial unique `instruction_live`;
the chunk's lookup, which must also see failed and cancelled instructions, could not use it and
scanned the whole instructions table once per chunk: 51 ms per chunk at 300,000 instructions
(quiet machine), quadratic over a cycle. With this index it is 1.6 ms. Issued rows are not in
it: it costs the cycle's inserts nothing.

Revision ID: dis0008
Revises: dis0007
Create Date: 2026-11-23 23:00:00

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = 'dis0008'
down_revision: Union[str, Sequence[str], None] = 'dis0007'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_index('instruction_not_live', 'instructions', ['period', 'nik'], unique=False,
                    postgresql_where=sa.text("status in ('failed', 'cancelled')"))


def downgrade() -> None:
    op.drop_index('instruction_not_live', table_name='instructions')
