"""Reporting composition."""
from __future__ import annotations

from fastapi import FastAPI

from services.kit.runtime import ServiceRuntime
from services.kit.settings import Settings
from services.reporting import api, handlers, store


def create_app(settings: Settings | None = None) -> FastAPI:
    rt = ServiceRuntime("reporting", settings or Settings(), store.metadata)
    handlers.register(rt)
    app = rt.http_app("Sinergi reporting", "Read models and reports for Bappeda, managers and auditors.")
    app.include_router(api.router(rt))
    return app
