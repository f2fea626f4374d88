"""Issue 11 item 3, on the registry as it runs: NATS paused 10 s (SIGSTOP, then SIGCONT) while
/readyz is polled. Before the event core, nats-py's reading task died (InvalidStateError in
`_process_pong`, from a readiness flush with a timeout) and 0 of 20 new reports were answered
while /readyz said 200 for minutes. Now /readyz says 503 during the stall and 200 after it, and
100 new reports are all answered."""
from __future__ import annotations

import asyncio
import os
import signal
import tempfile
from pathlib import Path

import nats
import pytest

from services.kit.embedded import EmbeddedNats
from services.kit.streams import ensure_streams
from tests import factories
from tests.conftest import eventually
from tests.integration.registry_support import send

pytestmark = pytest.mark.integration


async def test_registry_answers_every_report_after_a_nats_stall(settings, start):
    server = EmbeddedNats(Path(tempfile.mkdtemp(prefix="sinergi-stall-"))).start()
    try:
        own = settings.model_copy(update={"nats_url": server.url})
        nc = await nats.connect(server.url)
        await ensure_streams(nc.jetstream(), own)
        async with start("registry", own) as svc:
            await send(nc, own, [factories.enrolment("pkh") for _ in range(5)])
            assert (await svc.http.get("/readyz")).status_code == 200

            os.kill(server.pid, signal.SIGSTOP)
            statuses = []
            try:
                for _ in range(5):  # polled during the stall, as a load balancer would
                    statuses.append((await svc.http.get("/readyz")).status_code)
                    await asyncio.sleep(2)
            finally:
                os.kill(server.pid, signal.SIGCONT)
            assert 503 in statuses, statuses

            async def ready():
                return (await svc.http.get("/readyz")).status_code == 200
            await eventually(ready, timeout=60, interval=0.5)
            reports = [factories.enrolment("pkh") for _ in range(100)]
            got = await send(nc, own, reports)
            assert {r["message_id"] for r in reports} <= set(got)
            assert all(got[r["message_id"]]["status"] == "succ" for r in reports)
        await nc.close()
    finally:
        server.stop()
