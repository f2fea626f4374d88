"""`sinergi agency publish` as an agency runs it: a real subprocess against real NATS, with the
registry running; the example file's three bad rows come back with their reasons."""
from __future__ import annotations

import asyncio
import csv
import os
import shutil
import sys
from pathlib import Path

import pytest

from services.registry import store
from tests.integration.registry_support import auth, count

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


async def run_cli(settings, *args: str) -> tuple[int, str]:
    env = {**os.environ, "SINERGI_NATS_URL": settings.nats_url, "SINERGI_NAMESPACE": settings.namespace,
           "COLUMNS": "200"}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "services.cli", "agency", "publish", *args,
                                                cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode, out.decode()


async def test_agency_publishes_the_example_csv_and_gets_every_receipt(settings, start, tmp_path):
    src = tmp_path / "enrolments.csv"
    shutil.copy(ROOT / "examples" / "enrolments.csv", src)
    async with start("registry", settings) as registry:
        code, out = await run_cli(settings, str(src), "--program", "pkh", "--timeout", "60")
        assert code == 1, out  # some rows were rejected
        assert "rjct.nik.invalid_birth_date" in out and "line 8" in out
        with (tmp_path / "enrolments.rejected.csv").open() as f:
            rejected = list(csv.DictReader(f))
        assert {(r["line"], r["status_reason_code"]) for r in rejected} == {
            ("8", "rjct.nik.invalid_birth_date"), ("9", "rjct.nik.sex_mismatch"), ("10", "rjct.village_code.unknown")}
        assert all(r["status_reason_message"] and r["reference_id"] for r in rejected)
        assert await count(registry, store.people) == 6
        household = (await registry.http.get("/people/3317011204510200", headers=auth(settings))).json()
        assert household["no_kk"] == "3317010103100099" and household["enrolments"][0]["programme_identifier"] == "pkh"

        # the same file again: every row gets its original receipt again, nothing changes, nothing
        # waits forever (the agencies' stream keeps only 100 ms of de-duplication: the registry's own does it)
        code, out = await run_cli(settings, str(src), "--program", "pkh", "--timeout", "30",
                                  "--rejected", str(tmp_path / "again.csv"))
        assert code == 1 and "line 8" in out, out
        with (tmp_path / "again.csv").open() as f:
            assert {(r["line"], r["status_reason_code"]) for r in csv.DictReader(f)} == {
                (x["line"], x["status_reason_code"]) for x in rejected}
        assert await count(registry, store.people) == 6
        assert await count(registry, store.enrolment_history) == 6

        # a file without the needed columns is refused before anything is sent
        bad = tmp_path / "bad.csv"
        bad.write_text("foo,bar\n1,2\n")
        code, out = await run_cli(settings, str(bad), "--program", "pkh")
        assert code == 2 and "no nik, name column" in out
