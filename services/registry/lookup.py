"""Front-office lookups: by NIK, by No. KK, by name within a village. One implementation for
HTTP (GET /people) and for `registry.lookup` (core NATS request-reply, contracts/lookup.py)."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nats.aio.client import Client
from nats.aio.msg import Msg
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.lookup import LookupReply, LookupRequest, PersonSummary
from contracts.values import kk_problems, nik_problems, village_problems
from services.kit import logging as klog
from services.kit.decode import Limits, Rejection, decode_model
from services.registry import names, store

if TYPE_CHECKING:
    from services.registry.app import Registry

log = klog.get(__name__)
QUEUE = "registry-lookup"
# a request is a few short fields (about 150 bytes); anything near this is not a lookup
REQUEST_LIMITS = Limits(max_bytes=8 * 1024, max_depth=4)
# lookups answered at once per process: each holds a database connection (the pool has 10 + 10)
CONCURRENT = 8


@dataclass
class NameSearch:
    """Which tolerant name search the database allows: pg_trgm (`trgm` True) or the registry's
    own trigram table (False). None until detected at start-up: ingest then keeps the trigram
    table too (harmless), and a name lookup arriving before detection detects it itself."""

    trgm: bool | None = None

    @classmethod
    def configured(cls, mode: str) -> NameSearch:
        return cls(None if mode == "auto" else mode == "pg_trgm")

    async def detect(self, session: AsyncSession) -> bool:
        if self.trgm is None:
            self.trgm = await store.has_pg_trgm(session)
        return self.trgm


def problems(req: LookupRequest) -> list[str]:
    """What is wrong with a request, in plain words (empty: it can be answered)."""
    out = []
    if req.nik:
        out += [p.message for p in nik_problems(req.nik)]
    if req.no_kk:
        out += [p.message for p in kk_problems(req.no_kk)]
    if req.name is not None:
        if not req.village_code:
            out.append("a name search needs village_code")
        else:
            out += [p.message for p in village_problems(req.village_code)]
        if not names.normalise(req.name):
            out.append("name has no letters to search for")
    return out


async def answer(reg: Registry, req: LookupRequest, area: str = "") -> LookupReply:
    """Answer a checked request; people outside `area` (a region prefix) are left out."""
    bad = problems(req)
    if bad:
        return LookupReply(found=False, error="; ".join(bad))
    scores: dict[str, float] = {}
    async with reg.kit.sessions() as s:
        if req.nik:
            rows = await store.people_by_nik(s, req.nik)
            if req.no_kk:
                rows = [r for r in rows if r.no_kk == req.no_kk]
        elif req.no_kk:
            rows = await store.people_by_kk(s, req.no_kk, req.limit)
        else:
            assert req.name is not None and req.village_code is not None  # problems() checked
            rows, scores = await store.search_names(
                s, req.village_code.replace(".", ""), names.normalise(req.name), req.limit,
                reg.cfg.name_match_threshold, await reg.name_search.detect(s))
        rows = [r for r in rows if r.village_code.startswith(area)]
        people = await store.summaries(s, rows, scores)
    return LookupReply(found=bool(people), people=[PersonSummary.model_validate(p) for p in people])


def parse(data: bytes) -> LookupRequest:
    """The request, or `Rejection` saying what is wrong (whatever the bytes are)."""
    return decode_model(data, LookupRequest, REQUEST_LIMITS, code="rjct.lookup.invalid")


async def reply_to(reg: Registry, data: bytes) -> LookupReply:
    """The reply to one request's bytes: an answer, or why there is none. Never raises."""
    try:
        return await answer(reg, parse(data))
    except Rejection as rej:
        return LookupReply(found=False, error=rej.reason)
    except Exception as exc:  # the database is away: say so now rather than let the caller time out
        log.error("registry.lookup_failed", error=f"{type(exc).__name__}: {exc}"[:300])
        return LookupReply(found=False, error="the registry could not answer; try again")


def register(reg: Registry) -> None:
    """`registry.lookup` as a core subscription (no stream, no durable: a question, answered on
    its reply subject). A queue group shares the questions among registry processes; the
    subscription is made again on every new connection (kit.bus replaces a broken one)."""
    gate = asyncio.Semaphore(CONCURRENT)
    running: set[asyncio.Task[None]] = set()

    async def respond(msg: Msg) -> None:
        async with gate:
            with reg.kit.tracing.serve("answer registry.lookup", msg):  # the asker's trace (kit.tracing)
                reply = await reply_to(reg, msg.data)
        try:
            await msg.respond(reply.model_dump_json().encode())
        except Exception as exc:  # the connection went away meanwhile: the caller retries
            log.warning("registry.lookup_reply_failed", error=str(exc)[:200])

    async def on_request(msg: Msg) -> None:
        if not msg.reply:
            return  # published, not asked: nobody waits for an answer
        # a task per request: nats-py runs one subscription's callbacks one after another, and
        # a name search must not hold up the NIK lookups queued behind it
        task = asyncio.create_task(respond(msg))
        running.add(task)
        task.add_done_callback(running.discard)

    async def subscribe(nc: Client) -> None:
        await nc.subscribe(reg.kit.names.lookup(), queue=QUEUE, cb=on_request)

    async def finish() -> None:
        # on stop, before the connection drains and the engine goes: answer what was asked
        if running:
            await asyncio.wait(set(running), timeout=5)

    reg.kit.bus.on_connect(subscribe)
    reg.kit.on_stop(finish)
