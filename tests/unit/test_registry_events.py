"""The bulk path builds events and receipts without pydantic: they must be exactly what the
validated contracts would produce (consumers decode them with contracts.catalog)."""
from __future__ import annotations

import datetime as dt
import json

from contracts.agency import Receipt, ReceiptStatus
from contracts.catalog import EVENTS
from contracts.registry import EnrolmentChanged, PersonRegistered
from contracts.subjects import Names
from contracts.values import Problem
from services.kit.outbox import decode_envelope
from services.registry import handlers
from tests import factories

V = "3317012001"
NIK = factories.nik(V, dt.date(1960, 7, 1), "F", 1)


def test_fast_enrolment_changed_decodes_to_the_same_event():
    data = {"nik": NIK, "no_kk": "3317010107100001", "village_code": V, "birth_date": "1960-07-01",
            "programme_identifier": "pkh", "enrolment_status": "active", "previous_status": None,
            "status_change_date": "2026-01-01", "reported_by": "pkh", "reference_id": "R1",
            "verification_status": "verified", "verification_period": "2026-11"}
    row = handlers.event_row_fast(Names("t1"), EnrolmentChanged, data)
    assert row["subject"] == "t1.registry.events.enrolment_changed"
    env = decode_envelope(row["payload"], EVENTS)
    assert str(env.event_id) == str(row["id"]) and env.producer == "registry" and env.schema_version == 1
    assert env.data == EnrolmentChanged.model_validate(data)
    assert json.loads(env.model_dump_json())["data"] == json.loads(row["payload"])["data"]


def test_fast_person_registered_decodes_to_the_same_event():
    data = {"nik": NIK, "no_kk": "3317010107100001", "name": "Siti", "sex": "F", "birth_date": "1960-07-01",
            "village_code": V, "is_new": True, "reported_by": "pkh"}
    env = decode_envelope(handlers.event_row_fast(Names(), PersonRegistered, data)["payload"], EVENTS)
    assert env.data == PersonRegistered.model_validate(data)


def test_plain_receipts_validate_as_the_contract():
    ok = handlers._receipt("pkh", "m1", {"reference_id": "R1"}, ReceiptStatus.succ, corr="c")
    assert Receipt.model_validate_json(json.dumps(ok)).status == ReceiptStatus.succ
    bad = handlers._receipt("pkh", "m2", {"reference_id": 5}, ReceiptStatus.rjct,
                            [Problem("nik.format", "NIK must be exactly 16 digits", "nik")])
    r = Receipt.model_validate_json(json.dumps(bad))
    assert r.reference_id == "" and r.status_reasons[0].status_reason_code == "rjct.nik.format"
