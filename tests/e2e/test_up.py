"""`sinergi up` as README.md says, on the embedded default, driven from outside.

Starts the command as a subprocess (no SINERGI_NATS_URL / DATABASE_URL: the embedded
nats-server and PostgreSQL under a temporary data dir, HTTP on free ports), publishes an
agency enrolment with raw nats-py, reads the receipt, the registry's person and reporting's
count over HTTP, stops it with Ctrl-C (SIGINT) and checks nothing is left running, then starts
it again on the same data dir and finds the person still there, and NATS on the same port.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from services.kit.settings import SERVICES
from tests import factories
from tests.e2e.support import ROOT, Up, all_gone, eventually, up_env

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]
PREFERRED_NATS_PORT = 14222  # what `sinergi up` asks for first


async def _enrol_and_get_receipt(up: Up, report: dict) -> dict:
    nc = await up.connect()
    try:
        sub = await nc.subscribe("agency.pkh.receipts")
        ack = await nc.jetstream().publish("agency.pkh.enrolments", json.dumps(report).encode(),
                                           headers={"Nats-Msg-Id": f"pkh:{report['message_id']}"})
        assert ack.stream == "AGENCY_ENROLMENTS" and not ack.duplicate
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            msg = await sub.next_msg(timeout=max(0.1, deadline - asyncio.get_running_loop().time()))
            for receipt in factories.receipts_of(msg.data):
                if receipt["message_id"] == report["message_id"]:
                    return receipt
    finally:
        await nc.close()


def _hold(port: int) -> socket.socket | None:
    """Listen on 127.0.0.1:port (None if something else already does)."""
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        s.close()
        return None
    s.listen()
    return s


def test_up_runs_the_slice_stops_cleanly_and_keeps_data(tmp_path):
    data_dir = tmp_path / "data"
    # 14222 taken at the first start (by this test, or by anything else on the machine), so the
    # embedded NATS gets some other port; the second start must come back on that one
    holder = _hold(PREFERRED_NATS_PORT)
    try:
        up = Up(data_dir, tmp_path / "up-1.log")
    finally:
        if holder:
            holder.close()
    try:
        ep = up.endpoints
        assert ep["nats"].startswith("nats://127.0.0.1:") and not ep["nats"].endswith(":4222")
        assert not ep["nats"].endswith(f":{PREFERRED_NATS_PORT}")
        assert (data_dir / "nats" / "port").read_text().strip() == ep["nats"].rsplit(":", 1)[1]
        assert "host=" in ep["database"]  # the embedded PostgreSQL listens on a unix socket only
        for svc in SERVICES:
            r = httpx.get(up.url(svc) + "/readyz", timeout=5)
            assert r.status_code == 200, (svc, r.text)
            assert httpx.get(up.url(svc) + "/healthz", timeout=5).json()["service"] == svc
        assert "Sinergi is up" in up.output()

        report = factories.enrolment("pkh", is_head_of_household=True)
        receipt = asyncio.run(_enrol_and_get_receipt(up, report))
        assert receipt["status"] == "succ", receipt

        person = httpx.get(f"{up.url('registry')}/people/{report['nik']}", headers=up.headers(), timeout=5)
        assert person.status_code == 200, person.text
        assert person.json()["name"] == report["name"]

        def counted():
            r = httpx.get(f"{up.url('reporting')}/reports/enrolments", params={"program": "pkh"},
                          headers=up.headers(), timeout=5)
            return [i for i in r.json().get("items", []) if i["village_code"] == report["village_code"]]
        items = eventually(counted)
        assert items[0]["people"] == 1 and items[0]["enrolment_status"] == "active"
    finally:
        code = up.interrupt()
    assert code == 0, up.output()
    for svc in SERVICES:  # each service logged to its own file under the data dir, not the terminal
        log = Path(up.endpoints["logs"][svc]).read_text()
        started = [json.loads(line) for line in log.splitlines() if '"service.started"' in line]
        assert started and started[0]["service"] == svc, (svc, log[:300])
    all_gone(up.pids())
    assert not (data_dir / "pg" / "postmaster.pid").exists()  # PostgreSQL shut down, not killed
    assert not (data_dir / "endpoints.json").exists()
    assert "stopped" in up.output() and "Traceback" not in up.output()

    again = Up(data_dir, tmp_path / "up-2.log")
    try:
        # the same NATS URL as before, though 14222 may be free now: clients keep working
        assert again.endpoints["nats"] == up.endpoints["nats"]
        person = httpx.get(f"{again.url('registry')}/people/{report['nik']}", headers=again.headers(), timeout=5)
        assert person.status_code == 200, person.text
        assert person.json()["name"] == report["name"]
        # the stream kept the message too (file storage in the data dir)
        async def kept() -> int:
            nc = await again.connect()
            try:
                return (await nc.jetstream().stream_info("AGENCY_ENROLMENTS")).state.messages
            finally:
                await nc.close()
        assert asyncio.run(kept()) >= 1
    finally:
        assert again.interrupt() == 0, again.output()
    all_gone(again.pids())


def test_up_says_so_when_the_kept_nats_port_is_taken(tmp_path):
    """The data dir's NATS port is held by another program: `sinergi up` does not quietly move
    to another port (clients would lose it), it says which port, why and what to do."""
    data_dir = tmp_path / "data"
    (data_dir / "nats").mkdir(parents=True)
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        (data_dir / "nats" / "port").write_text(f"{port}\n")
        proc = subprocess.Popen([sys.executable, "-m", "services.cli", "up", "--data-dir", str(data_dir)],
                                cwd=ROOT, env=up_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        try:
            said, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # it started anyway: stop it as Ctrl-C does
            os.killpg(proc.pid, signal.SIGINT)
            said, _ = proc.communicate(timeout=90)
    assert proc.returncode == 2, said
    assert f"NATS port {port} " in said and "in use" in said, said
    assert f"delete {data_dir.resolve() / 'nats' / 'port'}" in said and "Traceback" not in said, said
    # nothing was started: no PostgreSQL, no services, and the kept port is still the same
    assert not (data_dir / "endpoints.json").exists() and not (data_dir / "pg").exists()
    assert (data_dir / "nats" / "port").read_text().strip() == str(port)
