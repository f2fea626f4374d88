"""Front-office lookups: by NIK, by No. KK, by name within a village. One implementation for
HTTP (GET /people) and for `registry.lookup` (core NATS request-reply, contracts/lookup.py)."""
from __future__ import annotations

import json
from typing import Any

from faststream import Context
from pydantic import ValidationError

from contracts.lookup import LookupReply, LookupRequest, PersonSummary
from contracts.values import kk_problems, nik_problems, village_problems
from services.kit import logging as klog
from services.kit.runtime import ServiceRuntime
from services.registry import names, store

log = klog.get(__name__)


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


async def answer(rt: ServiceRuntime, req: LookupRequest, area: str = "") -> LookupReply:
    """Answer a checked request; people outside `area` (a region prefix) are left out."""
    bad = problems(req)
    if bad:
        return LookupReply(found=False, error="; ".join(bad))
    scores: dict[str, float] = {}
    async with rt.sessions() as s:
        if req.nik:
            rows = await store.people_by_nik(s, req.nik)
            if req.no_kk:
                rows = [r for r in rows if r.no_kk == req.no_kk]
        elif req.no_kk:
            rows = await store.people_by_kk(s, req.no_kk, req.limit)
        else:
            if rt.name_search_trgm is None:
                rt.name_search_trgm = await store.has_pg_trgm(s)
            rows, scores = await store.search_names(
                s, req.village_code.replace(".", ""), names.normalise(req.name), req.limit,
                rt.registry_settings.name_match_threshold, rt.name_search_trgm)
        rows = [r for r in rows if r.village_code.startswith(area)]
        people = await store.summaries(s, rows, scores)
    return LookupReply(found=bool(people), people=[PersonSummary.model_validate(p) for p in people])


def parse(data: bytes) -> tuple[LookupRequest | None, str | None]:
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None, "the request is not valid JSON"
    try:
        return LookupRequest.model_validate(raw), None
    except ValidationError as exc:
        return None, "; ".join(f"{'.'.join(map(str, e['loc'])) or 'request'}: {e['msg']}" for e in exc.errors())


def register(rt: ServiceRuntime) -> None:
    # core subscription (no stream, no durable): a question, answered on the reply subject;
    # a queue group lets several registry processes share the questions
    @rt.broker.subscriber(rt.names.lookup(), queue="registry-lookup")
    async def on_lookup(body: Any, msg: Any = Context("message")) -> LookupReply:
        req, error = parse(msg.raw_message.data)
        if req is None:
            return LookupReply(found=False, error=error)
        try:
            return await answer(rt, req)
        except Exception as exc:  # never leave the caller waiting for a timeout
            log.error("registry.lookup_failed", error=str(exc)[:300])
            return LookupReply(found=False, error="the registry could not answer; try again")
