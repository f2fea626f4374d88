"""Every event type, for export and for decoding envelopes by `event_type`.

Each domain keeps its events in its own module (contracts/registry.py, intake.py,
disbursement.py); every concrete `Event` subclass there is listed here automatically.
"""
from __future__ import annotations

import importlib
import inspect

from contracts.envelope import Event

DOMAIN_MODULES = ("contracts.registry", "contracts.intake", "contracts.disbursement")


def _collect() -> dict[str, type[Event]]:
    found: dict[str, type[Event]] = {}
    for name in DOMAIN_MODULES:
        module = importlib.import_module(name)
        for _n, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, Event) and obj is not Event and "event_type" in obj.__dict__:
                if obj.event_type in found and found[obj.event_type] is not obj:
                    raise RuntimeError(f"event_type {obj.event_type} defined twice")
                found[obj.event_type] = obj
    return found


EVENTS: dict[str, type[Event]] = _collect()
