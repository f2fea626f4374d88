"""Intake composition."""
from __future__ import annotations

from fastapi import FastAPI

from services.intake import store
from services.kit.runtime import ServiceRuntime
from services.kit.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    rt = ServiceRuntime("intake", settings or Settings(), store.metadata)
    return rt.http_app("Sinergi intake", "Puskesos front and back office, SLRT referral chain, home visits.")
