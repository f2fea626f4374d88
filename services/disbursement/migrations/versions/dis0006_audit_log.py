"""audit_log: the disbursement's trail of staff writes (kit.audit; issue 15)

Revision ID: dis0006
Revises: dis0005
Create Date: 2026-11-23 20:40:00

"""
from typing import Sequence, Union

from alembic import op

from services.kit.migrations import audit_log_downgrade, audit_log_upgrade

revision: str = 'dis0006'
down_revision: Union[str, Sequence[str], None] = 'dis0005'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    audit_log_upgrade(op)


def downgrade() -> None:
    audit_log_downgrade(op)
