"""Hostile bytes on `registry.events.*`, intake's only input from the stream: each gets a dead
letter with its reason code on `deadletter.intake`, the registry's other events are skipped,
a valid event published after them all is applied, and `/readyz` stays 200 with the consumer
running. Real NATS and PostgreSQL.

(Oversize beyond 1 MiB cannot pass NATS's max_payload; ~900 KB of text in one field stands in:
intake takes at most 512 KiB, twice its largest real event.)"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid

import pytest

from contracts import wilayah
from contracts.agency import EnrolmentStatus
from contracts.envelope import Event, envelope
from contracts.registry import (EnrolmentChange, EnrolmentsChanged, PeopleRegistered, PersonIdentity,
                                ProposalDecided, ProposalDecision)
from services.intake.handlers import CONSUMER
from services.kit.auth import Role
from tests.conftest import eventually
from tests.factories import kk, nik
from tests.integration.intake_support import dead_letters, token

pytestmark = pytest.mark.integration

VILLAGE = wilayah.villages_in("331701")[0]


def change(n: str, **over) -> EnrolmentChange:
    return EnrolmentChange(**{"nik": n, "no_kk": kk(VILLAGE), "village_code": VILLAGE,
                              "birth_date": dt.date(1940, 1, 1), "programme_identifier": "kamalia_merekah",
                              "enrolment_status": EnrolmentStatus.active, "status_change_date": dt.date(2026, 1, 1),
                              "reported_by": "kamalia_merekah", **over})


def doc(event: Event, event_id: uuid.UUID) -> dict:
    """An envelope as the JSON document the registry would publish (event_id first)."""
    return json.loads(envelope(event, "registry", event_id=event_id).model_dump_json())


def hostile(elder: str) -> dict[str, tuple[str, bytes, str, uuid.UUID | None]]:
    """name -> (event name in the subject, bytes, expected reason code, the event_id it carries).
    A message whose envelope opens with an event_id is keyed (and dead-lettered) by it."""
    ids = {k: uuid.uuid4() for k in ("big", "huge_int", "nul", "utf8", "truncated", "wrong_type", "unknown")}
    enrol = EnrolmentsChanged(changes=[change(elder)])
    decided = ProposalDecided(proposal_id=uuid.uuid4(), nik=elder, village_code=VILLAGE,
                              decision=ProposalDecision.rejected, decided_by="v", reason="x" * 900_000)
    huge = json.dumps(doc(enrol, ids["huge_int"])).replace('"schema_version": 1', '"schema_version": ' + "9" * 5000)
    nul = doc(enrol, ids["nul"])
    nul["data"]["changes"][0]["reference_id"] = "a\x00b"  # json.dumps writes it as \u0000
    utf8 = json.dumps(doc(enrol, ids["utf8"])).encode().replace(b'"reported_by": "kamalia_merekah"',
                                                                b'"reported_by": "\xff\xfe"')
    wrong = doc(enrol, ids["wrong_type"])
    wrong["data"]["changes"][0]["status_change_date"] = 12
    unknown = doc(enrol, ids["unknown"]) | {"event_type": "registry.mystery"}
    return {
        "big": ("proposal_decided", json.dumps(doc(decided, ids["big"])).encode(), "rjct.message.too_large",
                ids["big"]),
        "deep": ("enrolments_changed", b"[" * 30_000 + b"]" * 30_000, "rjct.json.too_deep", None),
        "huge_int": ("enrolments_changed", huge.encode(), "rjct.json.number_too_large", ids["huge_int"]),
        "nul": ("enrolments_changed", json.dumps(nul).encode(), "rjct.text.nul", ids["nul"]),
        "utf8": ("enrolments_changed", utf8, "rjct.message.encoding", ids["utf8"]),
        "truncated": ("enrolments_changed", json.dumps(doc(enrol, ids["truncated"])).encode()[:-40],
                      "rjct.json.invalid", ids["truncated"]),
        "empty": ("proposal_decided", b"", "rjct.message.empty", None),
        "wrong_type": ("enrolments_changed", json.dumps(wrong).encode(), "rjct.event.invalid", ids["wrong_type"]),
        "unknown_type": ("mystery", json.dumps(unknown).encode(), "rjct.event.unknown_type", ids["unknown"]),
        "not_an_envelope": ("enrolments_changed", b"[1, 2]", "rjct.event.unknown_type", None),
    }


async def test_hostile_registry_events_are_dead_lettered_and_the_next_valid_one_applied(settings, nc, start):
    js = nc.jetstream()
    elder = nik(VILLAGE, dt.date(1940, 1, 1), "F")
    coord = token(settings, Role.coordinator, "331701", "koord")
    corpus = hostile(elder)
    async with start("intake", settings) as svc:
        for name, (event, data, _code, _eid) in corpus.items():
            await js.publish(settings.names.subject(f"registry.events.{event}"), data,
                             headers={"Nats-Msg-Id": f"hostile-{name}"})
        # a known registry event intake has no use for: acknowledged, no dead letter
        people = PeopleRegistered(people=[PersonIdentity(
            nik=elder, no_kk=kk(VILLAGE), name="Mbah Sarni", sex="F", birth_date=dt.date(1940, 1, 1),
            village_code=VILLAGE, is_new=True)])
        valid = [people, EnrolmentsChanged(changes=[change(elder)])]
        for ev in valid:
            env = envelope(ev, "registry")
            await js.publish(settings.names.event(ev.event_type), env.model_dump_json().encode(),
                             headers={"Nats-Msg-Id": str(env.event_id)})

        async def assigned():
            r = await svc.http.post("/assignments", json={"companion": "ani", "nik": elder}, headers=coord)
            return r if r.status_code == 201 else None
        await eventually(assigned, timeout=30)  # the valid event behind them all was applied

        async def all_letters():
            got = await dead_letters(nc, settings)
            return got if len(got) >= len(corpus) else None
        letters = {dl["msg_id"]: dl for dl in await eventually(all_letters, timeout=15)}
        expected = {str(eid) if eid else f"hostile-{name}": code for name, (_e, _d, code, eid) in corpus.items()}
        assert {k: v["reason_code"] for k, v in letters.items()} == expected
        assert all(dl["service"] == "intake" and dl["reason"] and dl["stream_seq"] for dl in letters.values())
        big_data = corpus["big"][1]
        big = letters[str(corpus["big"][3])]
        assert big["payload_truncated"] and big["payload_size"] == len(big_data) > 900_000
        assert big["payload_sha256"] == hashlib.sha256(big_data).hexdigest()

        info = await js.consumer_info(settings.names.stream("REGISTRY"), CONSUMER)
        assert info.num_pending == 0 and info.num_ack_pending == 0
        assert info.delivered.stream_seq == len(corpus) + len(valid)
        ready = await svc.http.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"][f"consumer {CONSUMER}"] == "ok"
        stats = svc.rt.consumers[0].stats
        assert stats.rejected == len(corpus) and stats.skipped == 1 and stats.handled == 1


async def test_a_copy_republished_with_another_msg_id_is_applied_once(settings, nc, start):
    """The idempotency key is the envelope's event_id, not the Nats-Msg-Id of the copy: an
    exit re-published outside the de-duplication window ends one assignment, once."""
    js = nc.jetstream()
    elder = nik(VILLAGE, dt.date(1941, 2, 2), "F")
    coord = token(settings, Role.coordinator, "331701", "koord")
    async with start("intake", settings) as svc:
        first = envelope(EnrolmentsChanged(changes=[change(elder)]), "registry")
        subject = settings.names.event("registry.enrolments_changed")
        await js.publish(subject, first.model_dump_json().encode(), headers={"Nats-Msg-Id": str(first.event_id)})

        async def assigned():
            r = await svc.http.post("/assignments", json={"companion": "ani", "nik": elder}, headers=coord)
            return r if r.status_code == 201 else None
        await eventually(assigned)
        # the first event again, under another Nats-Msg-Id and with its event_id not first in the JSON
        body = json.loads(first.model_dump_json())
        eid = body.pop("event_id")
        await js.publish(subject, json.dumps(body | {"event_id": eid}).encode(), headers={"Nats-Msg-Id": "copy-1"})

        async def consumed():
            info = await js.consumer_info(settings.names.stream("REGISTRY"), CONSUMER)
            return info.delivered.stream_seq == 2 and info.num_ack_pending == 0 and info.num_pending == 0
        await eventually(consumed)
        assert svc.rt.consumers[0].stats.duplicates == 1 and svc.rt.consumers[0].stats.handled == 1
