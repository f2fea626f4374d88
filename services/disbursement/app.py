"""Disbursement composition."""
from __future__ import annotations

from fastapi import FastAPI

from services.disbursement import store
from services.kit.runtime import ServiceRuntime
from services.kit.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    rt = ServiceRuntime("disbursement", settings or Settings(), store.metadata)
    return rt.http_app("Sinergi disbursement", "Budgets, payment cycles, settlements, KUBE funds, the ledger.")
