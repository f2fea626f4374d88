"""The three-node JetStream cluster (tests/cluster_support.py: `sinergi deploy init`'s cluster
configuration on loopback) keeps every acknowledged message when the node leading a stream is
killed and comes back without its disk, and keeps taking writes meanwhile - with three
replicas. With one replica (replication switched off) the same loss loses the stream's
messages: that variant must fail, and does (strict xfail)."""
from __future__ import annotations

import asyncio
import json
import time

import nats
import pytest

from tests import factories

pytestmark = pytest.mark.integration
N = 300


async def _publish(js, start: int, n: int, deadline: float) -> int:
    """Publish reports start..start+n as the agency does, retrying each until `deadline`
    (a leader election makes a publish time out or find no responder for a moment)."""
    done = 0
    for i in range(start, start + n):
        r = factories.enrolment("pkh", message_id=f"loss-{i}")
        while True:
            try:
                await js.publish("agency.pkh.enrolments", json.dumps(r).encode(),
                                 headers={"Nats-Msg-Id": factories.msg_id(r)}, timeout=2)
                done += 1
                break
            except (nats.errors.Error, TimeoutError):
                if time.monotonic() > deadline:
                    return done
                await asyncio.sleep(0.2)
    return done


@pytest.mark.parametrize("cluster_replicas", [
    3,
    pytest.param(1, marks=pytest.mark.xfail(strict=True, raises=AssertionError,
                                            reason="one replica: the node's disk was the only copy")),
])
async def test_losing_the_leading_node_and_its_disk_loses_nothing(cluster, cluster_replicas):
    ops = await cluster.connect("ops")
    agency = await cluster.connect("agency-pkh")
    try:
        stream = "AGENCY_ENROLMENTS"
        assert await _publish(agency.jetstream(), 0, N, time.monotonic() + 30) == N
        assert (await ops.jetstream().stream_info(stream)).state.messages == N
        victim = await cluster.leader_of(ops, stream)
        cluster.stop(victim, kill=True)
        cluster.wipe(victim)
        # writes go on while it is away (three replicas: the other two elect a leader)
        during = await _publish(agency.jetstream(), N, 50, time.monotonic() + 15)
        cluster.start(victim)
        await cluster.wait_ready()
        if cluster_replicas > 1:
            await cluster.wait_current(ops, [stream])
        else:
            await asyncio.sleep(3)  # let the restarted node load what it has
        kept = (await ops.jetstream().stream_info(stream)).state.messages
        assert (during, kept) == (50, N + 50), (
            f"node {victim} lost with its disk: {during} of 50 writes accepted while it was down, "
            f"{kept} of {N + 50} messages kept")
    finally:
        await agency.close()
        await ops.close()


@pytest.mark.parametrize("cluster_replicas", [1])
async def test_a_regency_grows_from_one_replica_to_three_in_place(cluster):
    """docs/DEPLOY.md section 7: `sinergi migrate` with SINERGI_STREAM_REPLICAS=3 raises the
    existing streams to three replicas; afterwards losing the leading node's disk loses nothing."""
    from services.kit.streams import ensure_streams

    ops = await cluster.connect("ops")
    agency = await cluster.connect("agency-pkh")
    try:
        stream = "AGENCY_ENROLMENTS"
        assert await _publish(agency.jetstream(), 0, N, time.monotonic() + 30) == N
        grown = cluster.settings().model_copy(update={"stream_replicas": 3})
        await ensure_streams(ops.jetstream(), grown, update=True)
        cluster.replicas = 3
        await cluster.wait_current(ops, [stream])
        victim = await cluster.leader_of(ops, stream)
        cluster.stop(victim, kill=True)
        cluster.wipe(victim)
        assert await _publish(agency.jetstream(), N, 50, time.monotonic() + 15) == 50
        cluster.start(victim)
        await cluster.wait_ready()
        await cluster.wait_current(ops, [stream])
        assert (await ops.jetstream().stream_info(stream)).state.messages == N + 50
    finally:
        await agency.close()
        await ops.close()
