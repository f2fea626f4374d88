"""Reporting settings (environment prefix `SINERGI_REPORTING_`)."""
from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ReportingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SINERGI_REPORTING_", env_file=".env", extra="ignore")

    # events per pull and transaction on INTAKE and DISBURSEMENT. A batch costs a fixed few
    # statements (store.apply folds it first), so bigger is faster until the statements'
    # per-row work dominates. 20,000 settlements (bench/reporting_drain.py, 2 shared cores):
    # batches of 2,000 5,600-6,100 events/s, 5,000 7,500-10,300, 10,000 5,800-11,800 (no
    # better, and twice the transaction)
    batch: int = Field(default=5000, ge=1, le=10_000, description="events per pull and transaction")
    # a registry event carries up to 500 enrolment changes (contracts.registry.MAX_ITEMS)
    registry_batch: int = Field(default=20, ge=1, le=1_000, description="registry events per pull and transaction")
    # short: a longer wait left nats-py's fetch sitting out the timeout on a partial batch
    # (20,000 settlements: 1.3 s of 3.4 s outside the handler at 0.5 s, 0.3 s of 2.5 s at 0.05 s)
    fetch_wait: float = Field(default=0.02, gt=0, le=5, description="seconds a partial batch waits for more")
    # the regency's public key (PEM, `sinergi audit public-key`): with it, a disbursement event
    # whose Sinergi-Signature does not verify is dead-lettered (rjct.signature.invalid) and
    # counts in no figure, so an event forged onto disbursement.> cannot change a report
    disbursement_public_key_file: str | None = None
