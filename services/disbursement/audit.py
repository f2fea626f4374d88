"""What an auditor runs (`sinergi audit verify`): read `disbursement.>` with read-only
credentials, check every event's signature, the hash chain and the signed checkpoints,
recompute totals per source and program, list the rule changes with their actor and reason,
and say plainly where a check fails. Needs nothing from the regency but its public key.
"""
from __future__ import annotations

import base64
import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from nats.js.api import DeliverPolicy

from contracts.disbursement import GENESIS_HASH
from services.disbursement.config import SIGNATURE_HEADER, checkpoint_message, event_message, key_id

# what an auditor is shown as "who changed the rules, when and why"
RULE_CHANGES = ("disbursement.allocation_set", "disbursement.program_rules_set", "disbursement.poverty_line_set",
                "disbursement.cycle_prepared", "disbursement.cycle_approved", "disbursement.cycle_rejected")


class StreamMessage(NamedTuple):
    seq: int                                 # stream sequence
    data: bytes                              # the exact published bytes (what the chain hashes)
    headers: dict[str, str] | None = None    # carries the event's signature


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Report:
    events: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS_HASH
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checkpoints: int = 0
    signed: int = 0
    totals: dict = field(default_factory=dict)
    changes: list[dict] = field(default_factory=list)  # rule, ceiling and approval events, in chain order

    @property
    def ok(self) -> bool:
        return not self.failures

    def fail(self, where: str, what: str) -> None:
        self.failures.append(f"{where}: {what}")


def verify(messages: Iterable[StreamMessage | tuple[int, bytes]], stream: str,
           public_key: Ed25519PublicKey | None = None, known_checkpoint: dict | None = None) -> Report:
    """`messages` are (stream sequence, exact bytes, headers) of everything on `disbursement.>`.
    With the regency's public key every event must carry a valid signature; without it only
    the chain and totals are checked (a note says so)."""
    rep = Report()
    by_seq: dict[int, tuple[int, bytes, dict]] = {}
    last_chain = 0
    out_of_order = 0
    for m in messages:
        sseq, data, headers = StreamMessage(*m)
        if public_key is not None:
            _signed(rep, sseq, data, headers, stream, public_key)  # a failure; the chain is still checked
        try:
            env = json.loads(data)
            d = env["data"]
            cseq = int(d["chain_seq"])
            d["prev_hash"]
        except (ValueError, KeyError, TypeError):
            rep.fail(f"stream message {sseq}", "is not a chained disbursement event (unreadable or no chain_seq)")
            continue
        if cseq in by_seq:
            if by_seq[cseq][1] != data:
                rep.fail(f"chain position {cseq}", f"two different events claim it (stream messages "
                                                   f"{by_seq[cseq][0]} and {sseq}): the history was rewritten")
            else:
                rep.notes.append(f"chain position {cseq} published twice (stream {by_seq[cseq][0]} and {sseq}); "
                                 "identical, counted once")
            continue
        if cseq < last_chain:
            out_of_order += 1
        last_chain = max(last_chain, cseq)
        by_seq[cseq] = (sseq, data, env)
    if public_key is None:
        rep.notes.append("event signatures not checked: give the regency's public key (--public-key)")
    if out_of_order:
        rep.notes.append(f"{out_of_order} events arrived on the stream after a later chain position "
                         "(a publish retry); the chain order is what counts")
    prev = GENESIS_HASH
    hashes: dict[int, str] = {}
    expected = 1
    for cseq in sorted(by_seq):
        sseq, data, env = by_seq[cseq]
        where = f"chain position {cseq} (stream message {sseq}, {env.get('event_type')})"
        if cseq != expected:
            rep.fail(f"chain position {expected}", f"missing: positions {expected}..{cseq - 1} are not on the "
                                                   "stream (removed or never published)")
            prev = env["data"]["prev_hash"]  # continue checking from here
        if env["data"]["prev_hash"] != prev:
            rep.fail(where, f"prev_hash {env['data']['prev_hash'][:16]}... does not match the hash of position "
                            f"{cseq - 1} ({prev[:16]}...): an earlier event was changed")
        prev = hashlib.sha256(data).hexdigest()
        hashes[cseq] = prev
        expected = cseq + 1
        rep.events += 1
        if env.get("event_type") == "disbursement.chain_checkpoint":
            _check_checkpoint(rep, where, env["data"], hashes, stream, public_key)
        if env.get("event_type") in RULE_CHANGES:
            rep.changes.append({"chain_seq": cseq, "event_type": env["event_type"], "occurred_at":
                                env.get("occurred_at"), **{k: v for k, v in env["data"].items()
                                                           if k not in ("chain_seq", "prev_hash")}})
    rep.head_seq, rep.head_hash = (max(hashes), hashes[max(hashes)]) if hashes else (0, GENESIS_HASH)
    if known_checkpoint:
        s, h = int(known_checkpoint["head_seq"]), known_checkpoint["head_hash"]
        if hashes.get(s) != h:
            rep.fail(f"saved checkpoint at position {s}", f"the stream now has hash {str(hashes.get(s))[:16]}... "
                                                          f"where the saved checkpoint says {h[:16]}...: rewritten")
    rep.totals = _totals(rep, [by_seq[k][2] for k in sorted(by_seq)])
    return rep


def _signed(rep: Report, sseq: int, data: bytes, headers: dict[str, str] | None, stream: str,
            pub: Ed25519PublicKey) -> bool:
    """The event's `Sinergi-Signature` verifies with the regency's key. A forged or altered event
    fails here, at its own position."""
    try:
        cseq = json.loads(data)["data"]["chain_seq"]
    except (ValueError, KeyError, TypeError):
        cseq = "?"
    where = f"chain position {cseq} (stream message {sseq})"
    value = (headers or {}).get(SIGNATURE_HEADER)
    if not value:
        rep.fail(where, "no signature: not an event the regency signed (forged or altered)")
        return False
    alg, _, rest = value.partition(":")
    kid, _, sig = rest.partition(":")
    if alg != "ed25519" or kid != key_id(pub):
        rep.fail(where, f"signature by key {kid or '?'}, not the regency key {key_id(pub)}: forged")
        return False
    try:
        pub.verify(base64.b64decode(sig), event_message(stream, data))
    except (InvalidSignature, ValueError):
        rep.fail(where, "signature does not verify with the regency's public key: forged or altered")
        return False
    rep.signed += 1
    return True


def _check_checkpoint(rep: Report, where: str, d: dict, hashes: dict, stream: str,
                      pub: Ed25519PublicKey | None) -> None:
    rep.checkpoints += 1
    seq, head = int(d["head_seq"]), d["head_hash"]
    if hashes.get(seq) != head:
        rep.fail(where, f"checkpoint says position {seq} has hash {head[:16]}... but the chain gives "
                        f"{str(hashes.get(seq))[:16]}...")
    if pub is None:
        return
    if d["key_id"] != key_id(pub):
        rep.fail(where, f"checkpoint signed with key {d['key_id']}, not the regency key {key_id(pub)}")
        return
    try:
        pub.verify(base64.b64decode(d["signature"]), checkpoint_message(stream, seq, head))
    except (InvalidSignature, ValueError):
        rep.fail(where, "checkpoint signature does not verify with the regency's public key")


def _totals(rep: Report, envs: list[dict]) -> dict:
    """Recompute, per (source, program, fiscal year), ceiling, reserved, released, paid, and
    check the money rules an auditor cares about."""
    ceiling: dict[str, int] = {}
    key_of: dict[str, tuple] = {}
    reserved, released, paid, granted = (defaultdict(int) for _ in range(4))
    issued: dict[str, int] = {}
    settled: dict[str, str] = {}
    for env in envs:
        t, d = env["event_type"], env["data"]
        where = f"chain position {d['chain_seq']}"
        if t == "disbursement.allocation_set":
            ceiling[d["allocation_id"]] = d["ceiling"]
            key_of[d["allocation_id"]] = (d["source"], d["programme_identifier"], d["fiscal_year"])
        elif t == "disbursement.budget_reserved":
            for ln in d["lines"]:
                reserved[ln["allocation_id"]] += ln["amount"]
        elif t == "disbursement.payment_instructions_issued":
            total = 0
            for it in d["items"]:
                if it["instruction_id"] in issued:
                    rep.fail(where, f"instruction {it['instruction_id']} issued twice")
                issued[it["instruction_id"]] = it["amount"]
                if sum(f["amount"] for f in it["funding"]) != it["amount"]:
                    rep.fail(where, f"instruction {it['instruction_id']} funding does not add up to its amount")
                total += it["amount"]
            if total != d["total"]:
                rep.fail(where, f"batch total {d['total']} but its items add up to {total}")
        elif t == "disbursement.settlement_recorded":
            iid = d["instruction_id"]
            if iid not in issued:
                rep.fail(where, f"settlement for instruction {iid} that was never issued")
            if iid in settled:
                rep.fail(where, f"instruction {iid} settled twice ({settled[iid]}, then {d['status']})")
            settled[iid] = d["status"]
            if d["status"] == "paid":
                for ln in d["funding"]:
                    paid[ln["allocation_id"]] += ln["amount"]
        elif t == "disbursement.instructions_cancelled":
            for it in d["items"]:  # withdrawn before payment (a life status): never settled, never twice
                iid = it["instruction_id"]
                if iid not in issued:
                    rep.fail(where, f"cancellation of instruction {iid} that was never issued")
                if iid in settled:
                    rep.fail(where, f"instruction {iid} cancelled after it was {settled[iid]}")
                settled[iid] = "cancelled"
        elif t == "disbursement.budget_released":
            for ln in d["lines"]:
                released[ln["allocation_id"]] += ln["amount"]
        elif t == "disbursement.kube_grant_made":
            granted[d["funding"]["allocation_id"]] += d["funding"]["amount"]
    issued_total = sum(issued.values())
    reserved_total = sum(reserved.values())
    if issued_total != reserved_total:
        rep.fail("whole stream", f"instructions issued total {issued_total} but budget reserved {reserved_total}")
    rows = []
    for aid in sorted(set(ceiling) | set(reserved) | set(granted), key=lambda a: key_of.get(a, ("?",) * 3)):
        src, prog, fy = key_of.get(aid, ("?", "?", "?"))
        if aid not in ceiling:
            rep.fail(f"allocation {aid}", "money reserved against an allocation never set on the stream")
        net = reserved[aid] - released[aid] + granted[aid]
        if net > ceiling.get(aid, 0):
            rep.fail(f"allocation {src}/{prog}/{fy}", f"reserved {net} exceeds its ceiling {ceiling.get(aid, 0)}")
        rows.append({"source": src, "programme_identifier": prog, "fiscal_year": fy, "ceiling": ceiling.get(aid, 0),
                     "reserved": reserved[aid], "released": released[aid], "net_reserved": net,
                     "paid": paid[aid], "kube_granted": granted[aid]})
    return {"allocations": rows, "instructions": len(issued), "issued_total": issued_total,
            "settled_paid": sum(1 for v in settled.values() if v == "paid"),
            "settled_failed": sum(1 for v in settled.values() if v == "failed"),
            "cancelled": sum(1 for v in settled.values() if v == "cancelled")}


async def read_stream(js, stream: str, subject: str, idle: float = 2.0) -> list[StreamMessage]:
    """Every message on the stream, in stream order, through an ordered (ephemeral) consumer."""
    info = await js.stream_info(stream)
    last = info.state.last_seq
    out: list[StreamMessage] = []
    if info.state.messages == 0:
        return out
    sub = await js.subscribe(subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL, stream=stream)
    try:
        while True:
            try:
                m = await sub.next_msg(timeout=idle)
            except TimeoutError:
                break
            out.append(StreamMessage(m.metadata.sequence.stream, m.data, dict(m.headers or {})))
            if m.metadata.sequence.stream >= last:
                break
    finally:
        await sub.unsubscribe()
    return out
