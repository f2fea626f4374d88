"""Issue 12 (the part that makes the books trustworthy): bounded amounts and a ledger that
cannot overflow; every audit event signed, so a forged append fails `audit verify` at its
position; rule changes on the audit stream; maker-checker before any instruction leaves."""
from __future__ import annotations

import json

import pytest

from services.disbursement import audit
from services.kit.auth import Role
from tests import disbursement_support as ds
from tests.conftest import eventually

pytestmark = pytest.mark.integration
MAX = 10**15


async def test_amounts_are_bounded_and_the_proof_never_overflows(settings, start):
    async with start("disbursement", settings) as svc:
        h = ds.headers(settings)
        for ceiling in (2**63, 2**63 - 1, MAX + 1):
            r = await svc.http.put("/allocations/csr/kamalia_merekah/2026",
                                   json={"ceiling": ceiling, "reason": "too much"}, headers=h)
            assert r.status_code == 422, (ceiling, r.text)
            assert "1000000000000000" in r.text  # the body says the limit
        r = await svc.http.put("/poverty-lines/3317/2026", json={"amount": 2**63, "reason": "typo"}, headers=h)
        assert r.status_code == 422, r.text
        rules = {**ds.KAMALIA, "amount": {"kind": "fixed", "amount": MAX + 1}}
        assert (await svc.http.put("/programs/kamalia_merekah", json=rules, headers=h)).status_code == 422
        # the largest ceiling on every source for ten years: the proof sums them exactly (numeric)
        for year in range(2026, 2036):
            for src in ("apbn", "apbd_provinsi", "apbd_kabupaten", "apbdes", "baznas", "csr", "donation", "other"):
                r = await svc.http.put(f"/allocations/{src}/kamalia_merekah/{year}",
                                       json={"ceiling": MAX, "reason": "the most a budget may hold"}, headers=h)
                assert r.status_code == 200, r.text
        r = await svc.http.get("/ledger/proof", headers=h)
        assert r.status_code == 200, r.text
        assert r.json()["balanced"], r.json()


async def _audit_messages(js, settings, at_least: int):
    stream = settings.names.stream("DISBURSEMENT")

    async def enough():
        msgs = await audit.read_stream(js, stream, settings.names.subject("disbursement.>"), idle=0.5)
        # the checkpoint timer adds events of its own: count the others
        return msgs if sum(b"chain_checkpoint" not in m.data for m in msgs) >= at_least else None
    return stream, await eventually(enough)


async def test_a_forged_append_fails_verify_at_its_position(settings, nc, start):
    js = nc.jetstream()
    async with start("disbursement", settings) as svc:
        h = ds.headers(settings)
        for src in ("csr", "donation"):
            r = await svc.http.put(f"/allocations/{src}/kamalia_merekah/2026",
                                   json={"ceiling": 6_000_000, "reason": "MoU 2026"}, headers=h)
            assert r.status_code == 200, r.text
        stream, msgs = await _audit_messages(js, settings, 2)
        pub = svc.deps.cfg.signing_key.public_key()
        assert audit.verify(msgs, stream, pub).ok
        # a forger who reads the stream appends an event with the right position and prev_hash
        last = json.loads(msgs[-1].data)
        forged = dict(last, event_id="00000000-0000-4000-8000-000000000001")
        forged["data"] = dict(last["data"], chain_seq=last["data"]["chain_seq"] + 1,
                              prev_hash=audit.sha256(msgs[-1].data), ceiling=999_999_999_999,
                              previous_ceiling=6_000_000, reason="forged")
        await js.publish(settings.names.subject("disbursement.allocation_set"), json.dumps(forged).encode(),
                         headers={"Nats-Msg-Id": forged["event_id"]})
        pos = forged["data"]["chain_seq"]  # 3, or 4 when the checkpoint timer signed the head first
        _stream, msgs = await _audit_messages(js, settings, 3)
        rep = audit.verify(msgs, stream, pub)
        assert not rep.ok
        assert any(f.startswith(f"chain position {pos} ") and "signature" in f for f in rep.failures), rep.failures
        # the forger signs with a key of their own: the same failure, at the same position
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        from services.disbursement.config import key_id, sign_event
        own = Ed25519PrivateKey.generate()
        signed = audit.StreamMessage(msgs[-1].seq, msgs[-1].data,
                                     {"Sinergi-Signature": sign_event(own, key_id(own.public_key()), stream,
                                                                      msgs[-1].data)})
        rep = audit.verify(msgs[:-1] + [signed], stream, pub)
        assert any(f.startswith(f"chain position {pos} ") and "not the regency key" in f for f in rep.failures)
        # without the regency's key only the chain is checked, and the report says so
        assert any("signatures not checked" in n for n in audit.verify(msgs, stream).notes)


async def test_development_keys_are_generated_not_constant(tmp_path, monkeypatch):
    from services.disbursement.config import DisbursementSettings
    monkeypatch.delenv("SINERGI_DISBURSEMENT_PSEUDONYM_KEY", raising=False)
    monkeypatch.delenv("SINERGI_DISBURSEMENT_SIGNING_KEY_FILE", raising=False)
    a = DisbursementSettings(_env_file=None, state_dir=str(tmp_path / "a"))
    b = DisbursementSettings(_env_file=None, state_dir=str(tmp_path / "b"))
    again = DisbursementSettings(_env_file=None, state_dir=str(tmp_path / "a"))
    assert a.pseudonym("3317014107600001") != b.pseudonym("3317014107600001")
    assert a.pseudonym("3317014107600001") == again.pseudonym("3317014107600001")  # kept across restarts
    raw = lambda s: s.signing_key.private_bytes_raw()  # noqa: E731
    assert raw(a) != raw(b) and raw(a) == raw(again)


async def test_maker_checker_before_any_instruction_leaves(settings, nc, start):
    from services.disbursement import store
    from tests.integration.test_disbursement_cycle import PERIOD, _count, _setup
    js = nc.jetstream()
    persons = ds.people(7, seed=21)
    pm, kadis = ds.headers(settings, user="pm1"), ds.headers(settings, user="kadis")
    async with start("disbursement", settings) as svc:
        await _setup(svc, settings, js, persons[:5])
        # one account alone can never pay: the old one-step commit is refused
        r = await svc.http.post(f"/cycles/kamalia_merekah/{PERIOD}", headers=pm)
        assert r.status_code == 409 and "approved preparation" in r.text
        r = await svc.http.post(f"/cycles/kamalia_merekah/{PERIOD}/prepare", headers=pm)
        assert r.status_code == 200, r.text
        prep = r.json()
        assert prep["status"] == "prepared" and prep["people"] == 5 and prep["total"] == 5 * 600_000
        pid = prep["preparation_id"]
        assert await _count(svc, store.instructions) == 0  # prepared is not paid
        r = await svc.http.post(f"/cycles/preparations/{pid}/approve", headers=pm)
        assert r.status_code == 403 and "cannot approve" in r.text
        r = await svc.http.post(f"/cycles/preparations/{pid}/approve",
                                headers=ds.headers(settings, Role.auditor, user="bpk"))
        assert r.status_code == 403
        # two more people enrol after the list was frozen: the approved cycle does not pay them
        await ds.publish_enrolments(js, settings, persons[5:], "kamalia_merekah")

        async def seven():
            return await _count(svc, store.enrolments) == 7
        await eventually(seven)
        r = await svc.http.post(f"/cycles/preparations/{pid}/approve", headers=kadis)
        assert r.status_code == 200, r.text
        assert r.json()["created"] == 5 and r.json()["approved_by"] == "kadis" and r.json()["prepared_by"] == "pm1"
        assert (await svc.http.post(f"/cycles/preparations/{pid}/approve", headers=kadis)).status_code == 409
        # rejected: never approvable
        pid2 = (await svc.http.post(f"/cycles/kamalia_merekah/{PERIOD}/prepare", headers=pm)).json()["preparation_id"]
        r = await svc.http.post(f"/cycles/preparations/{pid2}/reject", headers=kadis,
                                json={"reason": "the two new people are not verified on paper"})
        assert r.status_code == 200 and r.json()["status"] == "rejected"
        assert (await svc.http.post(f"/cycles/preparations/{pid2}/approve", headers=kadis)).status_code == 409
        # the rules change after preparing: the preparation can no longer be approved
        pid3 = (await svc.http.post(f"/cycles/kamalia_merekah/{PERIOD}/prepare", headers=pm)).json()["preparation_id"]
        r = await svc.http.put("/poverty-lines/3317/2026", json={"amount": 650_000, "reason": "BPS revision"},
                               headers=pm)
        assert r.status_code == 200, r.text
        r = await svc.http.post(f"/cycles/preparations/{pid3}/approve", headers=kadis)
        assert r.status_code == 409 and "changed" in r.text
        # expired
        svc.deps.cfg.preparation_hours = -1
        pid4 = (await svc.http.post(f"/cycles/kamalia_merekah/{PERIOD}/prepare", headers=pm)).json()["preparation_id"]
        r = await svc.http.post(f"/cycles/preparations/{pid4}/approve", headers=kadis)
        assert r.status_code == 409 and "expired" in r.text
        assert (await svc.http.get(f"/cycles/preparations/{pid4}", headers=pm)).json()["status"] == "expired"
        assert await _count(svc, store.instructions) == 5

        # every step is on the audit stream with its actor; verify lists them
        stream, msgs = await _audit_messages(js, settings, 14)
        rep = audit.verify(msgs, stream, svc.deps.cfg.signing_key.public_key())
        assert rep.ok, rep.failures
        kinds = [(c["event_type"].removeprefix("disbursement."), c.get("set_by") or c.get("prepared_by")
                  if "approved_by" not in c else c["approved_by"]) for c in rep.changes]
        assert ("cycle_approved", "kadis") in kinds and ("cycle_prepared", "pm1") in kinds
        rejected = [c for c in rep.changes if c["event_type"] == "disbursement.cycle_rejected"]
        assert [c["rejected_by"] for c in rejected] == ["kadis", "system", "system"]


async def test_rule_changes_are_audit_events_with_a_reason(settings, nc, start):
    js = nc.jetstream()
    pm = ds.headers(settings, user="pm1")
    async with start("disbursement", settings) as svc:
        assert (await svc.http.put("/programs/kamalia_merekah", json=ds.KAMALIA, headers=pm)).status_code == 200
        changed = {**ds.KAMALIA, "min_age": 65}
        r = await svc.http.put("/programs/kamalia_merekah", json=changed, headers=pm)
        assert r.status_code == 422 and "reason" in r.text  # a change without a reason
        r = await svc.http.put("/programs/kamalia_merekah", headers=pm,
                               json={**changed, "reason": "Perbup 12/2026: elderly from 65"})
        assert r.status_code == 200 and r.json()["changed"]
        for amount in (600_000, 612_000):
            r = await svc.http.put("/poverty-lines/3317/2026", json={"amount": amount, "reason": f"BPS {amount}"},
                                   headers=pm)
            assert r.status_code == 200, r.text
        stream, msgs = await _audit_messages(js, settings, 4)
        rep = audit.verify(msgs, stream, svc.deps.cfg.signing_key.public_key())
        assert rep.ok, rep.failures
        got = [(c["event_type"], c["set_by"], c["reason"]) for c in rep.changes]
        assert got == [("disbursement.program_rules_set", "pm1", "program defined"),
                       ("disbursement.program_rules_set", "pm1", "Perbup 12/2026: elderly from 65"),
                       ("disbursement.poverty_line_set", "pm1", "BPS 600000"),
                       ("disbursement.poverty_line_set", "pm1", "BPS 612000")]
        assert rep.changes[1]["previous_rules"]["min_age"] == 60 and rep.changes[1]["rules"]["min_age"] == 65
        assert rep.changes[3]["previous_amount"] == 600_000


async def test_reporting_counts_no_forged_disbursement_event(settings, nc, start, tmp_path, monkeypatch):
    """Reporting with the regency's public key: an allocation forged onto disbursement.>
    (unsigned, or signed with another key) is a dead letter and in no figure; the signed one counts."""
    import uuid

    import sqlalchemy as sa
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from contracts.disbursement import GENESIS_HASH, AllocationSet
    from contracts.envelope import envelope
    from services.disbursement.config import SIGNATURE_HEADER, key_id, public_pem, sign_event
    from services.reporting import store as rstore
    from tests.integration.test_reporting_recap import dead_letters

    regency, forger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    (tmp_path / "regency.pub").write_bytes(public_pem(regency))
    monkeypatch.setenv("SINERGI_REPORTING_DISBURSEMENT_PUBLIC_KEY_FILE", str(tmp_path / "regency.pub"))
    names, js = settings.names, nc.jetstream()
    stream = names.stream("DISBURSEMENT")

    def allocation(seq: int, ceiling: int) -> bytes:
        ev = AllocationSet(chain_seq=seq, prev_hash=GENESIS_HASH, allocation_id=uuid.uuid4(), source="csr",
                           programme_identifier="kamalia_merekah", fiscal_year=2026, ceiling=ceiling,
                           reason="MoU", set_by="pm1")
        return envelope(ev, "disbursement").model_dump_json().encode()

    async with start("reporting", settings) as rep:
        subject = names.subject("disbursement.allocation_set")
        good, unsigned, other = allocation(1, 6_000_000), allocation(2, 10**12), allocation(3, 10**13)
        await js.publish(subject, good, headers={"Nats-Msg-Id": "good", SIGNATURE_HEADER:
                                                 sign_event(regency, key_id(regency.public_key()), stream, good)})
        await js.publish(subject, unsigned, headers={"Nats-Msg-Id": "unsigned"})
        await js.publish(subject, other, headers={"Nats-Msg-Id": "other", SIGNATURE_HEADER:
                                                  sign_event(forger, key_id(regency.public_key()), stream, other)})
        letters = await eventually(lambda: dead_letters(js, names, 2), timeout=30)
        assert {x["msg_id"]: x["reason_code"] for x in letters} == {"unsigned": "rjct.signature.invalid",
                                                                    "other": "rjct.signature.invalid"}

        async def counted():
            async with rep.rt.sessions() as s:
                return (await s.execute(sa.select(sa.func.coalesce(sa.func.sum(rstore.allocations.c.amount), 0))
                                        )).scalar()
        assert await eventually(counted) == 6_000_000
