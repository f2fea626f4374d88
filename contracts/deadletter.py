"""Dead letters: a message a service could not accept, kept with the reason.

Published on `deadletter.<service>` (stream DEADLETTER). The payload is kept verbatim
(base64) so an operator can fix and replay it; the stream is for operators only.
"""
from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field


class DeadLetter(BaseModel):
    service: str
    subject: str = Field(description="where the message arrived")
    reason_code: str = Field(description="stable code, e.g. rjct.json.invalid")
    reason: str = Field(description="what is wrong, in plain words")
    msg_id: str | None = Field(default=None, description="its Nats-Msg-Id, if any")
    payload_b64: str
    received_at: dt.datetime
