"""The channel contract speaks G2P Connect's disburse names (issue 12): what disbursement
writes parses as contracts.channel, and every field is G2P Connect's or a named addition."""
from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from pydantic import ValidationError

from contracts.channel import DisburseRequest, DisburseResult, OnDisburse
from services.disbursement import disburse

# G2P-Connect/specs src/disburse/components/io/DisburseRequest.yaml (per disbursement)
G2P_DISBURSE = {"reference_id", "scheduled_timestamp", "payer_fa", "payer_name", "payee_fa", "payee_name", "amount",
                "note", "instruction", "purpose", "currency_code", "locale"}
SINERGI_ADDITIONS = {"disbursement_id", "programme_identifier", "period", "payee_id", "proxy", "no_kk",
                     "village_code", "retry_of"}


def _request() -> dict:
    iid = uuid.uuid4()
    payee = {"name": "Sri Wahyuni", "financial_address": {"kind": "bank_account", "bank_code": "002",
                                                          "account_number": "0123456789"},
             "proxy": {"name": "Budi", "relationship": "anak"}}
    text = disburse.item(iid, "kamalia_merekah", "2026-11", "3317014107600001", "3317010101100001", "3317012001",
                         600_000, payee, dt.datetime(2026, 11, 23, tzinfo=dt.UTC).isoformat(), retry_of=uuid.uuid4())
    [row] = disburse.rows("channel.bank.instructions", "kamalia_merekah", [(iid, text)])
    return json.loads(row["payload"])


def test_what_disbursement_writes_is_a_g2p_disburse_request():
    raw = _request()
    req = DisburseRequest.model_validate(raw)
    item = req.disbursements[0]
    assert item.payee_fa == "account:0123456789@002" and item.currency_code == "IDR" and item.note
    assert raw["payer_name"] and set(raw) == {"transaction_id", "payer_fa", "payer_name", "disbursements"}
    assert set(raw["disbursements"][0]) <= G2P_DISBURSE | SINERGI_ADDITIONS


@pytest.mark.parametrize("code", ["rjct.account.closed", "RJCT_INVALID_PAYEE_FA", "RJCT_INVALID_AMOUNT"])
def test_a_channel_may_answer_with_g2p_reason_codes(code):
    r = DisburseResult(disbursement_id=uuid.uuid4(), status="rjct", status_reason_code=code,
                       timestamp=dt.datetime.now(dt.UTC))
    assert OnDisburse(settlement_id="s-1", results=[r]).results[0].status_reason_code == code


@pytest.mark.parametrize("code", ["RJCT", "rjct INVALID", "RJCT_invalid", "x" * 90])
def test_other_reason_codes_are_refused(code):
    with pytest.raises(ValidationError):
        DisburseResult(disbursement_id=uuid.uuid4(), status="rjct", status_reason_code=code,
                       timestamp=dt.datetime.now(dt.UTC))
