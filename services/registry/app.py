"""Registry composition: the kit, the registry's settings, its consumers, lookups and HTTP."""
from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI

from services.kit import audit as staff_audit
from services.kit.runtime import Kit
from services.kit.settings import Settings
from services.registry import (api, dukcapil, handlers, life, lookup, programs, programs_api, proposals, store,
                               verivali, web)
from services.registry.lookup import NameSearch
from services.registry.settings import RegistrySettings

# the relay's round: ingest writes a few large rows per 1,000 reports (batch events, receipt
# batches of up to 1,000), so 200 rows a round is already some 200,000 answers
RELAY_BATCH = 200


@dataclass(frozen=True)
class Registry:
    """What the registry's consumers, lookups and routes share."""

    kit: Kit
    cfg: RegistrySettings
    name_search: NameSearch


def compose(settings: Settings | None = None, cfg: RegistrySettings | None = None) -> Registry:
    cfg = cfg or RegistrySettings()
    kit = Kit("registry", settings or Settings(), store.metadata, relay_batch=RELAY_BATCH)
    reg = Registry(kit, cfg, NameSearch.configured(cfg.name_search))

    async def detect_name_search() -> None:
        async with kit.sessions() as s:
            await reg.name_search.detect(s)
    # on_start hooks run before the consumers start: ingest knows which name index to keep
    kit.on_start(detect_name_search)
    handlers.register(reg)
    lookup.register(reg)
    verivali.register(reg)
    dukcapil.register(reg)  # the civil registry's death notifications (issue 17)
    life.register(reg)  # announces a stop that a race left unannounced (services/registry/life.py)
    proposals.register(reg)  # an agency's enrolment report closes a proposal forwarded to it

    async def expire_verifications() -> None:
        await programs.expire_verifications(kit)
    # one copy scans (the lease holder); each expiry is announced once whoever scans
    kit.timer("verification-expiry", cfg.verification_expiry_seconds, expire_verifications, singleton=True)
    return reg


def create_app(settings: Settings | None = None, registry_settings: RegistrySettings | None = None) -> FastAPI:
    deps = compose(settings, registry_settings)
    app = deps.kit.http_app("Sinergi registry", "The unified beneficiary registry (Basis Data Terpadu).")
    app.state.deps = deps
    # WORKAROUND (kit): kit.auth still reads `app.state.runtime.settings` while Kit.http_app
    # sets only `app.state.kit`; without this every authenticated route fails with 500.
    # Remove once kit.auth reads app.state.kit.
    if not hasattr(app.state, "runtime"):
        app.state.runtime = deps.kit
    app.include_router(api.router(deps))
    app.include_router(verivali.router(deps))
    web.mount(app, deps)  # the verifier's pages under /ui/ (issue 14)
    app.include_router(programs_api.router(deps))
    staff_audit.install(app, store.audit_log)  # every staff write leaves a row (kit.audit)
    return app
