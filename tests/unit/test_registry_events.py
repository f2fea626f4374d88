"""The bulk path builds events and receipts without pydantic: they must be exactly what the
validated contracts would produce (consumers decode them with contracts.catalog)."""
from __future__ import annotations

import datetime as dt
import json
import uuid

from contracts.agency import MAX_RECEIPTS, Receipt, ReceiptBatch, ReceiptStatus
from contracts.catalog import EVENTS
from contracts.registry import MAX_ITEMS, EnrolmentChange, EnrolmentsChanged, PeopleRegistered, PersonIdentity
from contracts.subjects import Names
from contracts.values import Problem
from services.kit.decode import decode_envelope
from services.registry import handlers
from tests import factories

V = "3317012001"
NIK = factories.nik(V, dt.date(1960, 7, 1), "F", 1)
CORR = str(uuid.uuid4())  # the ingest batch id


CHANGE = {"nik": NIK, "no_kk": "3317010107100001", "village_code": V, "birth_date": "1960-07-01",
          "programme_identifier": "pkh", "enrolment_status": "active", "previous_status": None,
          "status_change_date": "2026-01-01", "reported_by": "pkh", "reference_id": "R1",
          "verification_status": "verified", "verification_period": "2026-11", "payee": None}


def test_fast_enrolments_changed_decodes_to_the_same_event():
    rows = handlers.event_rows(Names("t1"), EnrolmentsChanged, "changes", [CHANGE], CORR)
    assert len(rows) == 1 and rows[0]["subject"] == "t1.registry.events.enrolments_changed"
    env = decode_envelope(rows[0]["payload"], EVENTS)
    assert str(env.event_id) == str(rows[0]["id"]) and env.producer == "registry" and env.schema_version == 1
    assert str(env.correlation_id) == CORR
    assert env.data == EnrolmentsChanged(changes=[EnrolmentChange.model_validate(CHANGE)])
    assert json.loads(env.model_dump_json())["data"] == json.loads(rows[0]["payload"])["data"]


def test_batch_events_are_split_at_max_items_in_order():
    items = [CHANGE | {"reference_id": f"R{i}"} for i in range(MAX_ITEMS * 2 + 1)]
    rows = handlers.event_rows(Names(), EnrolmentsChanged, "changes", items, CORR)
    envs = [decode_envelope(r["payload"], EVENTS) for r in rows]
    assert [len(e.data.changes) for e in envs] == [MAX_ITEMS, MAX_ITEMS, 1]
    assert [c.reference_id for e in envs for c in e.data.changes] == [i["reference_id"] for i in items]
    assert len({r["id"] for r in rows}) == 3
    assert handlers.event_rows(Names(), EnrolmentsChanged, "changes", [], CORR) == []


def test_fast_people_registered_decodes_to_the_same_event():
    data = {"nik": NIK, "no_kk": "3317010107100001", "name": "Siti", "sex": "F", "birth_date": "1960-07-01",
            "village_code": V, "is_new": True, "reported_by": "pkh"}
    [row] = handlers.event_rows(Names(), PeopleRegistered, "people", [data], CORR)
    env = decode_envelope(row["payload"], EVENTS)
    assert env.data == PeopleRegistered(people=[PersonIdentity.model_validate(data)])


def test_plain_receipts_validate_as_the_contract():
    ok = handlers._receipt("pkh", "m1", {"reference_id": "R1"}, ReceiptStatus.succ, (), "c", handlers._now_iso())
    assert Receipt.model_validate_json(json.dumps(ok)).status == ReceiptStatus.succ
    bad = handlers._receipt("pkh", "m2", {"reference_id": 5}, ReceiptStatus.rjct,
                            [Problem("nik.format", "NIK must be exactly 16 digits", "nik")], "c", handlers._now_iso())
    r = Receipt.model_validate_json(json.dumps(bad))
    assert r.reference_id == "" and r.status_reasons[0].status_reason_code == "rjct.nik.format"


def test_receipt_batches_validate_and_split_per_program_at_max_receipts():
    def body(i, program):
        return json.dumps(handlers._receipt(program, f"m{i}", {}, ReceiptStatus.succ, (), "c",
                                            handlers._now_iso())).encode()
    rows = handlers.receipt_rows(Names("t2"), {"pkh": [body(i, "pkh") for i in range(MAX_RECEIPTS + 3)],
                                               "bpnt": [body(0, "bpnt")]})
    batches = [(r["subject"], ReceiptBatch.model_validate_json(r["payload"])) for r in rows]
    assert [(s, b.programme_identifier, len(b.receipts)) for s, b in batches] == [
        ("t2.agency.pkh.receipts", "pkh", MAX_RECEIPTS), ("t2.agency.pkh.receipts", "pkh", 3),
        ("t2.agency.bpnt.receipts", "bpnt", 1)]
    assert [r.message_id for _s, b in batches[:2] for r in b.receipts] == [f"m{i}" for i in range(MAX_RECEIPTS + 3)]
