"""Realistic test data: valid NIKs, KKs and village codes from the region list."""
from __future__ import annotations

import datetime as dt
import itertools
import random
import uuid

from contracts import wilayah

REMBANG = "3317"
_serial = itertools.count(1)


def village(prefix: str = REMBANG, rng: random.Random | None = None) -> str:
    return (rng or random).choice(wilayah.villages_in(prefix))


def nik(village_code: str, birth: dt.date, sex: str, serial: int | None = None) -> str:
    day = birth.day + (40 if sex == "F" else 0)
    s = serial if serial is not None else next(_serial) % 9999 + 1
    return f"{village_code[:6]}{day:02d}{birth.month:02d}{birth.year % 100:02d}{s:04d}"


def kk(village_code: str, serial: int | None = None) -> str:
    s = serial if serial is not None else next(_serial) % 9999 + 1
    return f"{village_code[:6]}{random.randint(1, 28):02d}{random.randint(1, 12):02d}{random.randint(10, 25):02d}{s:04d}"


def enrolment(program: str = "pkh", *, status: str = "active", effective: str = "2026-01-01",
              sex: str = "F", birth: dt.date = dt.date(1960, 7, 1), village_code: str | None = None,
              **overrides) -> dict:
    v = village_code or village()
    report = {
        "message_id": str(uuid.uuid4()), "reference_id": f"REF-{uuid.uuid4().hex[:8]}",
        "programme_identifier": program, "nik": nik(v, birth, sex), "no_kk": kk(v), "name": "Siti Aminah",
        "sex": sex, "birth_date": birth.isoformat(), "village_code": v, "address": "RT 01 RW 02",
        "enrolment_status": status, "status_change_date": effective,
    }
    report.update(overrides)
    return report


def msg_id(report: dict, program: str | None = None) -> str:
    """The Nats-Msg-Id header an agency sets on a report: `<program>:<message_id>` (JetStream
    de-duplicates the header across every program's reports, so the program scopes it)."""
    return f"{program or report['programme_identifier']}:{report['message_id']}"


def receipts_of(data: bytes) -> list[dict]:
    """The receipts in one message on agency.<program>.receipts (a contracts.agency.ReceiptBatch,
    validated here so every test that reads receipts also checks the contract)."""
    from contracts.agency import ReceiptBatch
    batch = ReceiptBatch.model_validate_json(data)
    return [r.model_dump(mode="json") for r in batch.receipts]
