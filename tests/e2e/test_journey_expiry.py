"""Journey 5 (issue 17): a verification runs out. Kamalia Merekah requires a verivali
verification valid for one month (the registry's program settings); when the operator's scan
finds it past its validity the person is not payable, and a new verification makes them
payable again. All four services run together (journey_support.py), driven only from outside:
the scan is the operator's command `sinergi registry expire-verifications`."""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import eventually
from tests.e2e.journey_support import elderly, months_from_now, set_up_kamalia_for, verify, whole_system

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

VILLAGE = "3317012001"
KAMALIA = "kamalia_merekah"


def _expire(settings, now: dt.datetime) -> dict:
    """`sinergi registry expire-verifications --now ...` against the test's servers."""
    env = {**os.environ, "SINERGI_NATS_URL": settings.nats_url, "SINERGI_DATABASE_URL": settings.database_url,
           "SINERGI_NAMESPACE": settings.namespace, "SINERGI_DB_PREFIX": settings.db_prefix}
    proc = subprocess.run([sys.executable, "-m", "services.cli", "registry", "expire-verifications",
                           "--now", now.isoformat()], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    (answer,) = [line for line in proc.stdout.splitlines() if line.startswith('{"expired"')]  # beside log lines
    return dict(json.loads(answer))


async def test_an_expired_verification_stops_payment_until_verified_again(settings, tmp_path):
    this, nxt, today = months_from_now()
    async with whole_system(settings, tmp_path) as system:
        await set_up_kamalia_for(system, [this, nxt], people=1)
        await system.call("registry", "PUT", f"/programs/{KAMALIA}", as_="pm-dinsos", json={
            "owner": "regency", "agency_name": "Dinsos Kabupaten Rembang", "requires_verification": True,
            "validity_months": 1, "reason": "Perbup: verifikasi bulanan"})
        (tini,) = elderly(1, VILLAGE, first_serial=31)
        await system.enrol(KAMALIA, [tini])
        await verify(system, [tini["nik"]])

        async def would_pay(n: int) -> bool:
            r = await system.call("disbursement", "POST", f"/cycles/{KAMALIA}/{nxt}/preview", as_="pm-dinsos")
            return bool(r.json()["would_issue"] == n)
        await eventually(lambda: would_pay(1), timeout=20, interval=0.2)

        # two months on, the operator's scan finds her verification past its month
        later = dt.datetime.combine(today + dt.timedelta(days=62), dt.time(9), dt.timezone(dt.timedelta(hours=7)))
        assert await asyncio.to_thread(_expire, settings, later) == {"expired": 1}
        await eventually(lambda: would_pay(0), timeout=20, interval=0.2)  # not payable: ineligible for Kamalia

        # the verifier visits her again: payable again
        await verify(system, [tini["nik"]], result="corrected")
        await eventually(lambda: would_pay(1), timeout=20, interval=0.2)
