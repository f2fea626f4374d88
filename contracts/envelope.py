"""The envelope every Sinergi event travels in.

`event_id` doubles as the JetStream `Nats-Msg-Id`, so a re-published event is de-duplicated
by the server and by every consumer's inbox.
"""
from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, ClassVar, Generic, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field


class Event(BaseModel):
    """Base of every event payload. Subclasses set `event_type` and `schema_version`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1
    domain: ClassVar[str]  # registry, intake, disbursement


E = TypeVar("E", bound=BaseModel)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Envelope(BaseModel, Generic[E]):
    """Metadata around one event; `data` holds the event itself."""

    model_config = ConfigDict(extra="forbid")
    event_id: uuid.UUID = Field(default_factory=uuid.uuid4, description="unique id; also the Nats-Msg-Id")
    event_type: str = Field(description="e.g. registry.enrolments_changed")
    schema_version: int = Field(ge=1)
    occurred_at: dt.datetime = Field(default_factory=utcnow)
    producer: str = Field(description="the service that emitted it")
    correlation_id: uuid.UUID | None = Field(default=None, description="the flow this event belongs to")
    causation_id: uuid.UUID | None = Field(default=None, description="the message that caused it")
    data: E


def envelope(event: Event, producer: str, *, event_id: uuid.UUID | None = None,
             correlation_id: uuid.UUID | None = None, causation_id: uuid.UUID | None = None,
             occurred_at: dt.datetime | None = None) -> Envelope[Any]:
    # parametrized at run time, so the JSON schema and validation name the concrete event type
    model = cast("type[Envelope[Any]]", Envelope[type(event)])  # type: ignore[misc]
    return model(
        event_id=event_id or uuid.uuid4(), event_type=event.event_type,
        schema_version=event.schema_version, producer=producer,
        correlation_id=correlation_id, causation_id=causation_id,
        occurred_at=occurred_at or utcnow(), data=event)
