"""Helpers for the registry's integration tests: staff tokens, publishing reports, waiting for receipts."""
from __future__ import annotations

import json

import nats.errors
import sqlalchemy as sa

from services.kit.auth import Principal, Role, issue_token
from tests import factories
from tests.conftest import eventually


def auth(settings, role: Role = Role.verifier, area: str = "", user: str = "dinsos-1") -> dict:
    return {"Authorization": f"Bearer {issue_token(Principal(user, role, area), settings.auth_secret)}"}


async def send(nc, settings, reports: list[dict], program: str | None = None) -> dict[str, dict]:
    """Publish reports (each with Nats-Msg-Id `<program>:<message_id>`) and wait for every receipt."""
    got: dict[str, dict] = {}

    async def cb(m):
        for r in factories.receipts_of(m.data):
            got[r["message_id"]] = r
    sub = await nc.subscribe(settings.names.receipts("*"), cb=cb)
    js = nc.jetstream()
    for rep in reports:
        subject_program = program or rep["programme_identifier"]
        await js.publish(settings.names.enrolments(subject_program), json.dumps(rep).encode(),
                         headers={"Nats-Msg-Id": factories.msg_id(rep, subject_program)})
    await eventually(lambda: all(r["message_id"] in got for r in reports), timeout=15)
    await sub.unsubscribe()
    return got


async def drain(js, subject: str, stream: str, wait: float = 0.5) -> list[dict]:
    """Every message body on `subject` in `stream` from the start, until none comes for `wait` s."""
    sub = await js.pull_subscribe(subject, stream=stream)
    out: list[dict] = []
    while True:
        try:
            out += [json.loads(m.data) for m in await sub.fetch(1000, timeout=wait)]
        except (nats.errors.TimeoutError, TimeoutError):  # nats-py raises either when nothing comes
            break
    await sub.unsubscribe()
    return out


async def events(nc, settings, event_type: str, expect: int, timeout: float = 10, items: str | None = None
                 ) -> list[dict]:
    """The envelopes of one registry event type on the REGISTRY stream, waiting for at least `expect`;
    with `items` (a batch event's list field, e.g. "changes"), the items of every envelope instead."""
    js = nc.jetstream()
    sub = await js.pull_subscribe(settings.names.event(event_type), stream=settings.names.stream("REGISTRY"))
    out: list[dict] = []

    async def fetch():
        try:
            for m in await sub.fetch(100, timeout=0.3):
                env = json.loads(m.data)
                out.extend(env["data"][items] if items else [env])
        except (nats.errors.TimeoutError, TimeoutError):  # nats-py raises either when nothing comes
            pass
        return len(out) >= expect
    await eventually(fetch, timeout=timeout)
    await sub.unsubscribe()
    return out


async def count(svc, table: sa.Table, *where) -> int:
    async with svc.rt.sessions() as s:
        return (await s.execute(sa.select(sa.func.count()).select_from(table).where(*where))).scalar()
