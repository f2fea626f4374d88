"""Disbursement composition: settings, subscribers, checkpoint timer, cycle resumption, HTTP."""
from __future__ import annotations

import asyncio

from fastapi import FastAPI

from services.disbursement import api, api_kube, cycles, handlers, ledger, store
from services.disbursement.config import DisbursementSettings
from services.kit import logging as klog
from services.kit.runtime import ServiceRuntime
from services.kit.settings import Settings

log = klog.get(__name__)


def create_app(settings: Settings | None = None, cfg: DisbursementSettings | None = None) -> FastAPI:
    settings = settings or Settings()
    cfg = cfg or DisbursementSettings()
    if settings.env == "production":
        cfg.check_production()
    rt = ServiceRuntime("disbursement", settings, store.metadata)
    handlers.register(rt, cfg)
    rt.relay_batch = cfg.relay_batch  # a million-person cycle is a million outbox rows

    async def checkpoints() -> None:
        """Sign the chain head every `checkpoint_seconds` if events were added since the last one."""
        while True:
            await asyncio.sleep(cfg.checkpoint_seconds)
            try:
                async with rt.sessions.begin() as s:
                    chain = await ledger.Chain.lock(s, rt.names, cfg)
                    if chain.seq > chain.checkpoint_seq:
                        chain.checkpoint()
                        await chain.save(s)
                rt.kick()
            except Exception as exc:  # database away: try at the next tick
                log.warning("disbursement.checkpoint_failed", error=str(exc)[:300])

    async def resume() -> None:
        """Cycles a crash left running are finished (idempotently) as soon as we are back."""
        async with rt.sessions() as s:
            todo = await cycles.unfinished(s)
        for program, period in todo:
            try:
                await cycles.run(rt.sessions, rt.names, cfg, program, period, "resume", rt.kick)
            except Exception as exc:
                log.warning("disbursement.resume_failed", program=program, period=period, error=str(exc)[:300])

    rt.background(checkpoints, "chain-checkpoints")
    if cfg.resume_cycles:
        rt.background(resume, "resume-cycles")
    app = rt.http_app("Sinergi disbursement", "Budgets, payment cycles, settlements, KUBE funds, the ledger.")
    app.state.disbursement = cfg
    app.include_router(api.router(rt, cfg))
    app.include_router(api_kube.router(rt, cfg))
    return app
