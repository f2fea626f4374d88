"""Registry composition: settings, broker, streams, database, HTTP."""
from __future__ import annotations

from fastapi import FastAPI

from services.kit.runtime import ServiceRuntime
from services.kit.settings import Settings
from services.registry import api, handlers, lookup, store, verivali
from services.registry.settings import RegistrySettings


def runtime(settings: Settings | None = None, registry_settings: RegistrySettings | None = None) -> ServiceRuntime:
    rt = ServiceRuntime("registry", settings or Settings(), store.metadata)
    rt.registry_settings = registry_settings or RegistrySettings()
    # None until detected at start-up: ingest then keeps the trigram table too (harmless), and a
    # lookup arriving before detection detects it itself (lookup.answer)
    mode = rt.registry_settings.name_search
    rt.name_search_trgm = None if mode == "auto" else mode == "pg_trgm"

    async def _detect_name_search() -> None:
        if rt.name_search_trgm is None:
            async with rt.sessions() as s:
                rt.name_search_trgm = await store.has_pg_trgm(s)
    # before the enrolment consumer starts (it is started by a later on_start hook)
    rt.on_start.insert(0, _detect_name_search)
    # batch events and receipt batches: a few large outbox rows per 1,000 reports (plus dead letters)
    rt.relay_batch = 200
    handlers.register(rt)
    lookup.register(rt)
    verivali.register(rt)
    return rt


def create_app(settings: Settings | None = None, registry_settings: RegistrySettings | None = None) -> FastAPI:
    rt = runtime(settings, registry_settings)
    app = rt.http_app("Sinergi registry", "The unified beneficiary registry (Basis Data Terpadu).")
    app.include_router(api.router(rt))
    app.include_router(verivali.router(rt))
    return app
