"""Registry composition: settings, broker, streams, database, HTTP."""
from __future__ import annotations

from fastapi import FastAPI

from services.kit.runtime import ServiceRuntime
from services.kit.settings import Settings
from services.registry import api, handlers, store


def create_app(settings: Settings | None = None) -> FastAPI:
    rt = ServiceRuntime("registry", settings or Settings(), store.metadata)
    handlers.register(rt)
    app = rt.http_app("Sinergi registry", "The unified beneficiary registry (Basis Data Terpadu).")
    app.include_router(api.router(rt))
    return app
