"""Helpers for the disbursement tests: tokens, registry events we publish ourselves, people."""
from __future__ import annotations

import asyncio
import datetime as dt
import random
import uuid

from contracts.catalog import EVENTS
from contracts.envelope import envelope
from contracts.registry import MAX_ITEMS, EnrolmentChange, EnrolmentsChanged
from services.kit.auth import Principal, Role, issue_token
from tests import factories


def headers(settings, role: Role = Role.program_manager, user: str = "pm1") -> dict:
    return {"Authorization": f"Bearer {issue_token(Principal(user, role, ''), settings.auth_secret)}"}


def people(n: int, seed: int = 1, birth: dt.date = dt.date(1950, 3, 4)) -> list[dict]:
    """n distinct valid people in Rembang."""
    rng = random.Random(seed)
    villages = factories.wilayah.villages_in("3317")
    out, seen = [], set()
    serial = seed * 100_000
    while len(out) < n:
        serial += 1
        v = rng.choice(villages)
        nik = factories.nik(v, birth, "F", serial=serial % 9999 + 1)
        if nik in seen:
            continue
        seen.add(nik)
        out.append({"nik": nik, "no_kk": factories.kk(v, serial=serial % 9999 + 1), "village_code": v,
                    "birth_date": birth})
    return out


def enrolment_change(person: dict, program: str, status: str = "active", verified: bool | None = True,
                     effective: dt.date = dt.date(2026, 1, 1)) -> EnrolmentChange:
    extra = {}
    if verified is not None:
        extra["verification_status"] = "verified" if verified else "ineligible"
    return EnrolmentChange(nik=person["nik"], no_kk=person["no_kk"], village_code=person["village_code"],
                           birth_date=person["birth_date"], programme_identifier=program, enrolment_status=status,
                           status_change_date=effective, reported_by=program, **extra)


def enrolments_event(persons: list[dict], program: str, status: str = "active", verified: bool | None = True,
                     effective: dt.date = dt.date(2026, 1, 1)) -> bytes:
    """One registry.enrolments_changed for these people (at most MAX_ITEMS), as one ingest batch."""
    ev = EnrolmentsChanged(changes=[enrolment_change(p, program, status, verified, effective) for p in persons])
    return envelope(ev, "registry").model_dump_json().encode()


def verification_event(person: dict, verified: bool) -> bytes | None:
    """registry.verification_recorded, if the registry's contract has it."""
    cls = EVENTS.get("registry.verification_recorded")
    if cls is None:
        return None
    ev = cls(round_id=uuid.uuid4(), period="2026-H1", nik=person["nik"], village_code=person["village_code"],
             result="verified" if verified else "ineligible", verified=verified, recorded_by="verifier1")
    return envelope(ev, "registry").model_dump_json().encode()


async def publish_enrolments(js, settings, persons, program, verified: bool | None = True, **kw) -> None:
    """Enrolment events in batches of up to MAX_ITEMS people, and verification results the way
    the registry reports them."""
    subj = settings.names.event("registry.enrolments_changed")
    vsubj = settings.names.event("registry.verification_recorded")
    for i in range(0, len(persons), MAX_ITEMS):
        batch = persons[i:i + MAX_ITEMS]
        futs = [js.publish(subj, enrolments_event(batch, program, verified=verified, **kw))]
        if verified is not None:
            futs += [js.publish(vsubj, v) for p in batch if (v := verification_event(p, verified)) is not None]
        await asyncio.gather(*futs)


KAMALIA = {
    "name": "Kamalia Merekah", "amount": {"kind": "poverty_line", "regency": "3317"},
    "require_verified": True, "min_age": 60, "funding_mode": "order",
    "funding": [{"source": "csr"}, {"source": "donation"}], "exclusivity_class": "cash_elderly", "channel": "pos",
}


async def run_cycle(http, settings, program: str, period: str, *, maker: str = "pm1", checker: str = "kadis"):
    """Maker-checker as the API wants it: `maker` prepares the cycle, `checker` (another program
    manager, e.g. the kepala dinas) approves it and the instructions leave. Returns the approval's
    response (the run's totals, as `POST /cycles/{program}/{period}` used to answer)."""
    r = await http.post(f"/cycles/{program}/{period}/prepare", headers=headers(settings, user=maker))
    if r.status_code != 200:
        return r
    pid = r.json()["preparation_id"]
    return await http.post(f"/cycles/preparations/{pid}/approve", headers=headers(settings, user=checker))


async def channel_items(js, settings, subject: str = "channel.*.instructions") -> tuple[int, list[str]]:
    """(messages, disbursement ids) on the CHANNEL stream's instruction subjects, read from the
    start: a message carries up to 500 disbursements (contracts.channel.DisburseRequest)."""
    import json

    import nats.errors
    sub = await js.pull_subscribe(settings.names.subject(subject), stream=settings.names.stream("CHANNEL"))
    msgs, ids = 0, []
    while True:
        try:
            got = await sub.fetch(100, timeout=1)
        except (nats.errors.TimeoutError, TimeoutError):  # nats-py raises either when nothing comes
            break
        msgs += len(got)
        ids += [d["disbursement_id"] for m in got for d in json.loads(m.data)["disbursements"]]
    await sub.unsubscribe()
    return msgs, ids
