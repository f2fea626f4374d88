"""Reporting composition: the kit, reporting's settings and pseudonym key, consumers, HTTP."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI

from services.kit.runtime import Kit
from services.kit.settings import Settings
from services.reporting import api, handlers, store, web
from services.reporting.adapters import Pseudonyms, Signatures
from services.reporting.settings import ReportingSettings


@dataclass(frozen=True)
class Reporting:
    kit: Kit
    cfg: ReportingSettings
    pseudonyms: Pseudonyms  # keyed from the deployment's secret (adapters.py)
    signatures: Signatures | None = None  # the regency's key: disbursement events must verify


def compose(settings: Settings | None = None, cfg: ReportingSettings | None = None) -> Reporting:
    settings = settings or Settings()
    cfg = cfg or ReportingSettings()
    kit = Kit("reporting", settings, store.metadata)
    signatures = (Signatures(Path(cfg.disbursement_public_key_file).read_bytes(), kit.names.stream("DISBURSEMENT"))
                  if cfg.disbursement_public_key_file else None)
    deps = Reporting(kit=kit, cfg=cfg, pseudonyms=Pseudonyms(settings.auth_secret), signatures=signatures)
    handlers.register(deps)
    return deps


def create_app(settings: Settings | None = None, cfg: ReportingSettings | None = None) -> FastAPI:
    deps = compose(settings, cfg)
    app = deps.kit.http_app("Sinergi reporting", "Read models and reports for Bappeda, managers and auditors.")
    app.state.deps = deps
    app.include_router(api.router(deps))
    web.mount(app, deps)  # the public realisation page and the kit's login (issue 14)
    return app
