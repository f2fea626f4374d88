"""The payment channels' instructions: many disbursements per message in G2P Connect's
disburse shape (contracts.channel.DisburseRequest), with the payee's name, financial address
and proxy from disbursement's copy of the enrolments.

Formatted by hand, not through pydantic: a million items per cycle. Free text (names, proxy,
financial address) goes through json.dumps; everything else is digits, uuids, checked program
codes and cycle keys, which need no escaping (a unit test validates the output against the
contract).
"""
from __future__ import annotations

import json
import uuid
from typing import Any

from contracts.channel import MAX_ITEMS
from services.kit.outbox import OutboxRow


def payee_fa(fa: dict[str, Any] | None) -> str | None:
    """G2P Connect's `<id>@<provider>` form of a financial address (contracts.payee)."""
    if not fa:
        return None
    if fa.get("kind") == "bank_account":
        return f"account:{fa['account_number']}@{fa['bank_code']}"
    if fa.get("kind") == "cash_pickup":
        return f"cash:{fa['reference']}@pos"
    return None


def item(iid: uuid.UUID, program: str, period: str, nik: str, no_kk: str, village: str, amount: int,
         payee: dict[str, Any] | None, now: str, retry_of: uuid.UUID | None = None) -> str:
    """One disbursement (contracts.channel.Disburse) as JSON text."""
    p = payee or {}
    name, proxy, fa = p.get("name"), p.get("proxy"), payee_fa(p.get("financial_address"))
    extra = ""
    if name is not None:
        extra += f',"payee_name":{json.dumps(name)}'
    if fa is not None:
        extra += f',"payee_fa":{json.dumps(fa)}'
    if proxy:
        extra += f',"proxy":{json.dumps(proxy, separators=(",", ":"))}'
    if retry_of is not None:
        extra += f',"retry_of":"{retry_of}"'
    return (f'{{"disbursement_id":"{iid}","reference_id":"{program}/{period}/{nik}","programme_identifier":"{program}",'
            f'"period":"{period}","payee_id":"{nik}","no_kk":"{no_kk}","village_code":"{village}",'
            f'"amount":{amount},"currency_code":"IDR","scheduled_timestamp":"{now}",'
            f'"note":"Sinergi {program} {period}"{extra}}}')


def batch_id(first: uuid.UUID) -> uuid.UUID:
    """A batch is named by its first instruction: a resumed or repeated issue is the same message."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"sinergi/disburse/{first}")


def rows(subject: str, program: str, items: list[tuple[uuid.UUID, str]]) -> list[OutboxRow]:
    """Outbox rows of up to MAX_ITEMS disbursements each; Nats-Msg-Id = transaction_id."""
    out: list[OutboxRow] = []
    for k in range(0, len(items), MAX_ITEMS):
        part = items[k:k + MAX_ITEMS]
        tid = batch_id(part[0][0])
        payload = (f'{{"transaction_id":"{tid}","payer_fa":"program:{program}@sinergi",'
                   f'"payer_name":"Sinergi {program}","disbursements":['
                   + ",".join(text for _iid, text in part) + "]}")
        out.append({"id": tid, "subject": subject, "headers": {}, "payload": payload.encode()})
    return out
