"""kit.decode's two ways to an envelope give the same answer (issue 11's drain): the fast
pass (pydantic's JSON parser in one go) takes most messages, the checked way (load_json's
limits, then validation) the rest; no message may be taken by the fast pass that the checked
way would refuse, or decoded differently."""
from __future__ import annotations

import json
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.catalog import EVENTS
from contracts.envelope import envelope
from contracts.registry import EnrolmentChange, EnrolmentsChanged
from services.kit import decode

VALID = envelope(EnrolmentsChanged(changes=[EnrolmentChange(
    nik="3317014102610001", no_kk="3317010101010001", village_code="3317012001", birth_date="1961-02-01",
    programme_identifier="pkh", enrolment_status="active", status_change_date="2026-11-01",
    reported_by="pkh")]), "registry", event_id=uuid.UUID(int=7)).model_dump_json().encode()


def outcome(fn, data: bytes):
    try:
        env = fn(data)
    except decode.Rejection as exc:
        return ("rejected", exc.code)
    return ("none",) if env is None else ("value", env.model_dump_json())


def checked(data: bytes):
    return decode._checked_envelope(data, EVENTS, decode.DEFAULT_LIMITS, frozenset())


def both(data: bytes):
    return outcome(lambda d: decode.decode_envelope(d, EVENTS), data), outcome(checked, data)


def _with(**changes) -> bytes:
    raw = json.loads(VALID)
    raw.update(changes)
    return json.dumps(raw).encode()


HOSTILE = [
    VALID,
    VALID.replace(b'"event_type":"registry.enrolments_changed"',
                  b'"event_type":"registry.enrolments_changed","event_type":"registry.people_registered"'),
    VALID.replace(b'"event_type":"registry.enrolments_changed"',
                  b'"event_type":"registry.people_registered","event_type":"registry.enrolments_changed"'),
    VALID.replace(b'"reported_by":"pkh"', b'"reported_by":"p\\u0000kh"'),
    VALID.replace(b'"reported_by":"pkh"', b'"reported_by":"p\\ud800kh"'),
    VALID.replace(b'"schema_version":1', b'"schema_version":1234567890123456789012345'),
    VALID.replace(b'"schema_version":1', b'"schema_version":' + b"9" * 5000),
    VALID.replace(b'"reference_id":""', b'"reference_id":' + b"[" * 5000 + b"]" * 5000),
    VALID.replace(b'"pkh"', b'"\xff\xfe"', 1),
    VALID[:-20], b"", b"   ", b"[]", b"null", b'"event_type"',
    _with(event_type="registry.unknown"), _with(extra_field=1), _with(event_type=None),
    VALID.replace(b"registry.enrolments_changed", b"REGISTRY.enrolments_changed"),
]


def test_each_hostile_message_gets_the_same_answer_both_ways():
    for data in HOSTILE:
        fast, slow = both(data)
        assert fast == slow, (data[:200], fast, slow)
    assert both(VALID)[0][0] == "value"
    assert decode._fast_envelope(VALID, EVENTS, decode.DEFAULT_LIMITS) is not None  # the fast pass is taken


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_mutation_of_a_valid_envelope_gets_the_same_answer_both_ways(data):
    raw = bytearray(VALID)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw)))
        kind = data.draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = data.draw(st.sampled_from([b"\\u0000", b"\\ud800", b"9" * 20, b"[", b"{", b'"', b",", b"\xff",
                                           b"1", b'"event_type":"registry.people_registered",', b" "]))
        if kind == "insert":
            raw[at:at] = piece
        elif kind == "delete":
            del raw[at:at + len(piece)]
        else:
            raw[at:at + len(piece)] = piece
    fast, slow = both(bytes(raw))
    assert fast == slow, (bytes(raw)[:300], fast, slow)
