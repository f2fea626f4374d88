"""The payment channels' instructions: many disbursements per message in G2P Connect's
disburse shape (contracts.channel.DisburseRequest), with the payee's name, financial address
and proxy from disbursement's copy of the enrolments.

Formatted by hand, not through pydantic: a million items per cycle. Free text (names, proxy,
financial address) goes through json.dumps; everything else is digits, uuids, checked program
codes and cycle keys, which need no escaping (a unit test validates the output against the
contract).
"""
from __future__ import annotations

import hashlib
import hmac
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


def item(iid: uuid.UUID | str, program: str, period: str, nik: str, no_kk: str, village: str, amount: int,
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


def message_id(kind: str, first: uuid.UUID | str, key: bytes | None) -> uuid.UUID:
    """The id (and Nats-Msg-Id) of a message Sinergi sends a channel, named by its first
    instruction under the regency's secret `key` (the same message if ever built again), or random
    without one. Never computable from public facts: every party's messages share the CHANNEL
    stream's duplicate window, and instruction ids are uuid5 of program, period and NIK; a channel
    that published a batch's id first would make JetStream drop the batch as a duplicate (issue 12)."""
    if key is None:
        return uuid.uuid4()
    mac = hmac.new(key, f"sinergi/{kind}/{first}".encode(), hashlib.sha256).hexdigest()
    return uuid.uuid5(uuid.NAMESPACE_URL, f"sinergi/{kind}/{mac}")


def rows(subject: str, program: str, items: list[tuple[uuid.UUID, str]] | list[tuple[str, str]], key: bytes | None = None) -> list[OutboxRow]:
    """Outbox rows of up to MAX_ITEMS disbursements each; Nats-Msg-Id = transaction_id
    (message_id: keyed by `key`, the service's secret, random without it)."""
    out: list[OutboxRow] = []
    for k in range(0, len(items), MAX_ITEMS):
        part = items[k:k + MAX_ITEMS]
        tid = message_id("disburse", part[0][0], key)
        payload = (f'{{"transaction_id":"{tid}","payer_fa":"program:{program}@sinergi",'
                   f'"payer_name":"Sinergi {program}","disbursements":['
                   + ",".join(text for _iid, text in part) + "]}")
        out.append({"id": tid, "subject": subject, "headers": {}, "payload": payload.encode()})
    return out
