"""Hostile bytes on every subject reporting consumes (registry.events.*, intake.events.*,
disbursement.*): each message gets a dead letter on deadletter.reporting with its reason code,
the valid event published behind them is folded into the read models, and /readyz stays 200."""
from __future__ import annotations

import json
import uuid

import pytest
import sqlalchemy as sa

from contracts.envelope import envelope
from contracts.intake import CompanionAssigned
from contracts.registry import EnrolmentsChanged
from services.reporting import store
from tests.conftest import eventually
from tests.integration.test_reporting_recap import A, _enrolment, _nik, _paid, at, dead_letters

pytestmark = pytest.mark.integration


def _assigned() -> CompanionAssigned:
    return CompanionAssigned(assignment_id=uuid.uuid4(), companion="pdp-ani", nik=_nik(A, 11), village_code=A,
                             actor="coord-1")


# per stream: (bare subject, a valid event reporting reads there, a text field of it that
# reaches the read models, the field that gets a value of the wrong JSON type)
STREAMS = {
    "registry": ("registry.events.x", lambda: EnrolmentsChanged(changes=[_enrolment(9, "pkh", A, "active",
                                                                                    "2026-03-02")]),
                 None, "changes"),
    "intake": ("intake.events.x", _assigned, "companion", "active"),
    "disbursement": ("disbursement.x", lambda: _paid("hostile", "pkh", "2026-03", ("apbn", 600_000)),
                     "pseudonym", "amount"),
}


def _doc(event) -> dict:
    return json.loads(envelope(event, event.domain, occurred_at=at("2026-03-02")).model_dump_json())


def _with(event, field: str, value) -> bytes:
    doc = _doc(event)
    doc["data"][field] = value
    return json.dumps(doc).encode()


def hostile(make, text_field: str | None, wrong_field: str) -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, the reason code reporting must give them)."""
    whole = envelope(make(), make().domain).model_dump_json().encode()
    nul = (_with(make(), text_field, "a\u0000b") if text_field else
           json.dumps(_doc(make()) | {"producer": "reg\u0000istry"}).encode())
    out = {
        "oversize": (b'{"event_id": "' + b"x" * 900_000 + b'"}', "rjct.message.too_large"),
        "deep": (b"[" * 30_000 + b"]" * 30_000, "rjct.json.too_deep"),
        "huge_int": (b'{"event_type": ' + b"9" * 5_000 + b"}", "rjct.json.number_too_large"),
        "nul": (nul, "rjct.text.nul"),
        "utf8": (b'{"event_type": "\xff\xfe"}', "rjct.message.encoding"),
        "truncated": (whole[: len(whole) // 2], "rjct.json.invalid"),
        "empty": (b"", "rjct.message.empty"),
        "wrong_type": (_with(make(), wrong_field, {"changes": 12, "active": [True], "amount": "600000"}[wrong_field]),
                       "rjct.event.invalid"),
        "not_an_envelope": (b"[1, 2]", "rjct.event.unknown_type"),
        "unknown_type": (json.dumps(_doc(make()) | {"event_type": "x.nobody_knows"}).encode(),
                         "rjct.event.unknown_type"),
    }
    if text_field:  # a lone surrogate: valid JSON and accepted by the contract, but no text PostgreSQL keeps
        out["surrogate"] = (_with(make(), text_field, "a\ud800b"), "rjct.text.unstorable")
    return out


async def test_hostile_messages_are_dead_lettered_with_reasons_and_valid_events_still_count(settings, nc, start):
    js = nc.jetstream()
    names = settings.names
    expected: dict[str, str] = {}
    async with start("reporting", settings) as rep:
        for stream, (subject, make, text_field, wrong_field) in STREAMS.items():
            for kind, (data, code) in hostile(make, text_field, wrong_field).items():
                await js.publish(names.subject(subject), data, headers={"Nats-Msg-Id": f"{stream}-{kind}"})
                expected[f"{stream}-{kind}"] = code
            valid = make()
            await js.publish(names.subject(subject), envelope(valid, valid.domain, occurred_at=at("2026-03-02"))
                             .model_dump_json().encode())

        await eventually(lambda: _valid_ones_folded(rep), timeout=30)
        letters = await eventually(lambda: dead_letters(js, names, len(expected)), timeout=30)
        got = {x["msg_id"]: x["reason_code"] for x in letters}
        assert got == expected
        big = next(x for x in letters if x["msg_id"] == "disbursement-oversize")
        assert big["payload_truncated"] and big["payload_size"] > 900_000 and big["service"] == "reporting"
        assert big["stream"] == names.stream("DISBURSEMENT") and big["stream_seq"] >= 1

        ready = await rep.http.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert all(v == "ok" for v in ready.json()["checks"].values())
        for c in rep.rt.consumers:
            assert c.stats.failures == 0, (c.spec.durable, c.stats)  # rejected at decode, no batch failed


async def _valid_ones_folded(rep) -> bool:
    """The registry change, the companion assignment and the settlement each reached its read model."""
    async with rep.rt.sessions() as s:
        enrolled = (await s.execute(sa.select(sa.func.coalesce(sa.func.sum(store.enrolment_counts.c.people), 0))
                                    .where(store.enrolment_counts.c.programme_identifier == "pkh"))).scalar()
        assigned = (await s.execute(sa.select(sa.func.count()).select_from(store.assignments))).scalar()
        paid = (await s.execute(sa.select(sa.func.coalesce(sa.func.sum(store.payment_monthly.c.amount), 0)))).scalar()
    return (enrolled, assigned, paid) == (1, 1, 600_000)


def test_the_corpus_is_what_it_says():
    """Guard the test data: the valid events decode, the oversize ones exceed reporting's limit."""
    from services.reporting.adapters import Pseudonyms
    from services.reporting.handlers import LIMITS, decode
    for _subject, make, text_field, wrong_field in STREAMS.values():
        event = make()
        assert decode(envelope(event, event.domain).model_dump_json().encode(), Pseudonyms("t")) is not None
        corpus = hostile(make, text_field, wrong_field)
        assert LIMITS.max_bytes < len(corpus["oversize"][0]) < 1024 * 1024  # NATS takes it; reporting must not
