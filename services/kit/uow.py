"""One unit of work: a database transaction and the messages it will send.

    async with kit.unit_of_work() as uow:
        await store.save_case(uow.session, case)
        uow.emit(CaseRegistered(...))           # an event on its domain's subject
        uow.send(names.receipts(p), batch)      # any other message (receipts, instructions)
        uow.dead_letter(...)                    # a message that could not be accepted

On leaving the block the messages become outbox rows in the same transaction, it commits,
and only then is the relay woken. No handler or route touches the outbox table itself, so a
state change without its events (or events without their change) cannot commit.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.envelope import Event
from contracts.subjects import Names
from services.kit.outbox import OutboxRow, deadletter_row, event_row, message_row


class UnitOfWork:
    def __init__(self, session: AsyncSession, names: Names, service: str) -> None:
        self.session, self.names, self.service = session, names, service
        self.rows: list[OutboxRow] = []

    def emit(self, event: Event, *, event_id: uuid.UUID | None = None, correlation_id: uuid.UUID | None = None,
             causation_id: uuid.UUID | None = None) -> uuid.UUID:
        """Queue one event (in its envelope); returns its event id (also its Nats-Msg-Id)."""
        row = event_row(self.names, event, self.service, event_id=event_id, correlation_id=correlation_id,
                        causation_id=causation_id)
        self.rows.append(row)
        return row["id"]

    def send(self, subject: str, body: BaseModel | bytes, *, msg_id: uuid.UUID | None = None) -> uuid.UUID:
        """Queue a message that is not an event (a receipt batch, a payment instruction)."""
        row = message_row(subject, body, msg_id)
        self.rows.append(row)
        return row["id"]

    def add_rows(self, rows: Iterable[OutboxRow]) -> None:
        """Queue prebuilt rows (bulk paths that build thousands of messages without pydantic)."""
        self.rows.extend(rows)

    def dead_letter(self, subject: str, data: bytes, reason_code: str, reason: str, *, msg_id: str | None = None,
                    **where: Any) -> None:
        """Queue a dead letter on `deadletter.<service>` (`where`: stream, stream_seq, deliveries)."""
        self.rows.append(deadletter_row(self.names, self.service, subject, data, reason_code, reason, msg_id,
                                        **where))
