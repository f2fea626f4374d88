"""Disbursement composition: the kit, its consumers, the checkpoint timer, cycle resumption, HTTP."""
from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from services.disbursement import api, api_channels, api_kube, cycles, handlers, ledger, store
from services.disbursement.config import DisbursementSettings
from services.disbursement.domain import Refused
from services.kit.http import error_json
from services.kit import audit as staff_audit
from services.kit.runtime import Kit
from services.kit.settings import Settings

SERVICE = "disbursement"


@dataclass(frozen=True)
class Disbursement:
    """What every disbursement module is given."""

    kit: Kit
    cfg: DisbursementSettings


def compose(settings: Settings | None = None, cfg: DisbursementSettings | None = None) -> Disbursement:
    settings = settings or Settings()
    cfg = cfg or DisbursementSettings()
    if settings.env == "production":
        cfg.check_production()
    # a million-person cycle is a million outbox rows: the relay takes them 10,000 at a time
    deps = Disbursement(Kit(SERVICE, settings, store.metadata, relay_batch=cfg.relay_batch), cfg)
    handlers.register(deps)

    async def checkpoint() -> None:
        await ledger.checkpoint_if_due(deps)

    async def resume() -> None:
        await cycles.resume(deps)

    # with several copies running, one of them (the lease holder, kit.lease) signs checkpoints
    # and finishes cycles whose copy died mid-way: at once when it takes the lease, then every
    # resume_seconds; a cycle another copy is still running is left to it (cycles.run)
    deps.kit.timer("chain-checkpoints", cfg.checkpoint_seconds, checkpoint, singleton=True)
    if cfg.resume_cycles:
        deps.kit.timer("resume-cycles", cfg.resume_seconds, resume, singleton=True)
    return deps


async def _refused(_req: Request, exc: Exception) -> JSONResponse:
    status = exc.status if isinstance(exc, Refused) else 409
    return error_json(status, str(exc))  # kit.http.ErrorBody, as every error answer


def create_app(settings: Settings | None = None, cfg: DisbursementSettings | None = None) -> FastAPI:
    deps = compose(settings, cfg)
    app = deps.kit.http_app("Sinergi disbursement", "Budgets, payment cycles, settlements, KUBE funds, the ledger.")
    app.state.deps = deps
    # the rules' refusals (a ceiling below what is reserved, an unknown program, a member who
    # may not borrow) answer with their status and reason, from every route
    app.add_exception_handler(Refused, _refused)
    app.include_router(api.router(deps))
    app.include_router(api_kube.router(deps))
    app.include_router(api_channels.router(deps))
    staff_audit.install(app, store.audit_log)  # every staff write leaves a row (kit.audit)
    return app
