"""A province on one three-node JetStream cluster: how much do 35 regencies' streams cost it?

    .venv/bin/python bench/province.py [--regencies 35] [--idle 30] [-n 5000]

Starts the loopback cluster of bench/cluster.py (deploy init's cluster configuration,
`sync_interval: always`), then:

1. one regency: its seven streams and the ten durable consumers its services and parties keep,
   all with three replicas; a pipelined publish of N messages (300 B, like an enrolment event)
   into its REGISTRY stream, timed until the last acknowledgement;
2. the other regencies' streams and consumers added (each regency under its own prefix, as
   one account per regency would hold them: the same Raft groups either way);
3. the servers idle for `--idle` seconds, with one regency (after step 1) and with all: CPU
   (the three nats-server processes together, in % of one core) and resident memory;
4. the same publish again, into the first regency, with every regency present.

The ratio (4) / (1) says what sharing the cluster costs one regency's writes.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nats.js.api import AckPolicy, ConsumerConfig  # noqa: E402

from services.kit.settings import Settings  # noqa: E402
from services.kit.streams import ensure_streams  # noqa: E402

import cluster as bench_cluster  # noqa: E402  (bench/cluster.py, beside this file)

# the durables one regency keeps: the services' eight, an agency's receipts, a channel's instructions
CONSUMERS = [("AGENCY_ENROLMENTS", "registry-enrolments-v1", "agency.*.enrolments"),
             ("INTAKE", "registry-proposals-v1", "intake.events.proposal_submitted"),
             ("REGISTRY", "intake-registry-v2", "registry.events.>"),
             ("REGISTRY", "disbursement-registry-v1", "registry.events.>"),
             ("CHANNEL", "disbursement-settlements-v1", "channel.*.settlements"),
             ("REGISTRY", "reporting-registry-v1", "registry.events.>"),
             ("INTAKE", "reporting-intake-v1", "intake.events.>"),
             ("DISBURSEMENT", "reporting-disbursement-v1", "disbursement.>"),
             ("AGENCY_RECEIPTS", "receipts-pkh", "agency.pkh.receipts"),
             ("CHANNEL", "instructions-pos", "channel.pos.instructions")]


async def add_regency(js, settings: Settings, code: str) -> Settings:
    s = settings.model_copy(update={"namespace": f"r{code}"})
    await ensure_streams(js, s, update=False)
    names = s.names
    for stream, durable, subject in CONSUMERS:
        await js.add_consumer(names.stream(stream), ConsumerConfig(
            durable_name=durable, ack_policy=AckPolicy.EXPLICIT, filter_subject=names.subject(subject)))
    return s


async def publish(js, settings: Settings, n: int) -> float:
    subject = settings.names.event("registry.enrolments_changed")
    payload = b"x" * 300
    t = time.perf_counter()
    for i in range(0, n, 1000):
        futs = [await js.publish_async(subject, payload, headers={"Nats-Msg-Id": f"p{time.time_ns()}-{j}"})
                for j in range(i, min(n, i + 1000))]
        await asyncio.gather(*futs)
    return n / (time.perf_counter() - t)


def cpu_seconds(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return total


async def idle_cpu(pids: list[int], seconds: float) -> float:
    """% of one core the servers use together while nothing is sent (after elections settle)."""
    await asyncio.sleep(5)
    c0 = cpu_seconds(pids)
    await asyncio.sleep(seconds)
    return (cpu_seconds(pids) - c0) / seconds * 100


def rss_mb(pids: list[int]) -> float:
    kb = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                kb += int(line.split()[1])
    return kb / 1024


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--regencies", type=int, default=35)
    ap.add_argument("--idle", type=float, default=30.0, help="seconds of idle measurement")
    ap.add_argument("-n", type=int, default=5000, help="messages in each publish measurement")
    args = ap.parse_args()
    run = uuid.uuid4().hex[:8]  # databases are not used here; a prefix of its own all the same
    async with bench_cluster.cluster(Settings(db_prefix=f"sinergi_prov{run}_", _env_file=None)) as c:
        own = c.settings("bench")
        nc = await bench_cluster.connect(own, "bench")
        js = nc.jetstream(timeout=30)
        pids = [p.pid for p in c.procs.values()]
        print(f"three nodes, 3 replicas, sync always; {args.regencies} regencies x 7 streams + "
              f"{len(CONSUMERS)} consumers; load average {os.getloadavg()[0]:.1f}", flush=True)
        first = await add_regency(js, own, "0000")
        alone = await publish(js, first, args.n)
        print(f"one regency: publish {args.n:,} x 300 B pipelined: {alone:,.0f} msg/s", flush=True)
        idle1 = await idle_cpu(pids, args.idle)
        print(f"idle with one regency: {idle1:.1f} % of one core, {rss_mb(pids):,.0f} MB resident", flush=True)
        t = time.perf_counter()
        for r in range(1, args.regencies):
            await add_regency(js, own, f"{r:04d}")
        made = time.perf_counter() - t
        groups = args.regencies * (7 + len(CONSUMERS))
        print(f"{args.regencies - 1} more regencies' streams and consumers created in {made:.1f} s "
              f"({groups:,} Raft groups of three in all)", flush=True)
        idle = await idle_cpu(pids, args.idle)
        print(f"idle with {args.regencies}: the three nats-servers use {idle:.1f} % of one core together, "
              f"{rss_mb(pids):,.0f} MB resident", flush=True)
        shared = await publish(js, first, args.n)
        print(f"one regency among {args.regencies}: the same publish: {shared:,.0f} msg/s "
              f"(ratio {shared / alone:.2f} of alone)", flush=True)
        await nc.close()


if __name__ == "__main__":
    asyncio.run(main())
