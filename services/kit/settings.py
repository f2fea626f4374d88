"""Settings from the environment (prefix `SINERGI_`), the same for every service."""
from __future__ import annotations

from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from contracts.subjects import Names

SERVICES = ("intake", "registry", "disbursement", "reporting")
DEFAULT_PORTS = {"intake": 8001, "registry": 8002, "disbursement": 8003, "reporting": 8004}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SINERGI_", env_file=".env", extra="ignore")

    # one server, or a cluster's nodes comma-separated ("nats://n1:4222,nats://n2:4222,..."):
    # the client starts on any node that answers and moves to another when its node goes
    nats_url: str = "nats://127.0.0.1:4222"
    nats_user: str | None = None
    nats_password: str | None = None
    nats_creds: str | None = None  # path to a .creds file (nkeys/JWT), issue 6
    # A server URL; each service uses its own database on it: <db_prefix><service>.
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    db_prefix: str = "sinergi_"
    namespace: str = ""  # subject/stream prefix; tests set one per run
    http_host: str = "127.0.0.1"
    http_port_base: int = 8001  # intake, registry, disbursement, reporting follow in that order
    # each service's base URL as the browser reaches it, for links between the services' pages
    # (kit.web): JSON or "intake=https://...,registry=https://..."; unset: the browser's host
    # at each service's port (`sinergi up`)
    web_urls: str | None = None
    log_level: str = "info"
    log_format: Literal["json", "console"] = "json"
    stream_replicas: int = 1
    dedup_window_seconds: int = 600
    # signs staff tokens; `sinergi deploy init` writes a strong one to .env. The default is for
    # development only and the services refuse it when SINERGI_ENV=production.
    auth_secret: str = "dev-only-change-me-0123456789abcdef"
    env: Literal["development", "production"] = "development"
    users_file: str | None = None  # staff accounts (kit.users; `sinergi users add`)
    token_ttl_minutes: int = 480
    outbox_batch: int = 1000
    # the relay's fallback poll: every unit of work wakes it after its commit, so this only
    # picks up rows another process left (at 0.05 s, polling was most of an idle system's CPU)
    outbox_poll_seconds: float = 2.0
    # /readyz answers 503 when the oldest unsent outbox row is older than this (a relay that
    # cannot publish); a million-person cycle drains in about 30 s, so 120 s leaves room
    outbox_max_age_seconds: float = 120.0
    # seconds before a batch a consumer fetched but never acknowledged (its process was
    # killed) is delivered again; None: each consumer's own (60 s by default). Crash tests
    # shorten it so a killed copy's batch comes back to the surviving copy quickly.
    consumer_ack_wait: float | None = None
    # the lease that picks the one copy of a service running its singleton timers (kit.lease):
    # how often the holder proves it is alive and the others try to take over
    lease_check_seconds: float = 2.0
    # OpenTelemetry: an OTLP/HTTP collector's base URL (http://collector:4318); unset: no
    # tracing at all (the standard OTEL_EXPORTER_OTLP_ENDPOINT works too; kit.tracing)
    otel_endpoint: str | None = None
    # dead letters hold personal data (the rejected reports): DEADLETTER keeps them this long
    # (`sinergi migrate` applies a change; docs/SECURITY.md)
    deadletter_max_age_days: float = 30.0

    @property
    def nats_servers(self) -> list[str]:
        """`nats_url` as the list of servers the client may connect to."""
        return [u.strip() for u in self.nats_url.split(",") if u.strip()]

    @property
    def names(self) -> Names:
        return Names(self.namespace)

    def port(self, service: str) -> int:
        return self.http_port_base + SERVICES.index(service)

    def db_name(self, service: str) -> str:
        return f"{self.db_prefix}{service}"

    def db_url(self, service: str) -> str:
        url = make_url(self.database_url)
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+asyncpg")
        return url.set(database=self.db_name(service)).render_as_string(hide_password=False)
