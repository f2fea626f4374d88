"""Reporting composition: the kit, reporting's settings and pseudonym key, consumers, HTTP."""
from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI

from services.kit.runtime import Kit
from services.kit.settings import Settings
from services.reporting import api, handlers, store
from services.reporting.adapters import Pseudonyms
from services.reporting.settings import ReportingSettings


@dataclass(frozen=True)
class Reporting:
    kit: Kit
    cfg: ReportingSettings
    pseudonyms: Pseudonyms  # keyed from the deployment's secret (adapters.py)


def compose(settings: Settings | None = None, cfg: ReportingSettings | None = None) -> Reporting:
    settings = settings or Settings()
    deps = Reporting(kit=Kit("reporting", settings, store.metadata), cfg=cfg or ReportingSettings(),
                     pseudonyms=Pseudonyms(settings.auth_secret))
    handlers.register(deps)
    return deps


def create_app(settings: Settings | None = None, cfg: ReportingSettings | None = None) -> FastAPI:
    deps = compose(settings, cfg)
    app = deps.kit.http_app("Sinergi reporting", "Read models and reports for Bappeda, managers and auditors.")
    app.state.deps = deps
    app.include_router(api.router(deps))
    return app
