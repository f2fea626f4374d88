"""Issue 12 (the part that makes the books trustworthy): bounded amounts and a ledger that
cannot overflow; every audit event signed, so a forged append fails `audit verify` at its
position; rule changes on the audit stream; maker-checker before any instruction leaves."""
from __future__ import annotations

import json

import pytest

from services.disbursement import audit
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
        return msgs if len(msgs) >= at_least else None
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
        _stream, msgs = await _audit_messages(js, settings, 3)
        rep = audit.verify(msgs, stream, pub)
        assert not rep.ok
        assert any(f.startswith("chain position 3 ") and "signature" in f for f in rep.failures), rep.failures
        # the forger signs with a key of their own: the same failure, at the same position
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        from services.disbursement.config import key_id, sign_event
        own = Ed25519PrivateKey.generate()
        signed = audit.StreamMessage(msgs[-1].seq, msgs[-1].data,
                                     {"Sinergi-Signature": sign_event(own, key_id(own.public_key()), stream,
                                                                      msgs[-1].data)})
        rep = audit.verify(msgs[:-1] + [signed], stream, pub)
        assert any(f.startswith("chain position 3 ") and "not the regency key" in f for f in rep.failures)
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
