"""This service's own tables (its features arrive with its issue)."""
from __future__ import annotations

import sqlalchemy as sa

from services.kit.outbox import inbox_table, outbox_table

metadata = sa.MetaData()
outbox = outbox_table(metadata)
inbox = inbox_table(metadata)
