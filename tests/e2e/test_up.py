"""`sinergi up` as README.md says, on the embedded default, driven from outside.

Starts the command as a subprocess (no SINERGI_NATS_URL / DATABASE_URL: the embedded
nats-server and PostgreSQL under a temporary data dir, HTTP on free ports), publishes an
agency enrolment with raw nats-py, reads the receipt, the registry's person and reporting's
count over HTTP, stops it with Ctrl-C (SIGINT) and checks nothing is left running, then starts
it again on the same data dir and finds the person still there.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import nats
import psutil
import pytest

from services.kit.auth import Principal, Role, issue_token
from services.kit.settings import SERVICES
from tests import factories

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]
ROOT = Path(__file__).resolve().parents[2]
SECRET = "e2e-test-secret-" + "x" * 32


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port_base() -> int:
    for _ in range(200):
        base = random.randrange(20000, 40000, 10)
        if all(_free(base + i) for i in range(len(SERVICES))):
            return base
    raise RuntimeError("no four consecutive free ports")


class Up:
    """One `sinergi up` process and what it reported in DATA_DIR/endpoints.json."""

    def __init__(self, data_dir: Path, log: Path) -> None:
        self.data_dir, self.log_path = data_dir, log
        env = {k: v for k, v in os.environ.items() if not k.startswith("SINERGI_")}  # the embedded default
        env.update(SINERGI_HTTP_PORT_BASE=str(free_port_base()), SINERGI_LOG_LEVEL="info",
                   SINERGI_ENV="development", SINERGI_AUTH_SECRET=SECRET)  # whatever a local .env says
        self.log = open(log, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "services.cli", "up", "--data-dir", str(data_dir)],
                                     cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.endpoints = self._wait_endpoints()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def _wait_endpoints(self, timeout: float = 240) -> dict:
        path = self.data_dir / "endpoints.json"
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"sinergi up exited with {self.proc.returncode}:\n{self.output()}")
            if path.exists():
                return json.loads(path.read_text())
            time.sleep(0.3)
        self.interrupt()
        raise AssertionError(f"sinergi up not ready in {timeout} s:\n{self.output()}")

    def url(self, service: str) -> str:
        return self.endpoints["services"][service]["url"]

    def pids(self) -> list[int]:
        return ([s["pid"] for s in self.endpoints["services"].values()]
                + [p for p in self.endpoints["embedded"].values() if p])

    def interrupt(self, timeout: float = 90) -> int:
        """Ctrl-C: SIGINT to the foreground process group, as a terminal sends it."""
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        finally:
            self.log.close()


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _headers() -> dict:
    # signed with the secret the test gave `sinergi up`; routes that need no token ignore it
    token = issue_token(Principal(user="e2e", role=Role.kabupaten, area=""), SECRET)
    return {"Authorization": f"Bearer {token}"}


async def _enrol_and_get_receipt(nats_url: str, report: dict) -> dict:
    nc = await nats.connect(nats_url)
    try:
        sub = await nc.subscribe("agency.pkh.receipts")
        ack = await nc.jetstream().publish("agency.pkh.enrolments", json.dumps(report).encode(),
                                           headers={"Nats-Msg-Id": report["message_id"]})
        assert ack.stream == "AGENCY_ENROLMENTS" and not ack.duplicate
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            msg = await sub.next_msg(timeout=max(0.1, deadline - asyncio.get_running_loop().time()))
            for receipt in factories.receipts_of(msg.data):
                if receipt["message_id"] == report["message_id"]:
                    return receipt
    finally:
        await nc.close()


def _eventually(check, timeout: float = 30):
    deadline, last = time.time() + timeout, None
    while time.time() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"not met in {timeout} s (last: {last!r})")


def test_up_runs_the_slice_stops_cleanly_and_keeps_data(tmp_path):
    data_dir = tmp_path / "data"
    up = Up(data_dir, tmp_path / "up-1.log")
    try:
        ep = up.endpoints
        assert ep["nats"].startswith("nats://127.0.0.1:") and not ep["nats"].endswith(":4222")
        assert "host=" in ep["database"]  # the embedded PostgreSQL listens on a unix socket only
        for svc in SERVICES:
            r = httpx.get(up.url(svc) + "/readyz", timeout=5)
            assert r.status_code == 200, (svc, r.text)
            assert httpx.get(up.url(svc) + "/healthz", timeout=5).json()["service"] == svc
        assert "Sinergi is up" in up.output()

        report = factories.enrolment("pkh", is_head_of_household=True)
        receipt = asyncio.run(_enrol_and_get_receipt(ep["nats"], report))
        assert receipt["status"] == "succ", receipt

        person = httpx.get(f"{up.url('registry')}/people/{report['nik']}", headers=_headers(), timeout=5)
        assert person.status_code == 200, person.text
        assert person.json()["name"] == report["name"]

        def counted():
            r = httpx.get(f"{up.url('reporting')}/reports/enrolments", params={"program": "pkh"},
                          headers=_headers(), timeout=5)
            return [i for i in r.json().get("items", []) if i["village_code"] == report["village_code"]]
        items = _eventually(counted)
        assert items[0]["people"] == 1 and items[0]["enrolment_status"] == "active"
    finally:
        code = up.interrupt()
    assert code == 0, up.output()
    for svc in SERVICES:  # each service logged to its own file under the data dir, not the terminal
        log = Path(up.endpoints["logs"][svc]).read_text()
        started = [json.loads(line) for line in log.splitlines() if '"service.started"' in line]
        assert started and started[0]["service"] == svc, (svc, log[:300])
    for pid in up.pids():
        assert _eventually(lambda: _gone(pid), timeout=10), f"process {pid} still running"
    assert not (data_dir / "pg" / "postmaster.pid").exists()  # PostgreSQL shut down, not killed
    assert not (data_dir / "endpoints.json").exists()
    assert "stopped" in up.output() and "Traceback" not in up.output()

    again = Up(data_dir, tmp_path / "up-2.log")
    try:
        person = httpx.get(f"{again.url('registry')}/people/{report['nik']}", headers=_headers(), timeout=5)
        assert person.status_code == 200, person.text
        assert person.json()["name"] == report["name"]
        # the stream kept the message too: the same enrolment again is a JetStream duplicate
        async def resend() -> bool:
            nc = await nats.connect(again.endpoints["nats"])
            try:
                ack = await nc.jetstream().publish("agency.pkh.enrolments", json.dumps(report).encode(),
                                                   headers={"Nats-Msg-Id": report["message_id"]})
                return ack.duplicate
            finally:
                await nc.close()
        assert asyncio.run(resend())
    finally:
        assert again.interrupt() == 0, again.output()
    for pid in again.pids():
        assert _eventually(lambda: _gone(pid), timeout=10), f"process {pid} still running"
