"""The civil registry's contract: Dukcapil's death notifications in, the registry's answers out.

DCI (Digital Convergence Initiative, spdci.org) describes this flow in its CRVS-to-SP-MIS
standard (PRS.CRVS.03: ceasing an allowance upon a death notification). The shape follows DCI's
CRVS API `notify` message as its public reference material shows it (spdci/api-showcase's
`CRRecord`, OpenSPP's spdci-compliance payloads): an envelope of `signature`, `header`
(`version`, `message_id`, `message_ts`, `action` = `notify`, `sender_id`, `receiver_id`,
`total_count`) and `message` (`transaction_id`, `notify_event[]`); each event has a
`reference_id`, a `timestamp` and `data` (`version`, `reg_type`, `reg_event_type` = `DEATH`,
`reg_record_type`, `reg_records`), and the record DCI's field names: `identifier[]`
(`identifier_type`, `identifier_value`), `death_date`, `death_place`, `registration_number`,
`registration_date`. What Sinergi adds: `identifier_type` is `NIK` (DCI's `NIN`, national ID
number, is accepted as the same), and the answer (`NotifyReceipt`) carries one status per event
with G2P Connect's `status_reason_code` / `status_reason_message`, as the agencies' receipts do.

Dukcapil publishes one notify message on `crvs.dukcapil.deaths` (Nats-Msg-Id
`dukcapil:<header.message_id>`, so JetStream drops a re-sent copy) and reads one receipt per
message from `crvs.dukcapil.receipts`. A message sent again (same `message_id`) gets the same
receipt again.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from contracts.agency import ReceiptStatus

# a notify message carries at most this many events (a day's deaths in a regency is tens)
MAX_EVENTS = 100
DEATH = "DEATH"
NIK_TYPES = ("NIK", "NIN")


class Identifier(BaseModel):
    model_config = ConfigDict(extra="ignore")
    identifier_type: str = Field(description="NIK (or DCI's NIN)", examples=["NIK"])
    identifier_value: str = Field(description="the 16-digit NIK", examples=["3317014107600001"])


class DeathRecord(BaseModel):
    """`reg_records` of a DEATH event: who died, when, and the death certificate (akta kematian)."""

    model_config = ConfigDict(extra="ignore")
    identifier: list[Identifier] = Field(min_length=1, max_length=10)
    death_date: str = Field(description="YYYY-MM-DD, or an ISO date-time (its date counts)")
    death_place: str | dict[str, Any] | None = Field(default=None, description="kept as Dukcapil sends it; unused")
    registration_number: str = Field(min_length=1, max_length=64, description="the death certificate's number")
    registration_date: str | None = Field(default=None, description="when Dukcapil registered the death")


class NotifyEventData(BaseModel):
    model_config = ConfigDict(extra="ignore")
    version: str = "1.0.0"
    reg_type: str = Field(default="ns:org:RegistryType:CRVS")
    reg_event_type: str = Field(description="DEATH: the only event the registry acts on", examples=["DEATH"])
    reg_record_type: str = Field(default="DeathCertificate")
    reg_records: DeathRecord


class NotifyEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")
    reference_id: str = Field(min_length=1, max_length=128, description="Dukcapil's id of this event; "
                                                                         "comes back in its status")
    timestamp: str | None = None
    data: NotifyEventData
    locale: str | None = None


class NotifyHeader(BaseModel):
    model_config = ConfigDict(extra="ignore")
    version: str = "1.0.0"
    message_id: str = Field(min_length=1, max_length=128, description="unique per message; its receipt echoes it")
    message_ts: str | None = None
    action: str = Field(description="notify", examples=["notify"])
    sender_id: str = Field(default="dukcapil")
    receiver_id: str | None = None
    total_count: int | None = None


class NotifyMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    transaction_id: str = Field(min_length=1, max_length=128)
    notify_event: list[NotifyEvent] = Field(min_length=1, max_length=MAX_EVENTS)


class DeathNotification(BaseModel):
    """What travels on `crvs.dukcapil.deaths`: DCI's `notify` envelope of DEATH events."""

    model_config = ConfigDict(extra="ignore")
    signature: str | None = Field(default=None, description="DCI's message signature; the NATS identity "
                                                            "`dukcapil` is what the registry trusts")
    header: NotifyHeader
    message: NotifyMessage


class EventStatus(BaseModel):
    """The registry's answer to one notify event."""

    model_config = ConfigDict(extra="forbid")
    reference_id: str
    status: ReceiptStatus = Field(description="succ: recorded (or already known); rjct: not acted on")
    status_reason_code: str | None = Field(default=None, description="e.g. rjct.nik.format, "
                                                                     "info.crvs.not_in_registry")
    status_reason_message: str | None = None


class NotifyReceipt(BaseModel):
    """What travels on `crvs.dukcapil.receipts`: one per notify message. `status` is about the
    message (rjct: it could not be read at all, and `notify_status` is empty); each event has
    its own status."""

    model_config = ConfigDict(extra="forbid")
    message_id: str
    transaction_id: str = ""
    status: ReceiptStatus
    status_reason_code: str | None = None
    status_reason_message: str | None = None
    notify_status: list[EventStatus] = Field(default_factory=list)
    timestamp: dt.datetime
    correlation_id: str | None = Field(default=None, description="the registry's batch id: the `correlation_id` "
                                                                 "of the life status events it led to")
