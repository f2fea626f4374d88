"""Every event type, for export and for decoding envelopes by `event_type`."""
from __future__ import annotations

from contracts.envelope import Event
from contracts import registry

EVENTS: dict[str, type[Event]] = {
    cls.event_type: cls
    for cls in [
        registry.PersonRegistered,
        registry.EnrolmentChanged,
    ]
}
