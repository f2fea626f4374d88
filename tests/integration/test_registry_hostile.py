"""Hostile bytes on the subjects the registry consumes (issue 11), on real NATS and PostgreSQL:
an agency report of about 1 MiB gets a rejected receipt and a dead letter that fits, and the
reports behind it are answered; hostile proposals on `intake.events.proposal_submitted` become
dead letters with reason codes, and a valid proposal behind them is taken."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import uuid

import nats.errors
import pytest

from contracts.deadletter import MAX_KEPT_PAYLOAD
from contracts.envelope import envelope
from contracts.intake import ProposalSubmitted
from services.registry import store
from tests import factories
from tests.conftest import eventually
from tests.integration.registry_support import count, send

pytestmark = pytest.mark.integration

V = "3317012001"


async def read_letters(js, settings) -> list[dict]:
    """Every registry dead letter so far. nats-py's fetch may time out with a bare
    asyncio.TimeoutError instead of its own (seen while an 88 KiB letter was arriving)."""
    sub = await js.pull_subscribe(settings.names.deadletter("registry"), stream=settings.names.stream("DEADLETTER"))
    out: list[dict] = []
    with contextlib.suppress(nats.errors.TimeoutError, asyncio.TimeoutError):
        while True:
            out += [json.loads(m.data) for m in await sub.fetch(100, timeout=0.3)]
    await sub.unsubscribe()
    return out


async def dead_letters(nc, settings, n: int) -> dict[str, dict]:
    """The registry's dead letters by msg_id, once there are at least `n`."""
    async def got():
        letters = await read_letters(nc.jetstream(), settings)
        return {d["msg_id"]: d for d in letters} if len(letters) >= n else None
    return await eventually(got, timeout=20)


async def test_a_report_of_a_mebibyte_is_answered_and_the_reports_behind_it_too(settings, nc, start):
    # just under NATS's 1 MiB max_payload, so the server takes it; its dead letter in base64
    # used to be 1.33 MB and held back every outbox row behind it
    big = factories.enrolment("pkh", village_code=V, name="x" * 1_000_000)
    data = json.dumps(big).encode()
    assert 1_000_000 < len(data) < nc.max_payload - 1024
    after = [factories.enrolment("pkh", village_code=V) for _ in range(20)]
    async with start("registry", settings) as registry:
        got = await send(nc, settings, [big, *after])
        receipt = got[big["message_id"]]
        assert receipt["status"] == "rjct"
        [reason] = receipt["status_reasons"]
        assert reason["status_reason_code"] == "rjct.message.too_large" and str(len(data)) in reason[
            "status_reason_message"]
        assert [got[r["message_id"]]["status"] for r in after] == ["succ"] * 20

        letter = (await dead_letters(nc, settings, 1))[big["message_id"]]
        assert letter["reason_code"] == "rjct.message.too_large"
        assert letter["payload_truncated"] and letter["payload_size"] == len(data)
        assert letter["payload_sha256"] == hashlib.sha256(data).hexdigest()
        assert base64.b64decode(letter["payload_b64"]) == data[:MAX_KEPT_PAYLOAD]
        assert registry.rt.relay.set_aside == 0  # the dead letter fitted: nothing had to be set aside
        assert await count(registry, store.people) == 20
        r = await registry.http.get("/readyz")
        assert r.status_code == 200, r.text


def proposal(name: str = "Ngatijem") -> ProposalSubmitted:
    import datetime as dt
    born = dt.date(1941, 2, 3)
    return ProposalSubmitted(proposal_id=uuid.uuid4(), submitted_by="puskesos-1", nik=factories.nik(V, born, "F"),
                             no_kk=factories.kk(V), name=name, sex="F", birth_date=born, village_code=V)


def _with(**changes: object) -> bytes:
    """A valid proposal's envelope as JSON with some values changed (json.dumps escapes
    \\u0000 and lone surrogates as JSON allows)."""
    env = json.loads(envelope(proposal(), "intake").model_dump_json())
    for k, v in changes.items():
        env["data"][k] = v
    return json.dumps(env).encode()


def hostile() -> dict[str, tuple[bytes, str]]:
    valid = envelope(proposal(), "intake").model_dump_json().encode()
    huge = json.dumps(json.loads(valid)).replace('"schema_version": 1', '"schema_version": ' + "9" * 5000)
    return {
        "oversize": (_with(address="x" * 900_000), "rjct.message.too_large"),
        "deep": (b"[" * 30_000 + b"]" * 30_000, "rjct.json.too_deep"),
        "huge_int": (huge.encode(), "rjct.json.number_too_large"),
        "nul": (_with(name="Nga\x00tijem"), "rjct.text.nul"),
        "utf8": (valid.replace(b"Ngatijem", b"Nga\xff\xfetijem"), "rjct.message.encoding"),
        # a lone surrogate is no character: refused before the contract is even read
        "surrogate": (_with(name="Nga\ud800tijem"), "rjct.text.unstorable"),
        "truncated": (valid[:-20], "rjct.json.invalid"),
        "empty": (b"", "rjct.message.empty"),
        "not_a_proposal": (b'{"event_type": "intake.proposal_submitted"}', "rjct.event.invalid"),
    }


async def test_hostile_proposals_are_dead_lettered_with_reason_codes_and_a_valid_one_is_taken(settings, nc, start):
    js = nc.jetstream()
    subject = settings.names.event(ProposalSubmitted.event_type)
    cases = hostile()
    good = proposal("Mbah Karsinah")
    async with start("registry", settings) as registry:
        for name, (data, _code) in cases.items():
            await js.publish(subject, data, headers={"Nats-Msg-Id": name})
        await js.publish(subject, envelope(good, "intake").model_dump_json().encode())

        async def taken():
            return await count(registry, store.proposals) == 1
        await eventually(taken, timeout=20)
        letters = await dead_letters(nc, settings, len(cases))
        assert {k: v["reason_code"] for k, v in letters.items()} == {k: code for k, (_d, code) in cases.items()}
        assert all(v["reason"] and v["subject"] == subject for v in letters.values())
        assert letters["oversize"]["payload_truncated"] and letters["oversize"]["payload_size"] > 900_000
        async with registry.rt.sessions() as s:
            row = await store.proposal(s, good.proposal_id)
        assert row is not None and row.name == "Mbah Karsinah" and row.status == "proposed"
        r = await registry.http.get("/readyz")
        assert r.status_code == 200, r.text
