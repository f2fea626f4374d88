"""A service stops even when a driver turns the cancellation of a background loop into an
ordinary error (seen as a 300 s hang at shutdown in CI: the loop caught the error and went on)."""
from __future__ import annotations

import asyncio

from contracts.subjects import Names
from services.kit.outbox import OutboxRelay


async def _driver_swallowing_cancel() -> int:
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        raise RuntimeError("connection was closed in the middle of operation") from None
    return 0


async def test_relay_stops_when_the_driver_swallows_its_cancellation():
    relay = OutboxRelay(None, None, None, Names(), "kit")  # type: ignore[arg-type]
    relay.drain_once = _driver_swallowing_cancel  # type: ignore[method-assign]
    relay.start()
    await asyncio.sleep(0.05)
    await asyncio.wait_for(relay.stop(), 5)
    assert relay._task is not None and relay._task.done()
