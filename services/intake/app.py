"""Intake composition: one Kit, intake's settings, the registry follower, the escalation timer,
the JSON API and the web pages."""
from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI

from services.intake import api, handlers, store, web
from services.intake.config import IntakeSettings
from services.kit.runtime import Kit
from services.kit.settings import Settings


@dataclass(frozen=True)
class Intake:
    """What intake's modules are given (they import it only for type checking: app is the top layer)."""

    kit: Kit
    cfg: IntakeSettings


def compose(settings: Settings | None = None, cfg: IntakeSettings | None = None) -> Intake:
    deps = Intake(kit=Kit("intake", settings or Settings(), store.metadata), cfg=cfg or IntakeSettings())
    handlers.register(deps)
    return deps


def create_app(settings: Settings | None = None, intake: IntakeSettings | None = None) -> FastAPI:
    deps = compose(settings, intake)
    app = deps.kit.http_app("Sinergi intake", "Puskesos front and back office, SLRT referral chain, home visits.")
    app.state.deps = deps
    api.install_errors(app)
    app.include_router(api.router(deps))
    web.mount(app, deps)
    return app
