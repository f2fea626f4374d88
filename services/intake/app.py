"""Intake composition: registry follower, escalation timer, JSON API and web pages."""
from __future__ import annotations

from fastapi import FastAPI

from services.intake import api, handlers, store, web
from services.intake.config import IntakeSettings
from services.kit.runtime import ServiceRuntime
from services.kit.settings import Settings


def create_app(settings: Settings | None = None, intake: IntakeSettings | None = None) -> FastAPI:
    rt = ServiceRuntime("intake", settings or Settings(), store.metadata)
    cfg = intake or IntakeSettings()
    handlers.register(rt, cfg)
    app = rt.http_app("Sinergi intake", "Puskesos front and back office, SLRT referral chain, home visits.")
    app.state.intake = cfg
    api.install_errors(app)
    app.include_router(api.router(rt, cfg))
    web.mount(app, rt, cfg)
    return app
