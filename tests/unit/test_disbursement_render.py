"""The cycle's hand-rendered writes (issue 12, speed) are what pydantic would have made: the audit
events byte for byte (their bytes are the hash chain), the instruction ids and pseudonyms equal to
domain.instruction_id and config.pseudonym, the ledger legs and reservations to the funding plan."""
from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from types import SimpleNamespace

import pytest
from hypothesis import given, strategies as st

from contracts.channel import DisburseRequest
from contracts.disbursement import GENESIS_HASH, BudgetReserved, PaymentInstructionsIssued
from contracts.envelope import envelope
from services.disbursement import cycles, domain, ledger
from services.disbursement.config import DisbursementSettings, pseudonym
from services.disbursement.domain import ProgramRules, Tranche
from tests import factories

A, B = uuid.uuid4(), uuid.uuid4()


def _people(n: int) -> list[tuple]:
    rng = random.Random(n)
    out = []
    villages = factories.wilayah.villages_in("3317")
    for k in range(n):
        v = rng.choice(villages)
        payee = None if k % 3 == 0 else {"name": f'Siti "Ibu" Aminah {k}',
                                         "financial_address": {"kind": "cash_pickup", "reference": f"R-{k}"},
                                         "proxy": {"name": "Wali", "relationship": "anak"} if k % 2 else None}
        out.append((factories.nik(v, dt.date(1950, 3, 4), "F", serial=k + 1), factories.kk(v, serial=k + 1), v, payee))
    return out


def _chunk(tmp_path, tranches: list[Tranche], people: list[tuple], key: str = "k" * 32):
    cfg = DisbursementSettings(pseudonym_key=key, state_dir=str(tmp_path), _env_file=None)
    rules = ProgramRules.model_validate({"name": "Kamalia", "amount": {"kind": "fixed", "amount": 600_000},
                                         "funding_mode": "split", "exclusivity_class": "cash_elderly", "channel": "pos",
                                         "funding": [{"source": "csr", "share": 40}, {"source": "apbd_kabupaten",
                                                                                      "share": 60}]})
    ctx = cycles.CycleTerms("kamalia_merekah", "2026-11", rules, 600_000, 2026)
    cid = domain.cycle_id("kamalia_merekah", "2026-11")
    w = cycles._build(cfg, "channel.pos.instructions", ctx, cid, people, tranches)
    chain = ledger.Chain(SimpleNamespace(names=SimpleNamespace(event=lambda t: t)), cfg, 0, GENESIS_HASH, 0)
    cycles._announce(chain, ctx, cid, w)
    return cfg, w, chain


def test_audit_events_are_the_bytes_pydantic_makes(tmp_path):
    people = _people(2_345)
    tranches = [Tranche(1_200, (("csr", A, 240_000), ("apbd_kabupaten", B, 360_000))),
                Tranche(1_100, (("apbd_kabupaten", B, 600_000),))]
    cfg, w, chain = _chunk(tmp_path, tranches, people)
    events = [json.loads(p) for _s, p, _id in chain.pending]
    assert [e["event_type"] for e in events] == ["disbursement.budget_reserved"] + \
        ["disbursement.payment_instructions_issued"] * 3
    for (_subject, payload, event_id), env in zip(chain.pending, events, strict=True):
        cls = BudgetReserved if env["event_type"] == "disbursement.budget_reserved" else PaymentInstructionsIssued
        ev = cls.model_validate(env["data"])  # the contract accepts it...
        again = envelope(ev, "disbursement", event_id=event_id,
                         occurred_at=dt.datetime.fromisoformat(env["occurred_at"])).model_dump_json().encode()
        assert again == payload  # ...and renders exactly these bytes
    items = [it for e in events[1:] for it in e["data"]["items"]]
    assert [len(e["data"]["items"]) for e in events[1:]] == [1000, 1000, 300]
    assert all(e["data"]["total"] == sum(it["amount"] for it in e["data"]["items"]) for e in events[1:])
    funded = people[:2_300]
    assert [it["instruction_id"] for it in items] == [str(domain.instruction_id("kamalia_merekah", "2026-11", p[0]))
                                                      for p in funded]
    assert [it["pseudonym"] for it in items] == [pseudonym(cfg.pseudonym_secret, p[0]) for p in funded]
    assert items[0]["funding"] == [{"source": "csr", "allocation_id": str(A), "amount": 240_000},
                                   {"source": "apbd_kabupaten", "allocation_id": str(B), "amount": 360_000}]
    assert items[-1]["funding"] == [{"source": "apbd_kabupaten", "allocation_id": str(B), "amount": 600_000}]
    # the rows COPYed: one instruction per funded person, one reserve leg per funding line, the
    # reservations per allocation equal to the legs
    assert [r[0] for r in w.instructions] == [it["instruction_id"] for it in items]
    assert len(w.transfers) == 1_200 * 2 + 1_100
    assert dict(w.per_alloc) == {A: 1_200 * 240_000, B: 1_200 * 360_000 + 1_100 * 600_000}
    ids = {it["instruction_id"] for it in items}
    for kind, to, frm, _amount, aid, ref in w.transfers:
        assert (kind, to, frm) == ("reserve", ledger.payable_account(aid), ledger.budget_account(aid))
        assert ref in ids
    assert sum(t[3] for t in w.transfers) == 2_300 * 600_000
    # the channel's batches carry the same ids and validate against the contract
    sent = [str(d.disbursement_id) for m in w.messages for d in DisburseRequest.model_validate_json(m["payload"]).disbursements]
    assert sent == [it["instruction_id"] for it in items]


@pytest.mark.parametrize("key", ["k" * 32, "a longer pseudonym key than SHA-256's 64-byte block, which HMAC hashes first"])
def test_pseudonyms_are_config_pseudonym_for_any_key(tmp_path, key):
    people = _people(50)
    cfg, w, _chain = _chunk(tmp_path, [Tranche(50, (("csr", A, 600_000),))], people, key)
    assert [r[4] for r in w.instructions] == [pseudonym(key.encode(), p[0]) for p in people]


@given(st.text(alphabet="0123456789", min_size=16, max_size=16), st.sampled_from(["2026-11", "2026-T4", "2026-11-banjir"]))
def test_instruction_ids_as_text_equal_the_uuid5(nik, period):
    assert domain.instruction_ids("pkh", period)(nik) == str(domain.instruction_id("pkh", period, nik))
