"""Registry settings (environment prefix `SINERGI_REGISTRY_`)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RegistrySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SINERGI_REGISTRY_", env_file=".env", extra="ignore")

    # The seeds describe verivali twice a year; since 2021 the rules ask for monthly updates
    # (DTKS, now DTSEN). A round's period is named after the cadence: 2026-H2 or 2026-11.
    verification_cadence: Literal["semiannual", "monthly"] = "monthly"
    # auto: pg_trgm if the database has it, else the registry's own trigram table
    name_search: Literal["auto", "pg_trgm", "trigram_table"] = "auto"
    name_match_threshold: float = Field(default=0.3, ge=0.0, le=1.0)
    # 2,000 measured best on 2 cores (ingest 3,670 / 4,483 / 4,097 events/s at 1,000 / 2,000 / 5,000)
    batch_size: int = Field(default=2000, ge=1, le=10000, description="enrolment reports per pull and transaction")
    # short on purpose: nats-py's fetch often returns a partial batch and then sits out the
    # whole timeout even with thousands waiting; 0.2 s here capped ingest at ~1,000/s (measured)
    batch_timeout: float = Field(default=0.02, gt=0, description="seconds a partial batch waits")
    # how long a batch held by a process that died waits before JetStream hands it to another
    # (set when the durable consumer is first created); longer than the slowest batch
    ack_wait: float = Field(default=60.0, ge=5.0, description="seconds before an unacknowledged batch is redelivered")
    # how often the lease holder looks for verifications past their program's validity (issue 17);
    # validity is counted in months, so an hour late is nothing, and a scan is one query
    verification_expiry_seconds: float = Field(default=3600.0, gt=0, description="seconds between expiry scans")
