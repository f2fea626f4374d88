"""Dead letters: a message a service could not accept, kept with the reason.

Published on `deadletter.<service>` (stream DEADLETTER). The payload is kept verbatim
(base64) so an operator can fix and replay it, up to `MAX_KEPT_PAYLOAD` bytes: a larger one
is cut there (`payload_truncated`), and `stream`/`stream_seq` say where the whole original
still lies. A dead letter must itself fit in a NATS message (1 MiB by default): a rejected
1 MiB report grew to 1.33 MB in base64 and blocked every outbox row behind it (issue 11).
The stream is for operators only.
"""
from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field

# 64 KiB of original bytes: 88 KiB in base64, far below NATS's 1 MiB default max_payload
MAX_KEPT_PAYLOAD = 64 * 1024


class DeadLetter(BaseModel):
    service: str
    subject: str = Field(description="where the message arrived (or, for an outbox row, where it was going)")
    reason_code: str = Field(description="stable code, e.g. rjct.json.invalid")
    reason: str = Field(description="what is wrong, in plain words")
    msg_id: str | None = Field(default=None, description="its Nats-Msg-Id, if any")
    payload_b64: str = Field(description="the message's bytes, base64, at most MAX_KEPT_PAYLOAD of them")
    received_at: dt.datetime
    payload_size: int | None = Field(default=None, ge=0, description="size of the whole original in bytes")
    payload_sha256: str | None = Field(default=None, description="hex digest of the whole original")
    payload_truncated: bool = Field(default=False, description="true when payload_b64 holds only the start")
    stream: str | None = Field(default=None, description="the stream the original was read from, if any")
    stream_seq: int | None = Field(default=None, ge=0, description="its sequence there: replay reads it back")
    deliveries: int | None = Field(default=None, ge=0, description="how often it had been delivered")
