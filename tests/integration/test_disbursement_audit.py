"""The audit stream on a real JetStream: no NIK on it, the chain and signed checkpoints verify,
totals recompute, and `sinergi audit verify` says where a tampered copy fails."""
from __future__ import annotations

import asyncio
import datetime as dt
import os
import sys
import hashlib
import json

import pytest

from services.disbursement import audit
from services.disbursement.config import DisbursementSettings, public_pem
from tests import disbursement_support as ds
from tests.conftest import eventually
from tests.integration.test_disbursement_cycle import PERIOD, _setup

pytestmark = pytest.mark.integration


async def test_audit_stream_verifies_and_carries_no_nik(settings, nc, start, tmp_path):
    js = nc.jetstream()
    persons = ds.people(12, seed=11)
    async with start("disbursement", settings) as svc:
        await _setup(svc, settings, js, persons)
        r = await ds.run_cycle(svc.http, settings, "kamalia_merekah", PERIOD)
        assert r.json()["created"] == 12
        sub = await js.pull_subscribe(settings.names.subject("channel.pos.instructions"),
                                      stream=settings.names.stream("CHANNEL"))
        got = [d for m in await sub.fetch(1, timeout=5) for d in json.loads(m.data)["disbursements"]]
        now = dt.datetime.now(dt.UTC).isoformat()
        for i, d in enumerate(got[:3]):
            iid = d["disbursement_id"]
            st = {"settlement_id": f"s{i}", "instruction_id": iid, "status": "failed" if i == 0 else "paid",
                  "reason": "no such account" if i == 0 else None, "settled_at": now}
            await js.publish(settings.names.subject("channel.pos.settlements"), json.dumps(st).encode(),
                             headers={"Nats-Msg-Id": f"s{i}"})
        stream = settings.names.stream("DISBURSEMENT")

        async def all_published():
            info = await js.stream_info(stream)
            # program rules, poverty line, 2 allocations, prepared, approved, 2 per chunk, cycle
            # completed, 3 settlements + 1 release
            return info.state.messages >= 1 + 1 + 2 + 2 + 2 + 1 + 3 + 1
        await eventually(all_published)
        # force a signed checkpoint now (what the timer does every checkpoint_seconds)
        from services.disbursement import ledger
        cfg: DisbursementSettings = svc.deps.cfg
        await ledger.checkpoint_if_due(svc.deps)
        async def checkpointed():
            msgs = await audit.read_stream(js, stream, settings.names.subject("disbursement.>"), idle=0.5)
            # the checkpoint, and the three settlements (the count above can be reached first
            # when a cycle writes fewer chunk events, e.g. one chunk of 10,000)
            settled = sum(b'"disbursement.settlement_recorded"' in m.data for m in msgs)
            return msgs if settled >= 3 and any(b"chain_checkpoint" in m.data for m in msgs) else None
        msgs = await eventually(checkpointed)

    # no NIK, KK or village on the audit stream; the pseudonym is there
    blob = b"".join(m.data for m in msgs)
    for p in persons:
        assert p["nik"].encode() not in blob and p["no_kk"].encode() not in blob
    assert cfg.pseudonym(persons[0]["nik"]).encode() in blob

    pub = cfg.signing_key.public_key()
    rep = audit.verify(msgs, stream, pub)
    assert rep.ok, rep.failures
    assert rep.checkpoints >= 1 and rep.totals["instructions"] == 12  # the timer may sign one too
    alloc = {a["source"]: a for a in rep.totals["allocations"]}
    assert alloc["csr"]["ceiling"] == 6_000_000 and alloc["csr"]["reserved"] == 6_000_000
    assert sum(a["released"] for a in alloc.values()) == 600_000
    assert sum(a["paid"] for a in alloc.values()) == 2 * 600_000

    # tampering: change an amount in one event, drop one, swap two, forge a checkpoint key
    changed = list(msgs)
    s3, d3, h3 = changed[3]
    changed[3] = audit.StreamMessage(s3, d3.replace(b'"ceiling":', b'"ceiling":9', 1) if b'"ceiling":' in d3 else d3 + b" ", h3)
    rep = audit.verify(changed, stream, pub)
    assert not rep.ok and any("chain position 5" in f and "was changed" in f for f in rep.failures), rep.failures
    rep = audit.verify(msgs[:2] + msgs[3:], stream, pub)
    assert any("chain position 3: missing" in f for f in rep.failures), rep.failures
    rep = audit.verify([msgs[1], msgs[0]] + msgs[2:], stream, pub)
    assert rep.ok and any("after a later chain position" in n for n in rep.notes)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    rep = audit.verify(msgs, stream, Ed25519PrivateKey.generate().public_key())
    assert any("not the regency key" in f for f in rep.failures)
    # a saved checkpoint exposes a rewritten history even if the rewrite re-chains everything
    head = {"head_seq": rep.head_seq, "head_hash": rep.head_hash}
    rechained, prev = [], "0" * 64
    for sseq, d, _headers in msgs:
        env = json.loads(d)
        env["data"]["prev_hash"] = prev
        if env["event_type"] == "disbursement.allocation_set":
            env["data"]["ceiling"] += 1
        b = json.dumps(env).encode()
        prev = hashlib.sha256(b).hexdigest()
        rechained.append((sseq, b))
    rep = audit.verify(rechained, stream, None, head)
    assert any("saved checkpoint" in f for f in rep.failures)

    # the command line, against the real stream, with the public key file
    key = tmp_path / "regency.pub"
    key.write_bytes(public_pem(cfg.signing_key))
    env = {**os.environ, "SINERGI_NATS_URL": settings.nats_url, "SINERGI_NAMESPACE": settings.namespace}

    async def sinergi(*args):
        p = await asyncio.create_subprocess_exec(sys.executable, "-m", "services.cli", *args, env=env,
                                                 stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        o, e = await p.communicate()
        return p.returncode, o.decode(), e.decode()
    code, o, e = await sinergi("audit", "verify", "--public-key", str(key), "--json",
                               "--save-checkpoint", str(tmp_path / "cp.json"))
    assert code == 0, (o, e)
    assert json.loads(o)["ok"] is True
    assert json.loads((tmp_path / "cp.json").read_text())["head_seq"] >= 10
    bad = tmp_path / "cp-bad.json"
    bad.write_text(json.dumps({"head_seq": 2, "head_hash": "ab" * 32}))
    code, o, e = await sinergi("audit", "verify", "--checkpoint", str(bad))
    assert code == 1 and "FAIL saved checkpoint at position 2" in o, (o, e)
