"""Envelopes round-trip through JSON and decode by event_type; subject and stream names."""
from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest

from contracts.catalog import EVENTS
from contracts.envelope import envelope
from contracts.registry import MAX_ITEMS, EnrolmentChange, EnrolmentsChanged, PeopleRegistered, PersonIdentity
from contracts.subjects import REGISTRY_LOOKUP, STREAMS, Names, event_subject
from services.kit.decode import Rejection, decode_envelope
from services.kit.outbox import event_row
from tests import factories


def _identity(serial: int = 1) -> PersonIdentity:
    v = factories.village()
    return PersonIdentity(nik=factories.nik(v, dt.date(1960, 7, 1), "F", serial=serial),
                          no_kk=factories.kk(v, serial=serial), name="Siti", sex="F", birth_date=dt.date(1960, 7, 1),
                          village_code=v, is_new=True)


def _people() -> PeopleRegistered:
    return PeopleRegistered(people=[_identity(1), _identity(2)])


def test_envelope_round_trip_keeps_every_field():
    corr, cause = uuid.uuid4(), uuid.uuid4()
    env = envelope(_people(), "registry", correlation_id=corr, causation_id=cause)
    assert env.event_type == "registry.people_registered" and env.schema_version == 1
    assert env.occurred_at.tzinfo is not None
    back = decode_envelope(env.model_dump_json().encode(), EVENTS)
    assert back == env
    assert isinstance(back.data, PeopleRegistered)
    assert [p.nik for p in back.data.people] == [p.nik for p in env.data.people]
    assert all(isinstance(p, PersonIdentity) for p in back.data.people)
    assert back.correlation_id == corr and back.causation_id == cause


def test_decode_rejects_unknown_type_bad_json_and_bad_data():
    env = json.loads(envelope(_people(), "registry").model_dump_json())
    with pytest.raises(Rejection, match="unknown event_type"):
        decode_envelope(json.dumps({**env, "event_type": "registry.nope"}).encode(), EVENTS)
    with pytest.raises(Rejection):
        decode_envelope(b"{not json", EVENTS)
    with pytest.raises(Rejection, match="unknown event_type"):
        decode_envelope(b"[1, 2]", EVENTS)
    bad = [{**env["data"]["people"][0], "nik": "3317019907600001"}, *env["data"]["people"][1:]]  # one bad item
    with pytest.raises(Rejection, match="rjct.event.invalid"):
        decode_envelope(json.dumps({**env, "data": {"people": bad}}).encode(), EVENTS)
    with pytest.raises(Rejection, match="rjct.event.invalid"):
        decode_envelope(json.dumps({**env, "data": {"people": []}}).encode(), EVENTS)  # a batch is never empty
    with pytest.raises(Rejection, match="rjct.event.invalid"):
        decode_envelope(json.dumps({**env, "data": {"people": env["data"]["people"][:1] * (MAX_ITEMS + 1)}}).encode(),
                        EVENTS)
    with pytest.raises(Rejection, match="rjct.event.invalid"):
        decode_envelope(json.dumps({**env, "extra": 1}).encode(), EVENTS)
    with pytest.raises(Rejection, match="rjct.event.invalid"):
        decode_envelope(json.dumps({**env, "schema_version": 0}).encode(), EVENTS)


def test_catalog_collects_every_domain_event_once():
    assert {"registry.people_registered", "registry.enrolments_changed"} <= set(EVENTS)
    assert not {"registry.person_registered", "registry.enrolment_changed"} & set(EVENTS)
    for t, cls in EVENTS.items():
        assert cls.event_type == t and t.split(".")[0] == cls.domain


def test_event_subject():
    assert event_subject("registry.enrolments_changed") == "registry.events.enrolments_changed"
    assert event_subject("registry.people_registered") == "registry.events.people_registered"
    assert event_subject("intake.proposal_submitted") == "intake.events.proposal_submitted"
    assert event_subject("disbursement.budget_reserved") == "disbursement.budget_reserved"


def test_names_without_prefix_are_the_production_names():
    n = Names()
    assert n.subject("registry.events.x") == "registry.events.x" and n.stream("REGISTRY") == "REGISTRY"
    assert n.enrolments("pkh") == "agency.pkh.enrolments" and n.receipts() == "agency.*.receipts"
    assert n.deadletter("registry") == "deadletter.registry" and n.lookup() == REGISTRY_LOOKUP
    assert n.streams() == STREAMS
    assert n.bare("agency.pkh.enrolments") == "agency.pkh.enrolments"


def test_names_with_prefix_namespace_every_subject_and_stream():
    n = Names("t1234")
    assert n.event("registry.enrolments_changed") == "t1234.registry.events.enrolments_changed"
    assert n.event("disbursement.budget_reserved") == "t1234.disbursement.budget_reserved"
    assert n.stream("REGISTRY") == "T1234_REGISTRY"
    assert n.enrolments("pkh") == "t1234.agency.pkh.enrolments"
    assert n.lookup() == "t1234.registry.lookup"
    assert n.bare("t1234.agency.pkh.enrolments") == "agency.pkh.enrolments"
    assert n.bare("other.agency.pkh.enrolments") == "other.agency.pkh.enrolments"
    for stream, subjects in n.streams().items():
        assert stream.startswith("T1234_") and all(s.startswith("t1234.") for s in subjects)


def test_no_stream_captures_the_lookup_subject():
    """A stream over registry.lookup would answer requests with a PubAck."""
    from contracts.export import stream_of
    assert stream_of(REGISTRY_LOOKUP) is None
    for t in EVENTS:
        assert stream_of(event_subject(t)) is not None, t


def test_event_row_uses_the_event_id_as_row_id_and_the_prefixed_subject():
    n = Names("tx")
    ev = EnrolmentsChanged(changes=[EnrolmentChange(
        nik=_identity().nik, no_kk=factories.kk("3317012001"), village_code="3317012001",
        birth_date=dt.date(1960, 7, 1), programme_identifier="pkh", enrolment_status="active",
        status_change_date=dt.date(2026, 1, 1), reported_by="pkh")])
    row = event_row(n, ev, "registry")
    assert row["subject"] == "tx.registry.events.enrolments_changed"
    assert json.loads(row["payload"])["event_id"] == str(row["id"])
