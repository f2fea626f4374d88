"""Personal data never reaches the logs: NIK/KK (also grouped), names, addresses, complaint and
note texts, birth dates, account numbers and secrets are masked by the structlog pipeline, for
structlog calls, stdlib loggers (uvicorn, nats, alembic) and exception tracebacks alike."""
from __future__ import annotations

import io
import json
import logging
import re
import uuid

import pytest
import structlog
from pydantic import BaseModel

from services.kit import logging as klog

NIK = "3317014107600001"
KK = "3317010101200002"
SIXTEEN = re.compile(r"(?<!\d)\d{16}(?!\d)")
SECRETS = [NIK, KK, "Siti Aminah", "RT 01 RW 02 Desa Pasar Banggi", "rumah bocor dan tidak makan",
           "1960-07-01", "0812345678", "hunter2-password", "4455667788"]


@pytest.fixture
def lines():
    """The service's logging pipeline (klog.configure), writing into a buffer instead of stdout."""
    buf = io.StringIO()
    klog.configure("test", "debug")
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(buf))
    logging.getLogger().handlers[0].setStream(buf)
    yield lambda: [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = []


class Report(BaseModel):
    nik: str
    name: str
    village_code: str


def test_structlog_values_keys_and_nesting_are_masked(lines):
    log = klog.get("t")
    log.info(f"lookup for {NIK}", nik=NIK, no_kk=KK, name="Siti Aminah", address="RT 01 RW 02 Desa Pasar Banggi",
             complaint_text="rumah bocor dan tidak makan", birth_date="1960-07-01", phone="0812345678",
             payload={"people": [{"head_nik": NIK, "nama": "Siti Aminah", "notes": "rumah bocor dan tidak makan"}]},
             report=Report(nik=NIK, name="Siti Aminah", village_code="3317012001"),
             grouped="NIK 3317 0141 0760 0001 / 3317.0141.0760.0001", as_number=int(NIK),
             password="hunter2-password", account_number="4455667788", event_id=str(uuid.UUID(int=7)))
    out = lines()
    text = json.dumps(out)
    assert not SIXTEEN.search(text) and not any(s in text for s in SECRETS), text
    rec = out[0]
    assert rec["nik"] == "331701**********" and rec["no_kk"] == "331701**********"  # the kecamatan stays
    assert rec["event"] == "lookup for 331701**********"
    assert rec["report"]["village_code"] == "3317012001"  # codes that are not personal stay readable
    assert rec["event_id"] == str(uuid.UUID(int=7))  # UUIDs are not mistaken for NIKs
    assert rec["payload"]["people"][0]["head_nik"] == "331701**********"


def test_stdlib_loggers_and_tracebacks_are_masked(lines):
    logging.getLogger("uvicorn.error").warning("bad request for NIK %s named %s", NIK, "x")
    try:
        raise ValueError(f"no person {NIK} in KK {KK}")
    except ValueError:
        klog.get("t").exception("lookup failed")
    text = json.dumps(lines())
    assert "331701**********" in text and "lookup failed" in text and "ValueError" in text
    assert not SIXTEEN.search(text), text


def test_mask_value_is_the_same_rule_for_audit_rows():
    masked = klog.mask_value({"nik": NIK, "detail": {"person_name": "Siti", "count": 3, "amount": 600_000},
                              "ids": [NIK, "x"], "none": None})
    assert masked == {"nik": "331701**********", "detail": {"person_name": "***", "count": 3, "amount": 600_000},
                      "ids": ["331701**********", "x"], "none": None}
    assert klog._mask_value is klog.mask_value  # the earlier name still works
    assert {"nik", "no_kk", "name", "nama", "address", "alamat", "text", "complaint_text"} <= klog.SENSITIVE_KEYS
