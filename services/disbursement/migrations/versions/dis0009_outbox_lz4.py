"""issue 12, speed: the outbox's payloads are compressed with lz4 instead of pglz

A cycle writes about 420 bytes of channel batch per person into the outbox (G2P Connect disburse
batches of 500 people with payee details, ~200 kB a row): 420 MB for a million people. Inserting
200 such rows (100,000 people) took 0.30 s with PostgreSQL's default pglz, 0.09 s with lz4, and
0.26 s stored uncompressed (more WAL); reading them back for the relay costs the same (measured 23
Nov 2026, load 2.3). Only this service's database; a server built without lz4 keeps pglz.

Revision ID: dis0009
Revises: dis0008
Create Date: 2026-11-23 23:10:00

"""
from typing import Sequence, Union

from alembic import op

revision: str = 'dis0009'
down_revision: Union[str, Sequence[str], None] = 'dis0008'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def _compression(method: str) -> None:
    op.execute(f"""do $$ begin
        alter table outbox alter column payload set compression {method};
    exception when feature_not_supported or invalid_parameter_value then
        raise notice 'outbox payloads keep the default compression: {method} is not available';
    end $$""")


def upgrade() -> None:
    _compression("lz4")


def downgrade() -> None:
    _compression("default")
