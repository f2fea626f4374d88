"""Helpers for intake's integration tests: tokens, a minimal `registry.lookup` responder,
registry events put on the REGISTRY stream, and reading intake's events back."""
from __future__ import annotations

import contextlib
import datetime as dt
import json

import nats.errors
from nats.js.api import ConsumerConfig, DeliverPolicy

from contracts.envelope import Event, envelope
from contracts.lookup import EnrolmentSummary, LookupReply, LookupRequest, PersonSummary
from services.kit.auth import Principal, Role, issue_token


def token(settings, role: Role, area: str, user: str | None = None, programs: tuple[str, ...] = ()) -> dict:
    p = Principal(user=user or f"{role.value}-{area}", role=role, area=area, programs=programs)
    return {"Authorization": f"Bearer {issue_token(p, settings.auth_secret)}"}


def person(nik: str, village: str, programs: list[str] = (), name: str = "Siti Aminah") -> PersonSummary:
    return PersonSummary(nik=nik, no_kk=nik[:6] + "0101200001", name=name, sex="F", birth_date="1960-07-01",
                         village_code=village, enrolments=[
                             EnrolmentSummary(programme_identifier=p, enrolment_status="active",
                                              status_change_date="2026-01-01") for p in programs])


@contextlib.asynccontextmanager
async def fake_registry(nc, settings, people: dict[str, PersonSummary]):
    """Answers `registry.lookup` from `people` (by NIK, or by exact name within a village);
    records every request it got in `.requests`."""
    requests: list[LookupRequest] = []

    async def answer(msg):
        req = LookupRequest.model_validate_json(msg.data)
        requests.append(req)
        if req.nik:
            found = [people[req.nik]] if req.nik in people else []
        else:
            found = [p for p in people.values() if p.name.lower() == (req.name or "").lower()
                     and p.village_code == req.village_code]
        await msg.respond(LookupReply(found=bool(found), people=found).model_dump_json().encode())

    sub = await nc.subscribe(settings.names.lookup(), cb=answer)
    await nc.flush()
    try:
        yield requests
    finally:
        await sub.unsubscribe()


async def publish_event(nc, settings, event: Event, producer: str = "registry", event_id=None) -> str:
    env = envelope(event, producer, event_id=event_id)
    ack = await nc.jetstream().publish(settings.names.event(event.event_type), env.model_dump_json().encode(),
                                       headers={"Nats-Msg-Id": str(env.event_id)})
    assert not ack.duplicate or event_id is not None
    return str(env.event_id)


async def intake_events(nc, settings, event_type: str) -> list[dict]:
    """Every event of one type on the (test's) INTAKE stream, as decoded envelopes."""
    js = nc.jetstream()
    sub = await js.pull_subscribe(settings.names.event(event_type), stream=settings.names.stream("INTAKE"))
    out: list[dict] = []
    try:
        while True:
            try:
                msgs = await sub.fetch(100, timeout=0.3)
            except (nats.errors.TimeoutError, TimeoutError):
                break
            for m in msgs:
                out.append({"raw": m.data.decode(), "headers": m.headers or {}, **json.loads(m.data)})
                await m.ack()
    finally:
        await sub.unsubscribe()
    return out


def utc(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


async def dead_letters(nc, settings) -> list[dict]:
    """Every dead letter intake has published so far (an ordered read of deadletter.intake)."""
    js = nc.jetstream()
    sub = await js.pull_subscribe(settings.names.deadletter("intake"), stream=settings.names.stream("DEADLETTER"),
                                  config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL))
    out: list[dict] = []
    try:
        while True:
            try:
                msgs = await sub.fetch(100, timeout=0.3)
            except (nats.errors.TimeoutError, TimeoutError):
                break
            for m in msgs:
                out.append(json.loads(m.data))
                await m.ack()
    finally:
        await sub.unsubscribe()
    return out
