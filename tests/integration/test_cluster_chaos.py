"""Two copies of every service on a three-node JetStream cluster, under load, while NATS nodes
are stopped and brought back and service copies are killed with SIGKILL.

Load, all at once: agencies ingest enrolment reports (new people and status changes), two
payment cycles run (the second one runs into its ceiling), the payment channel settles every
instruction it receives (one in ten fails), Puskesos staff register complaints on either intake
copy. Chaos, over the same window: every NODE_EVERY seconds one NATS node is stopped and started
again NODE_DOWN seconds later, in turn: SIGTERM; SIGKILL; SIGKILL with its store deleted (a
replaced machine that must catch up from the other two; the node leading the audit stream).
One copy of each service is killed with SIGKILL at KILLS random moments and started again a
moment later, as a supervisor would. Each cycle is approved over HTTP on one copy and nobody
starts it again; the copy running the second one is killed mid-cycle, and the lease holder's
resumption timer must finish it.

Afterwards, with everything back: every report has exactly one receipt (one stored, and each
message_id answered on AGENCY_RECEIPTS with one and the same answer); every (program, period,
NIK) at most one instruction, and the channel was sent each instruction exactly once; the
ceilings held; the ledger balances (GET /ledger/proof); `sinergi audit verify` passes as the
auditor; reporting's read models equal a rebuild from the streams.

Sized for CI (about 3 minutes on 2 cores): 90 s of chaos with a node stopped every 30 s. The
long run, `scripts/bench chaos` (SINERGI_CHAOS_SECONDS=600 and more load), is the same test.
SINERGI_CHAOS_REPLICAS=1 runs it with replication switched off: it fails (docs/DEPLOY.md).
"""
from __future__ import annotations

import asyncio
import collections
import datetime as dt
import json
import os
import random
import subprocess
import sys
import time

import httpx
import nats
import nats.js.errors
import pytest
import sqlalchemy as sa

from services.kit import db as kdb
from services.kit.auth import Role
from services.kit.migrations import migrate
from services.kit.settings import SERVICES
from services.reporting.rebuild import rebuild
from tests import disbursement_support as ds
from tests import factories
from tests.cluster_support import Cluster, Copies
from tests.conftest import eventually
from tests.integration.intake_support import token
from tests.integration.test_reporting_rebuild import snapshot

pytestmark = pytest.mark.integration

SECONDS = float(os.environ.get("SINERGI_CHAOS_SECONDS", "90"))
NODE_EVERY = float(os.environ.get("SINERGI_CHAOS_NODE_EVERY", "30"))
NODE_DOWN = float(os.environ.get("SINERGI_CHAOS_NODE_DOWN", "10"))
PEOPLE = int(os.environ.get("SINERGI_CHAOS_PEOPLE", "1000"))     # in the cycles
REPORTS = int(os.environ.get("SINERGI_CHAOS_REPORTS", "3000"))   # ingested during the chaos
KILLS = int(os.environ.get("SINERGI_CHAOS_KILLS", "2"))          # SIGKILLs per service
REPLICAS = int(os.environ.get("SINERGI_CHAOS_REPLICAS", "3"))
SEED = os.environ.get("SINERGI_CHAOS_SEED") or str(random.randrange(1_000_000))
AMOUNT = 300_000
PERIODS = ("2026-11", "2026-12")
VILLAGE = "3317012001"

# what the copies run with: a killed copy's unacknowledged batch comes back after 10 s, a dead
# leader is replaced within a second, small cycle chunks so kills fall inside a cycle
ENV = {
    "*": {"SINERGI_CONSUMER_ACK_WAIT": "10", "SINERGI_LEASE_CHECK_SECONDS": "1", "SINERGI_OUTBOX_POLL_SECONDS": "0.05"},
    "registry": {"SINERGI_REGISTRY_BATCH_SIZE": "500"},
    "disbursement": {"SINERGI_DISBURSEMENT_CHUNK_SIZE": "50", "SINERGI_DISBURSEMENT_CHECKPOINT_EVERY": "50",
                     "SINERGI_DISBURSEMENT_CHECKPOINT_SECONDS": "5", "SINERGI_DISBURSEMENT_RESUME_SECONDS": "3"},
    "intake": {"SINERGI_INTAKE_ESCALATION_INTERVAL_SECONDS": "5"},
}


def log(what: str, t0: float) -> None:
    print(f"[{time.monotonic() - t0:6.1f} s] {what}", flush=True)


# -- the parties ----------------------------------------------------------------------------------

def reports(seed: int) -> tuple[list[dict], list[dict]]:
    """PEOPLE people for pkh (known before the chaos), and REPORTS more during it: new people
    for bpnt and, every tenth, a later status change of a pkh person."""
    rng = random.Random(seed)
    first = [factories.enrolment("pkh", sex=rng.choice("FM"), message_id=f"pkh-{i}",
                                 birth=dt.date(1940, 1, 1) + dt.timedelta(days=i)) for i in range(PEOPLE)]
    later = []
    for i in range(REPORTS):
        if i % 10 == 9:
            r = dict(rng.choice(first), message_id=f"change-{i}", enrolment_status=rng.choice(["suspended", "exited"]),
                     status_change_date="2026-12-01")
        else:
            r = factories.enrolment("bpnt", sex=rng.choice("FM"), message_id=f"bpnt-{i}",
                                    birth=dt.date(1940, 1, 1) + dt.timedelta(days=PEOPLE + i))
        later.append(r)
    return first, later


async def publish(nc, batch: list[dict], deadline: float) -> None:
    """As an agency does: publish, and publish again what got no acknowledgement (a node or a
    leader away); the Nats-Msg-Id makes a repeat harmless."""
    js = nc.jetstream()
    todo = batch
    while todo:
        acks = await asyncio.gather(*(js.publish(f"agency.{r['programme_identifier']}.enrolments",
                                                 json.dumps(r).encode(), headers={"Nats-Msg-Id": factories.msg_id(r)},
                                                 timeout=3) for r in todo), return_exceptions=True)
        todo = [r for r, a in zip(todo, acks, strict=True) if isinstance(a, BaseException)]
        if todo:
            assert time.monotonic() < deadline, f"{len(todo)} reports never accepted: {acks[0]!r}"
            await asyncio.sleep(0.5)


async def agency_feed(agencies: dict, later: list[dict], until: float) -> None:
    """The reports spread over the window, 50 at a time (on schedule: no pause when behind)."""
    start = time.monotonic()
    step = max(0.05, (until - start) / (len(later) / 50 + 1))
    for k, i in enumerate(range(0, len(later), 50)):
        await asyncio.sleep(max(0.0, start + k * step - time.monotonic()))
        part = later[i:i + 50]
        for program in {r["programme_identifier"] for r in part}:
            await publish(agencies[program], [r for r in part if r["programme_identifier"] == program],
                          time.monotonic() + 120)


def settlement(ins: dict) -> dict:
    """The post office's answer for one instruction: paid, or (one in ten) refused."""
    iid = ins.get("disbursement_id") or ins["instruction_id"]
    failed = int(iid[-1], 16) % 10 == 0
    now = dt.datetime.now(dt.UTC).isoformat()
    if "disbursement_id" in ins:  # contracts.channel.DisburseResult
        return {"disbursement_id": iid, "status": "rjct" if failed else "succ", "timestamp": now,
                "status_reason_code": "rjct.account.closed" if failed else None, "channel_reference": f"POS-{iid[:8]}"}
    return {"settlement_id": f"pos-{iid}", "instruction_id": iid, "status": "failed" if failed else "paid",
            "reason": "rekening tidak aktif" if failed else None, "channel_reference": f"POS-{iid[:8]}",
            "settled_at": now}


async def channel(nc, stop: asyncio.Event, seen: collections.Counter) -> None:
    """The post office: reads its instructions, pays each (one in ten fails) and says so. A
    message is a batch (contracts.channel.DisburseRequest, answered with one OnDisburse) or,
    before the G2P Connect shape, one instruction (answered with one Settlement)."""
    js = nc.jetstream()
    sub = None
    while not stop.is_set():
        try:
            if sub is None:
                sub = await js.pull_subscribe("channel.pos.instructions", durable="instructions-pos", stream="CHANNEL")
            msgs = await sub.fetch(50, timeout=1)
        except (nats.errors.TimeoutError, TimeoutError):
            continue
        except Exception:  # the node we talk to went away: nats-py reconnects
            await asyncio.sleep(0.5)
            continue
        for m in msgs:
            doc = json.loads(m.data)
            items = doc.get("disbursements", [doc])
            seen.update(i.get("disbursement_id") or i["instruction_id"] for i in items)
            if "disbursements" in doc:
                sid = f"pos-{doc['transaction_id']}"
                answers = [(f"pos:{sid}", {"settlement_id": sid, "results": [settlement(i) for i in items]})]
            else:
                answers = [(a["settlement_id"], a) for a in map(settlement, items)]
            for msg_id, body in answers:
                while True:
                    try:
                        await js.publish("channel.pos.settlements", json.dumps(body).encode(),
                                         headers={"Nats-Msg-Id": msg_id}, timeout=3)
                        break
                    except Exception:
                        await asyncio.sleep(0.5)
            await m.ack()


async def front_office(copies: list, headers: dict, until: float, registered: list[str]) -> None:
    """Complaints at the village office, on either intake copy, one a second."""
    async with httpx.AsyncClient(timeout=10) as http:
        i = 0
        while time.monotonic() < until:
            c = copies[i % len(copies)]
            i += 1
            body = {"reporter": {"nik": factories.nik(VILLAGE, dt.date(1958, 3, 4), "F")}, "village_code": VILLAGE,
                    "category": "not_receiving_aid", "channel": "walk_in", "kind": "complaint",
                    "text": "Sudah tiga bulan tidak menerima bantuan"}
            try:
                r = await http.post(f"{c.url}/cases", json=body, headers=headers)
                if r.status_code == 201:
                    registered.append(r.json()["case_id"])
            except httpx.HTTPError:
                pass  # that copy was just killed: the citizen asks at the next desk
            await asyncio.sleep(1)


async def start_cycle(maker, checker, period: str, base, t0: float, sent: asyncio.Event | None = None) -> None:
    """One program manager prepares the cycle on one copy, another approves it on the other
    (maker-checker: the approval issues the instructions); nobody starts it again. If the copy
    died before the approval was recorded, the checker approves again on the other copy, as she
    would; once recorded, finishing the cycle is the service's business."""
    async with httpx.AsyncClient(timeout=600) as http:
        r = await http.post(f"{maker.url}/cycles/pkh/{period}/prepare", headers=ds.headers(base, user="pm1"))
        if r.status_code == 404 and r.json().get("error") == "Not Found":  # before maker-checker: one call
            prepared = None
        else:
            assert r.status_code == 200, r.text
            prepared = r.json()["preparation_id"]
        log(f"cycle {period} prepared ({prepared}), run on {checker.url}", t0)
        if sent is not None:
            sent.set()
        try:
            if prepared is None:
                r = await http.post(f"{checker.url}/cycles/pkh/{period}", headers=ds.headers(base))
            else:
                r = await http.post(f"{checker.url}/cycles/preparations/{prepared}/approve",
                                    headers=ds.headers(base, user="kadis"))
        except httpx.HTTPError as exc:
            log(f"cycle {period}: {type(exc).__name__} from {checker.url} (killed?)", t0)
            if prepared is not None:
                await approve_again(http, maker, prepared, period, base, t0)
            return
    what = f"created {r.json()['created']}" if r.status_code == 200 else r.text[:300]
    log(f"cycle {period} answered {r.status_code} on {checker.url}: {what}", t0)


async def approve_again(http: httpx.AsyncClient, other, prepared: str, period: str, base, t0: float) -> None:
    """The approval's answer was lost with its copy: look, and approve again if it was not recorded."""
    reader = ds.headers(base, Role.auditor)
    for _ in range(60):
        try:
            status = (await http.get(f"{other.url}/cycles/preparations/{prepared}", headers=reader)).json()["status"]
            if status != "prepared":
                log(f"cycle {period}: the approval was recorded ({status}); the service finishes it", t0)
                return
            r = await http.post(f"{other.url}/cycles/preparations/{prepared}/approve",
                                headers=ds.headers(base, user="kadis"))
            log(f"cycle {period}: not approved yet, approved again on {other.url}: {r.status_code}", t0)
            return
        except httpx.HTTPError:
            await asyncio.sleep(1)  # that copy is being restarted too


# -- the chaos ------------------------------------------------------------------------------------

async def node_chaos(cluster: Cluster, ops, until: float, t0: float, stopped: list[int]) -> None:
    k = 0
    while time.monotonic() + NODE_DOWN < until:
        await asyncio.sleep(min(5.0, NODE_EVERY / 6) if k == 0 else NODE_EVERY - NODE_DOWN)
        kill, wipe = k % 3 != 0, k % 3 == 2  # stopped, killed, killed with its disk lost, ...
        n = k % 3 + 1
        if wipe:  # the worst disk to lose: the one under the audit stream's leader
            n = await cluster.leader_of(ops, "DISBURSEMENT")
        await asyncio.to_thread(cluster.stop, n, kill=kill)
        if wipe:
            cluster.wipe(n)
        stopped.append(n)
        log(f"nats-{n} {'killed' if kill else 'stopped'}{' and its disk lost' if wipe else ''}", t0)
        await asyncio.sleep(NODE_DOWN)
        await asyncio.to_thread(cluster.start, n)
        log(f"nats-{n} back", t0)
        k += 1


async def service_chaos(copies: Copies, rng: random.Random, until: float, t0: float, kills: list[str]) -> None:
    plan = sorted((rng.uniform(3, until - time.monotonic() - 10), svc) for svc in SERVICES for _ in range(KILLS))
    start = time.monotonic()
    for at, svc in plan:
        await asyncio.sleep(max(0.0, start + at - time.monotonic()))
        alive = [c for c in copies.copies[svc] if c.alive()]
        if not alive:
            continue
        victim = rng.choice(alive)
        victim.kill()
        kills.append(f"{svc}:{victim.port}")
        log(f"kill -9 {svc} on {victim.port}", t0)
        await asyncio.sleep(rng.uniform(0.5, 2.0))
        victim.start()


# -- the checks -----------------------------------------------------------------------------------

async def count(url: str, sql: str) -> int:
    engine = kdb.make_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(sa.text(sql))).scalar() or 0)
    finally:
        await engine.dispose()


async def consumers_idle(ops) -> list[str]:
    """Every durable consumer with messages waiting or unacknowledged."""
    js = ops.jetstream()
    busy = []
    for stream in ("AGENCY_ENROLMENTS", "REGISTRY", "INTAKE", "DISBURSEMENT", "CHANNEL"):
        busy += [f"{stream}/{i.name}: {i.num_pending} pending, {i.num_ack_pending} unacked"
                 for i in await js.consumers_info(stream) if i.num_pending or i.num_ack_pending]
    return busy


async def all_receipts(cluster: Cluster, program: str) -> list[dict]:
    """What an agency reads on its own consumer (a new consumer, with three replicas, may
    answer 503 until its leader is elected: asked again)."""
    nc = await cluster.connect(f"agency-{program}")
    out = []
    unavailable = 0
    try:
        sub = await nc.jetstream().pull_subscribe(f"agency.{program}.receipts", durable=f"receipts-{program}",
                                                  stream="AGENCY_RECEIPTS")
        while True:
            try:
                msgs = await sub.fetch(500, timeout=2)
            except (nats.errors.TimeoutError, TimeoutError):
                break
            except nats.js.errors.ServiceUnavailableError:
                unavailable += 1
                assert unavailable < 50, "the receipts consumer stayed unavailable"
                await asyncio.sleep(0.2)
                continue
            for m in msgs:
                out += json.loads(m.data)["receipts"]
                await m.ack()
    finally:
        await nc.close()
    return out


async def audit_verify(cluster: Cluster) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SINERGI_NATS_URL": cluster.url, "SINERGI_NATS_USER": "auditor-inspektorat",
           "SINERGI_NATS_PASSWORD": cluster.passwords["auditor-inspektorat"], "SINERGI_NAMESPACE": ""}
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "services.cli", "audit", "verify", "--json"],
                                   env=env, capture_output=True, text=True, timeout=120)


class ReadModels:
    """What tests/integration/test_reporting_rebuild.py's `snapshot` reads: reporting's sessions."""

    def __init__(self, url: str) -> None:
        self.engine = kdb.make_engine(url, pool_size=1)
        self.rt = self
        self.sessions = kdb.sessions(self.engine)


# -- the test -------------------------------------------------------------------------------------

@pytest.mark.timeout(int(SECONDS) + 400)  # start-up, the load before and after, the checks
@pytest.mark.parametrize("cluster_replicas", [REPLICAS])
async def test_two_copies_of_everything_survive_node_loss_and_kill9_under_load(cluster, tmp_path):
    t0 = time.monotonic()
    rng = random.Random(SEED)
    log(f"seed {SEED}, {SECONDS:.0f} s of chaos, {PEOPLE} people in the cycles, {REPORTS} reports, "
        f"{cluster.replicas} replicas", t0)
    base = cluster.base
    for svc in SERVICES:
        await migrate(svc, base.db_url(svc))
    copies = Copies(cluster, tmp_path / "logs", extra_env=ENV)
    copies.start()
    stop = asyncio.Event()
    ops = await cluster.connect("ops")
    agencies = {p: await cluster.connect(f"agency-{p}") for p in ("pkh", "bpnt")}
    pos = await cluster.connect("channel-pos")
    seen: collections.Counter[str] = collections.Counter()
    payer = asyncio.create_task(channel(pos, stop, seen))
    try:
        await copies.ready()
        log("two copies of each service ready", t0)
        first, later = reports(int(SEED))
        await publish(agencies["pkh"], first, time.monotonic() + 60)
        dis = base.db_url("disbursement")

        async def known() -> bool:
            return await count(dis, "select count(*) from enrolments") >= PEOPLE
        await eventually(known, timeout=120, interval=0.5)
        log(f"{PEOPLE} pkh people known to disbursement", t0)
        pm = ds.headers(base)
        d0, d1 = copies.copies["disbursement"]
        async with httpx.AsyncClient(timeout=30) as http:
            rules = {**ds.KAMALIA, "name": "PKH", "min_age": None, "require_verified": False,
                     "exclusivity_class": None, "amount": {"kind": "fixed", "amount": AMOUNT},
                     "funding": [{"source": "apbn"}]}
            r = await http.put(f"{d0.url}/programs/pkh", json=rules, headers=pm)
            assert r.status_code == 200, r.text
            # one and a half cycles' worth: the second cycle must stop at the ceiling
            r = await http.put(f"{d1.url}/allocations/apbn/pkh/2026", json={"ceiling": PEOPLE * AMOUNT * 3 // 2,
                                                                            "reason": "APBN 2026"}, headers=pm)
            assert r.status_code == 200, r.text

        # -- under load, with chaos --
        until = time.monotonic() + SECONDS
        stopped: list[int] = []
        kills: list[str] = []
        registered: list[str] = []
        front = token(base, Role.village_office, VILLAGE, "fo-ani")
        work = [asyncio.create_task(agency_feed(agencies, later, until - 15)),
                asyncio.create_task(start_cycle(d1, d0, PERIODS[0], base, t0)),
                asyncio.create_task(front_office(copies.copies["intake"], front, until, registered)),
                asyncio.create_task(node_chaos(cluster, ops, until, t0, stopped)),
                asyncio.create_task(service_chaos(copies, rng, until, t0, kills))]
        await asyncio.sleep(SECONDS * 0.4)
        # the second cycle's copy is killed while it runs the cycle: nobody asks again, the
        # lease holder's resumption must finish it
        sent = asyncio.Event()
        second = asyncio.create_task(start_cycle(d0, d1, PERIODS[1], base, t0, sent))
        await asyncio.wait_for(sent.wait(), 60)
        await asyncio.sleep(rng.uniform(0.3, 1.0))
        if not second.done():
            d1.kill()
            kills.append(f"disbursement:{d1.port} (running cycle {PERIODS[1]})")
            log(f"kill -9 disbursement on {d1.port}, running cycle {PERIODS[1]}", t0)
            await asyncio.sleep(1)
            d1.start()
        await asyncio.gather(second, *work[:1], *work[2:])
        exits = {c.service: c.exits for cs in copies.copies.values() for c in cs if c.exits}
        log(f"chaos over: nodes stopped {stopped}, kills {kills}, {len(registered)} cases registered; "
            f"copies that exited on their own and were restarted: {exits or 'none'}", t0)

        # -- everything back; wait until all is done --
        for n in (1, 2, 3):
            if not cluster.running(n):
                cluster.start(n)
        for cs in copies.copies.values():
            for c in cs:
                if not c.alive():
                    c.start()
        await copies.ready()
        await cluster.wait_current(ops, ["AGENCY_ENROLMENTS", "AGENCY_RECEIPTS", "REGISTRY", "INTAKE",
                                         "DISBURSEMENT", "CHANNEL"])
        log("all nodes current, all copies ready", t0)
        await settled(base, ops, len(first) + len(later), t0)
        await work[1]
        async with httpx.AsyncClient(timeout=60) as http:
            proof = (await http.get(f"{d1.url}/ledger/proof", headers=ds.headers(base, Role.auditor))).json()
        audit = await audit_verify(cluster)
    finally:
        stop.set()
        await asyncio.wait({payer}, timeout=10)
        copies.stop()
        for nc in (ops, pos, *agencies.values()):
            await nc.close()

    # every report answered exactly once
    reg = base.db_url("registry")
    assert await count(reg, "select count(*) from receipts") == len(first) + len(later)
    answers: dict[str, set[str]] = collections.defaultdict(set)
    for program in ("pkh", "bpnt"):
        for r in await all_receipts(cluster, program):
            answers[f"{program}:{r['message_id']}"].add(json.dumps(r, sort_keys=True))
    assert set(answers) == {factories.msg_id(r) for r in first + later}
    assert all(len(v) == 1 for v in answers.values()), [k for k, v in answers.items() if len(v) > 1][:5]

    # at most one instruction per (program, period, NIK); the channel got each exactly once
    assert await count(dis, "select count(*) from (select 1 from instructions group by programme_identifier, "
                            "period, nik having count(*) > 1) d") == 0
    issued = await count(dis, "select count(*) from instructions")
    assert len(seen) == issued and set(seen.values()) == {1}, (len(seen), issued, seen.most_common(3))
    assert await count(dis, "select count(*) from instructions where status = 'issued'") == 0  # all settled
    assert await count(dis, "select count(*) from cycles where status = 'completed'") == 2
    # the ceiling held, and was reached: the second cycle could not pay everyone
    assert await count(dis, "select count(*) from allocations where reserved > ceiling") == 0
    assert issued < 2 * PEOPLE and await count(dis, "select max(reserved) from allocations") > PEOPLE * AMOUNT

    # the books balance; the audit stream verifies
    assert proof["balanced"], proof
    assert audit.returncode == 0, audit.stdout[-3000:] + audit.stderr[-3000:]
    assert json.loads(audit.stdout)["ok"]

    # reporting saw every case, and equals a rebuild from the streams
    models = ReadModels(base.db_url("reporting"))
    try:
        live = await snapshot(models)
        assert sum(len(rows) for rows in live.values()) > 0
        await rebuild(cluster.settings("svc-reporting"))
        assert await snapshot(models) == live
    finally:
        await models.engine.dispose()
    print(f"seed {SEED}: nodes stopped {stopped}; killed {kills}; {issued} instructions; "
          f"{len(registered)} cases; {time.monotonic() - t0:.0f} s in all")


async def settled(base, ops, n_reports: int, t0: float) -> None:
    """Every report answered, both cycles completed and paid, every outbox empty, every consumer
    caught up."""
    reg, dis = base.db_url("registry"), base.db_url("disbursement")

    async def done() -> str | bool:
        answered = await count(reg, "select count(*) from receipts")
        cycles = await count(dis, "select count(*) from cycles where status = 'completed'")
        unsettled = await count(dis, "select count(*) from instructions where status = 'issued'")
        outboxes = sum([await count(base.db_url(s), "select count(*) from outbox where published_at is null")
                        for s in SERVICES])
        # an event turned into a dead letter is lost to its readers: no waiting can mend that
        aside = {s: n for s in SERVICES if (n := await count(base.db_url(s), "select count(*) from outbox "
                                                                             "where failed_at is not null"))}
        assert not aside, f"outbox rows set aside (replaced by dead letters): {aside}"
        busy = await consumers_idle(ops)
        if (answered, cycles, unsettled, outboxes, busy) == (n_reports, 2, 0, 0, []):
            return True
        what = f"{answered}/{n_reports} answered, {cycles}/2 cycles, {unsettled} unsettled, {outboxes} unsent, {busy}"
        if int(time.monotonic() - t0) % 10 == 0:
            log(what, t0)
        return False
    await eventually(done, timeout=240, interval=1)
    log("settled", t0)

