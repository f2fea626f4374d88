"""Reporting rules, no I/O: how an event changes the aggregates."""
from __future__ import annotations

from collections import Counter

from contracts.registry import EnrolmentChanged


def enrolment_deltas(events: list[EnrolmentChanged]) -> Counter:
    """+1 for the new status, -1 for the one it replaced, per (program, village, status)."""
    deltas: Counter = Counter()
    for e in events:
        deltas[(e.programme_identifier, e.village_code, e.enrolment_status.value)] += 1
        if e.previous_status is not None:
            deltas[(e.programme_identifier, e.village_code, e.previous_status.value)] -= 1
    return deltas
