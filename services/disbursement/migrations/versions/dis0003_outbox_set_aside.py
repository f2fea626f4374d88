"""outbox rows set aside by the relay (failed_at, failure, attempts)

Revision ID: dis0003
Revises: dis0002
Create Date: 2026-11-23 19:40:00

"""
from typing import Sequence, Union

from alembic import op

from services.kit.migrations import outbox_set_aside_downgrade, outbox_set_aside_upgrade

revision: str = 'dis0003'
down_revision: Union[str, Sequence[str], None] = 'dis0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    outbox_set_aside_upgrade(op)


def downgrade() -> None:
    outbox_set_aside_downgrade(op)
